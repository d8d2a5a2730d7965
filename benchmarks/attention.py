"""A transformer block's SGD step, ours against PyTorch CPU in one run: ``python -m
benchmarks.attention [--quick]``.

The block (pre-norm-free, as torch.nn.TransformerEncoderLayer with norm_first=False and no
dropout): x + MultiheadAttention(x) (4 heads, causal), layer norm, x + W2 relu(W1 x) (64 -> 256
-> 64), layer norm, MSE to a target, backward, SGD; batch 32, length 32, width 64, float32. Both
sides on one thread, repeats interleaved; prints medians and the ratio."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import onlytorch as ot
from onlytorch import nn

from .__main__ import measure


def block_case(batch: int = 32, length: int = 32, width: int = 64, heads: int = 4) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, length, width)).astype(np.float32)
    Y = rng.normal(size=(batch, length, width)).astype(np.float32)
    g = ot.Graph(seed=0)
    x = g.input("x", (None, length, width))
    y = g.input("y", (None, length, width))
    att = nn.MultiheadAttention(g, width, heads, causal=True, name="att")
    ln1, ln2 = nn.LayerNorm(g, width, name="ln1"), nn.LayerNorm(g, width, name="ln2")
    up, down = nn.Linear(g, width, 4 * width, name="up"), nn.Linear(g, 4 * width, width, name="down")
    h = ln1(x + att(x))
    h = ln2(h + down(g.relu(up(h))))
    loss = g.mse(h, y)
    params = [p for m in (att, ln1, ln2, up, down) for p in m.parameters()]
    g.set_value(x, X)
    g.set_value(y, Y)
    opt = ot.optim.SGD(g, params, lr=0.01)

    def ours() -> None:
        g.set_value(x, X)
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        opt.step()
        g.clear_jacobi()

    import torch

    layer = torch.nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, batch_first=True)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(length)
    tX, tY = torch.tensor(X), torch.tensor(Y)
    topt = torch.optim.SGD(layer.parameters(), lr=0.01)

    def tor() -> None:
        topt.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(layer(tX, src_mask=mask, is_causal=True), tY)
        loss.backward()
        topt.step()

    return {"ours": ours, "torch": tor}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.attention", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a rough look)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    ot.set_num_threads(1)
    reps = 3 if args.quick else 9
    print(f"onlytorch {ot.__version__}, numpy {np.__version__}, torch {torch.__version__} (1 thread each)")
    print(f"{'transformer block SGD step (median ms)':<40}{'ours':>10}{'torch':>10}{'/torch':>9}")
    t = measure(block_case(), 10, reps)
    name = "N=32 L=32 E=64, 4 heads, causal"
    print(f"{name:<40}{t['ours'] * 1e3:10.2f}{t['torch'] * 1e3:10.2f}{t['ours'] / t['torch']:8.2f}x")


if __name__ == "__main__":
    main()
