"""Benchmarks (not tests): ``python -m benchmarks [--quick]``.

Each case is measured side by side in one run — our engine, a hand-written numpy twin of the same
computation, and PyTorch CPU eager with the same number of threads — with interleaved repeats,
and reports medians and the ratios ours/numpy and ours/torch. PyTorch is optional (the dev
extra); without it those columns are left empty. Then the "default environment" section
(benchmarks/threads.py): every case again as a user who sets no thread variable runs it, with
onlytorch's thread policy against one and two BLAS threads and torch's own defaults, idle and
beside one busy process."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import numpy as np

import onlytorch as ot
from onlytorch import codegen


def _torch():
    try:
        import torch
    except ImportError:
        return None
    return torch


def measure(fns: dict[str, Callable[[], object] | None], inner: int, repeats: int) -> dict[str, float]:
    """Median seconds per call of each function, repeats interleaved so that load hits all alike.

    Each is first warmed up to its steady state: ours builds straight-line code for a plan once
    it has run codegen.HOT_RUNS times, as it does in any run of more steps than that (warm-up
    stops after 3 s for the slow cases, where the code changes nothing measurable)."""
    live = {k: f for k, f in fns.items() if f is not None}
    for f in live.values():
        start = time.perf_counter()
        for i in range(codegen.HOT_RUNS + 2):
            f()
            if i >= max(3, inner // 5) and time.perf_counter() - start > 3.0:
                break
    times: dict[str, list[float]] = {k: [] for k in live}
    for _ in range(repeats):
        for k, f in live.items():
            t = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


# ------------------------------------------------------------------ an MLP step, three ways


def mlp_case(sizes: list[int], batch: int, optimizer: str = "sgd"):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    Y = rng.normal(size=(batch, sizes[-1])).astype(np.float32)
    g = ot.Graph(seed=0)
    x, y = g.input("x", (None, sizes[0])), g.input("y", (None, sizes[-1]))
    params, h = [], x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        w = g.parameter(f"w{i}", (a, b), init="lecun_uniform")
        bias = g.parameter(f"b{i}", (b,), init="zeros")
        params += [w, bias]
        h = g.linear(h, w, bias)
        if i < len(sizes) - 2:
            h = g.tanh(h)
    loss = g.mse(h, y)
    g.set_value(x, X)
    g.set_value(y, Y)
    opt = ot.optim.SGD(g, params, lr=0.01) if optimizer == "sgd" else ot.optim.Adam(g, params, lr=1e-3)

    def ours() -> None:
        g.set_value(x, X)
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        opt.step()
        g.clear_jacobi()

    W = [g.get_node_value(p).copy() for p in params]
    m = [np.zeros_like(w) for w in W]
    v = [np.zeros_like(w) for w in W]
    t_adam = [0]
    last_loss = [0.0]

    def by_hand() -> None:
        acts = [X]
        hh = X
        for i in range(0, len(W), 2):
            hh = hh @ W[i] + W[i + 1]
            if i < len(W) - 2:
                hh = np.tanh(hh)
            acts.append(hh)
        # the loss value too, as ours and torch's step compute it (a training loop reports it):
        # np.mean's own reduction, to the same bits, without its Python wrapper (which alone
        # costs 4 us here); a BLAS dot would be 0.8 us faster but sums in another order
        diff = hh - Y
        last_loss[0] = float(np.add.reduce(diff * diff, axis=None)) / diff.size
        d = (2.0 / hh.size) * diff
        grads = [None] * len(W)
        for i in range(len(W) - 2, -1, -2):
            grads[i] = acts[i // 2].T @ d
            grads[i + 1] = d.sum(0)
            if i > 0:
                d = (d @ W[i].T) * (1 - acts[i // 2] ** 2)
        if optimizer == "sgd":
            for w, gr in zip(W, grads):
                w -= 0.01 * gr
        else:
            t_adam[0] += 1
            t = t_adam[0]
            for w, gr, mm, vv in zip(W, grads, m, v):
                mm *= 0.9
                mm += 0.1 * gr
                vv *= 0.999
                vv += 0.001 * gr * gr
                w -= (1e-3 / (1 - 0.9**t)) * mm / (np.sqrt(vv / (1 - 0.999**t)) + 1e-8)

    torch = _torch()
    tor = None
    if torch is not None:
        tW = [torch.tensor(w, requires_grad=True) for w in W]
        tX, tY = torch.tensor(X), torch.tensor(Y)
        topt = torch.optim.SGD(tW, lr=0.01) if optimizer == "sgd" else torch.optim.Adam(tW, lr=1e-3)

        def tor() -> None:
            hh = tX
            for i in range(0, len(tW), 2):
                hh = hh @ tW[i] + tW[i + 1]
                if i < len(tW) - 2:
                    hh = torch.tanh(hh)
            lo = ((hh - tY) ** 2).mean()
            topt.zero_grad()
            lo.backward()
            topt.step()

    return {"ours": ours, "numpy": by_hand, "torch": tor}


def inference_case(sizes: list[int], batch: int):
    """A forward with and without gradient tracking; also the peak memory of each."""
    rng = np.random.default_rng(0)
    g = ot.Graph(seed=0)
    x = g.input("x", (None, sizes[0]))
    h = x
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        h = g.tanh(g.linear(h, g.parameter(f"w{i}", (a, b)), g.parameter(f"b{i}", (b,), init="zeros")))
    X = rng.normal(size=(batch, sizes[0])).astype(np.float32)

    def train_forward() -> None:
        g.set_value(x, X)
        g.forward_node(h)

    def no_grad_forward() -> None:
        with g.no_grad():
            g.set_value(x, X)
            g.forward_node(h)

    def peak(fn: Callable[[], None]) -> int:
        g.release_values()
        g.reset_peak_memory()
        base = g.memory_stats()["current_bytes"]
        fn()
        return g.memory_stats()["peak_bytes"] - base

    return {"train forward": train_forward, "no_grad forward": no_grad_forward}, (
        peak(train_forward),
        peak(no_grad_forward),
    )


def spec_case(path: str, phases_only: str | None = None):
    from onlytorch.compile import compile_file
    from onlytorch.train import Trainer

    compiled, report = compile_file(path)
    assert compiled is not None, report.render()
    trainer = Trainer(compiled)
    return trainer.run_iteration


def gan_torch_twin():
    """One iteration of specs/gan_ring.yaml (the seed's GAN loop) in torch: G 16-128-128-2 (relu),
    D 2-128-128-1 (leaky relu 0.2), batch 256, Adam with a cosine schedule; the discriminator phase
    on the detached fake, then the generator phase through the updated discriminator."""
    torch = _torch()
    if torch is None:
        return None
    nn, F = torch.nn, torch.nn.functional
    G = nn.Sequential(nn.Linear(16, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    D = nn.Sequential(nn.Linear(2, 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2), nn.Linear(128, 1))
    od = torch.optim.Adam(D.parameters(), lr=1e-3, betas=(0.5, 0.999))
    og = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.999))
    sd = torch.optim.lr_scheduler.CosineAnnealingLR(od, T_max=10**9)
    sg = torch.optim.lr_scheduler.CosineAnnealingLR(og, T_max=10**9)
    real = torch.randn(256, 2)
    ones, zeros = torch.ones(256, 1), torch.zeros(256, 1)

    def step() -> None:
        fake = G(torch.randn(256, 16))
        d_loss = F.binary_cross_entropy_with_logits(D(real), ones) + F.binary_cross_entropy_with_logits(
            D(fake.detach()), zeros
        )
        od.zero_grad()
        d_loss.backward()
        od.step()
        sd.step()
        g_loss = F.binary_cross_entropy_with_logits(D(fake), ones)
        og.zero_grad()
        g_loss.backward()
        og.step()
        sg.step()

    return step


def wgan_torch_twin():
    """One WGAN-GP iteration of specs/wgan_gp.yaml (5 critic steps with the gradient penalty, 1
    generator step) in torch: the same sizes (G 4-128-128-2, C 2-64-64-1) and batch (256)."""
    torch = _torch()
    if torch is None:
        return None
    nn = torch.nn
    G = nn.Sequential(nn.Linear(4, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 2))
    C = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    oc = torch.optim.Adam(C.parameters(), lr=4e-3, betas=(0.5, 0.9))
    og = torch.optim.Adam(G.parameters(), lr=1e-3, betas=(0.5, 0.9))
    real = torch.randn(256, 2)

    def step() -> None:
        for _ in range(5):
            fake = G(torch.randn(256, 4)).detach()
            eps = torch.rand(256, 1)
            xh = (eps * real + (1 - eps) * fake).requires_grad_(True)
            (gr,) = torch.autograd.grad(C(xh).sum(), xh, create_graph=True)
            gp = ((gr.norm(dim=1) - 1) ** 2).mean()
            loss = C(fake).mean() - C(real).mean() + 10 * gp
            oc.zero_grad()
            loss.backward()
            oc.step()
        gl = -C(G(torch.randn(256, 4))).mean()
        og.zero_grad()
        gl.backward()
        og.step()

    return step


def cli_time(args: list[str], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()", *args], capture_output=True, check=False
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def row(name: str, t: dict[str, float]) -> str:
    def ms(k: str) -> str:
        return f"{t[k] * 1e3:10.3f}" if k in t else f"{'-':>10}"

    def ratio(k: str) -> str:
        return f"{t['ours'] / t[k]:8.2f}x" if k in t and "ours" in t else f"{'-':>9}"

    return f"{name:<34}{ms('ours')}{ms('numpy')}{ms('torch')}{ratio('numpy')}{ratio('torch')}"


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats (a rough look)")
    args = ap.parse_args()
    torch = _torch()
    # torch gets the threads numpy's BLAS gets (OPENBLAS_NUM_THREADS=1 alone must not leave torch at 2)
    threads = int(os.environ.get("OMP_NUM_THREADS") or os.environ.get("OPENBLAS_NUM_THREADS") or os.cpu_count() or 1)
    if torch is not None:
        torch.set_num_threads(threads)
    reps = 3 if args.quick else 7
    print(
        f"onlytorch {ot.__version__}, numpy {np.__version__}"
        + (f", torch {torch.__version__} ({torch.get_num_threads()} threads)" if torch else ", no torch")
    )
    print(f"{'case (median ms per call)':<34}{'ours':>10}{'numpy':>10}{'torch':>10}{'/numpy':>9}{'/torch':>9}")
    mlps = [
        ([2, 16, 16, 1], 32, 300),
        ([64, 128, 128, 10], 64, 200),
        ([784, 256, 128, 10], 128, 50),
        ([1024, 1024, 1024, 10], 512, 3),
    ]
    for sizes, batch, inner in mlps:
        name = f"SGD step {'-'.join(map(str, sizes))} b{batch}"
        print(row(name, measure(mlp_case(sizes, batch), inner if not args.quick else max(1, inner // 4), reps)))
    print(row("Adam step 64-128-128-10 b64", measure(mlp_case([64, 128, 128, 10], 64, "adam"), 200, reps)))
    fns, (peak_train, peak_nograd) = inference_case([512] * 9, 1024)
    t = measure(fns, 5, reps)
    print(
        f"{'forward 8x512 tanh b1024 (train)':<34}{t['train forward'] * 1e3:10.3f}   peak {peak_train / 2**20:7.1f} MiB"
    )
    print(
        f"{'forward 8x512 tanh b1024 (no_grad)':<34}{t['no_grad forward'] * 1e3:10.3f}   peak {peak_nograd / 2**20:7.1f} MiB"
    )
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    gan = spec_case(os.path.join(here, "specs", "gan_ring.yaml"))
    print(row("GAN iteration (gan_ring, 2 phases)", measure({"ours": gan, "torch": gan_torch_twin()}, 50, reps)))
    wgan = spec_case(os.path.join(here, "specs", "wgan_gp.yaml"))
    print(row("WGAN-GP iteration (5 critic + 1 G)", measure({"ours": wgan, "torch": wgan_torch_twin()}, 5, reps)))
    from onlytorch.compile import compile_file

    print(
        row(
            "compile specs/gan_ring.yaml",
            measure({"ours": lambda: compile_file(os.path.join(here, "specs", "gan_ring.yaml"))}, 5, reps),
        )
    )
    print(f"{'onlytorch --help (process)':<34}{cli_time(['--help'], reps) * 1e3:10.1f}")
    print(
        f"{'onlytorch validate gan_ring (proc)':<34}{cli_time(['validate', '-q', os.path.join(here, 'specs', 'gan_ring.yaml')], reps) * 1e3:10.1f}"
    )
    # What a user who sets no thread variable gets (benchmarks/threads.py): its own process,
    # started without OPENBLAS_NUM_THREADS and the like, so that the BLAS starts as theirs does.
    from benchmarks.threads import user_env

    print()
    subprocess.run(
        [sys.executable, "-m", "benchmarks.threads", *(["--quick"] if args.quick else [])],
        env=user_env(),
        cwd=here,
        check=False,
    )
    try:
        import gymnasium  # noqa: F401
    except ImportError:
        print("rollout throughput: skipped (gymnasium, the gym extra, is not installed)")
        return
    from benchmarks.rollout import report

    print()
    report(args.quick)


if __name__ == "__main__":
    main()
