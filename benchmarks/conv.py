"""A small CNN's SGD step, ours against PyTorch CPU in one run: ``python -m benchmarks.conv
[--quick]``.

The step: conv2d(1->16, k3, padding 1), relu, conv2d(16->32, k3, padding 1), relu, flatten,
linear to 10 classes, cross-entropy, backward, SGD; batch 128 of 1x8x8 (digits) and 1x28x28
(MNIST-sized) images, float32. Both sides on one thread (torch.set_num_threads(1), our BLAS
pinned with ot.set_num_threads(1)), repeats interleaved; prints medians and the ratio."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np

import onlytorch as ot

from .__main__ import measure


def cnn_case(size: int, batch: int = 128) -> dict[str, Callable[[], object]]:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, 1, size, size)).astype(np.float32)
    Y = rng.integers(0, 10, batch)
    g = ot.Graph(seed=0)
    x = g.input("x", (None, 1, size, size))
    y = g.input("y", (None,), dtype="int64")
    # torch's conv default: U(+-1/sqrt(fan_in)), fan_in = in/groups * kh * kw
    w1 = g.parameter("w1", (16, 1, 3, 3), init="lecun_uniform", fan_in=9)
    b1 = g.parameter("b1", (16,), init="zeros")
    w2 = g.parameter("w2", (32, 16, 3, 3), init="lecun_uniform", fan_in=16 * 9)
    b2 = g.parameter("b2", (32,), init="zeros")
    w3 = g.parameter("w3", (32 * size * size, 10), init="lecun_uniform")
    b3 = g.parameter("b3", (10,), init="zeros")
    params = [w1, b1, w2, b2, w3, b3]
    h = g.relu(g.conv2d(x, w1, b1, padding=1))
    h = g.relu(g.conv2d(h, w2, b2, padding=1))
    logits = g.linear(g.reshape(h, shape=(-1, 32 * size * size)), w3, b3)
    loss = g.cross_entropy(logits, y)
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

    tw = [torch.tensor(g.get_node_value(p).copy(), requires_grad=True) for p in params]
    tX, tY = torch.tensor(X), torch.tensor(Y)
    topt = torch.optim.SGD(tw, lr=0.01)
    F = torch.nn.functional

    def tor() -> None:
        topt.zero_grad(set_to_none=True)
        th = F.relu(F.conv2d(tX, tw[0], tw[1], padding=1))
        th = F.relu(F.conv2d(th, tw[2], tw[3], padding=1))
        tl = F.cross_entropy(th.reshape(batch, -1) @ tw[4] + tw[5], tY)
        tl.backward()
        topt.step()

    return {"ours": ours, "torch": tor}


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.conv", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a rough look)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    ot.set_num_threads(1)
    reps = 3 if args.quick else 9
    print(f"onlytorch {ot.__version__}, numpy {np.__version__}, torch {torch.__version__} (1 thread each)")
    print(f"{'CNN SGD step, N=128 (median ms)':<36}{'ours':>10}{'torch':>10}{'/torch':>9}")
    for size, inner in ((8, 20), (28, 3)):
        t = measure(cnn_case(size), inner, reps)
        name = f"1x{size}x{size} -> 16 k3 -> 32 k3 -> 10"
        print(f"{name:<36}{t['ours'] * 1e3:10.2f}{t['torch'] * 1e3:10.2f}{t['ours'] / t['torch']:8.2f}x")


if __name__ == "__main__":
    main()
