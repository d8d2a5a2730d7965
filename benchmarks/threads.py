"""The default environment: what a user who sets no thread variable gets, idle and under load.
``python -m benchmarks.threads [--quick] [--products]`` (``python -m benchmarks`` runs it too).

Each row is measured in this one process, interleaved: our engine with its own thread policy
(onlytorch/threads.py, "default"), forced to one and to two BLAS threads (``ot.set_num_threads``),
and PyTorch with its own default threads; first on the machine as it is, then with one other
busy process (a busy-loop child this benchmark starts and ends itself). The process runs with
the thread variables (OPENBLAS_NUM_THREADS, OMP_NUM_THREADS, ...) removed from its environment,
as a user's would be: started with them, it starts itself again without. ``default/best`` is
the policy's time over the faster of one and two threads (the goal: at most 1.1x).

``--products`` instead times single float32 matrix products at one and two threads, idle and
busy: the measurement behind the policy's threshold (threads.BIG_FLOPS)."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np

import onlytorch as ot
from onlytorch import codegen, threads

from .__main__ import _torch, gan_torch_twin, mlp_case, spec_case, wgan_torch_twin

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS: dict[str, int | None] = {"default": None, "1 thr": 1, "2 thr": 2}


def user_env() -> dict[str, str]:
    """This process's environment without the thread variables."""
    return {k: v for k, v in os.environ.items() if k not in threads.ENV_VARS}


@contextlib.contextmanager
def busy_process(on: bool) -> Iterator[None]:
    """One other process spinning on a core while the block runs (started and ended here)."""
    if not on:
        yield
        return
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)  # let it start spinning
        yield
    finally:
        proc.kill()
        proc.wait()


def warm(fn: Callable[[], object], seconds: float) -> None:
    """Run fn to its steady state: our plans become straight-line code after codegen.HOT_RUNS
    runs (slow cases stop after ``seconds``, where that code changes nothing measurable)."""
    start = time.perf_counter()
    for i in range(codegen.HOT_RUNS + 2):
        fn()
        if i >= 3 and time.perf_counter() - start > seconds:
            break


def block(fn: Callable[[], object], seconds: float) -> float:
    """Seconds per call of fn, over calls until ``seconds`` have passed (at least one)."""
    calls = 0
    t = time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t
        if elapsed >= seconds:
            return elapsed / calls


def measure(ours: Callable[[], object], torch_fn: Callable[[], object] | None, quick: bool):
    """Median seconds per call of ours under each setting and of the torch twin, in interleaved
    blocks of a fixed duration (a slow setting costs no more time than a fast one); and the BLAS
    thread count the policy left after its runs.

    After a block that ran on two threads, the idle thread of OpenBLAS (and torch's OpenMP
    threads) keeps spinning on a core for about 0.1 s before it sleeps, slowing whatever runs
    next: each block is followed by a pause, and the order of the blocks turns every repeat."""
    seconds, repeats = (0.03, 3) if quick else (0.05, 7)
    blocks: list[tuple[str, int | None]] = [*SETTINGS.items()]
    if torch_fn is not None:
        blocks.append(("torch", None))
    times: dict[str, list[float]] = {k: [] for k, _ in blocks}
    policy_threads = 0
    try:
        for r in range(repeats):
            for name, setting in blocks[r % len(blocks) :] + blocks[: r % len(blocks)]:
                if name == "torch":
                    assert torch_fn is not None
                    times[name].append(block(torch_fn, seconds))
                else:
                    ot.set_num_threads(setting)
                    ours()  # the setting takes effect (and any switch is paid) outside the timing
                    times[name].append(block(ours, seconds))
                    if setting is None:
                        policy_threads = ot.get_num_threads() or 0
                time.sleep(0.15)
    finally:
        ot.set_num_threads(None)
    return {k: statistics.median(v) for k, v in times.items() if v}, policy_threads


def cases(quick: bool) -> Iterator[tuple[str, Callable[[], dict[str, Callable[[], object] | None]]]]:
    mlps = [([2, 16, 16, 1], 32), ([64, 128, 128, 10], 64), ([784, 256, 128, 10], 128), ([1024, 1024, 1024, 10], 512)]
    for sizes, batch in mlps:
        yield f"SGD step {'-'.join(map(str, sizes))} b{batch}", functools.partial(mlp_case, sizes, batch)
    yield "Adam step 64-128-128-10 b64", functools.partial(mlp_case, [64, 128, 128, 10], 64, "adam")

    def spec(name: str, twin: Callable[[], Callable[[], None] | None] | None = None):
        def make() -> dict[str, Callable[[], object] | None]:
            return {"ours": spec_case(os.path.join(HERE, "specs", f"{name}.yaml")), "torch": twin() if twin else None}

        return make

    yield "GAN iteration (gan_ring)", spec("gan_ring", gan_torch_twin)
    yield "WGAN-GP iteration (wgan_gp)", spec("wgan_gp", wgan_torch_twin)
    for name in ("digits", "multitask", "tbptt_sine", "ppo_cartpole"):
        yield f"{name} iteration", spec(name)


def cell(t: dict[str, float], k: str) -> str:
    return f"{t[k] * 1e3:9.3f}" if k in t else f"{'-':>9}"


def report(quick: bool) -> None:
    torch = _torch()
    print(
        f"default environment (no thread variables; {os.cpu_count()} cores; BLAS threads at start: "
        f"{ot.get_num_threads()}; torch {'threads ' + str(torch.get_num_threads()) if torch else 'not installed'})"
    )
    print("per condition: ms per call of ours with the policy (default), forced to 1 and 2 BLAS threads, and torch")
    head = f"{'default':>9}{'1 thr':>9}{'2 thr':>9}{'dflt/best':>10}{'torch':>9}{'/torch':>8}"
    print(f"{'':<30}{'idle':^54}{'one busy process':^54}{'policy':>7}")
    print(f"{'case':<30}{head}{head}{'thr':>7}")
    worst = 0.0
    for name, make in cases(quick):
        fns = make()
        ours, tor = fns["ours"], fns.get("torch")
        assert ours is not None
        warm(ours, 3.0)
        if tor is not None:
            warm(tor, 1.0)
        line = f"{name:<30}"
        used = 0
        for busy in (False, True):
            with busy_process(busy):
                t, used = measure(ours, tor, quick)
            best = min(t["1 thr"], t["2 thr"])
            worst = max(worst, t["default"] / best)
            ratio = f"{t['default'] / t['torch']:7.2f}x" if "torch" in t else f"{'-':>8}"
            line += f"{cell(t, 'default')}{cell(t, '1 thr')}{cell(t, '2 thr')}{t['default'] / best:9.2f}x"
            line += f"{cell(t, 'torch')}{ratio}"
        print(f"{line}{used:>7}", flush=True)
    print(f"worst default/best: {worst:.2f}x (goal <= 1.10x)")


def products(quick: bool) -> None:
    """Single matrix products (m x k times k x n, float32), two BLAS threads against one."""
    from threadpoolctl import ThreadpoolController

    libs = ThreadpoolController().select(user_api="blas").lib_controllers
    rng = np.random.default_rng(0)
    shapes = [(256, 128, 128), (256, 256, 256), (128, 784, 256), (512, 256, 256), (512, 512, 512)]
    shapes += [(256, 1024, 1024), (512, 1024, 1024), (1024, 1024, 1024)]
    print(f"{'m x k x n':<20}{'MFLOP':>9}{'idle 2/1':>10}{'busy 2/1':>10}")
    for m, k, n in shapes:
        a = rng.normal(size=(m, k)).astype(np.float32)
        b = rng.normal(size=(k, n)).astype(np.float32)
        inner = max(2, int((5e7 if quick else 2e8) / (2 * m * k * n)))
        ratios = []
        for busy in (False, True):
            with busy_process(busy):
                best: dict[int, list[float]] = {1: [], 2: []}
                for _ in range(3 if quick else 5):
                    for count in (1, 2):
                        for lib in libs:
                            lib.set_num_threads(count)
                        t = time.perf_counter()
                        for _ in range(inner):
                            a @ b
                        best[count].append((time.perf_counter() - t) / inner)
                        time.sleep(0.15)  # OpenBLAS's idle thread spins for about 0.1 s after a product
            ratios.append(statistics.median(best[2]) / statistics.median(best[1]))
        print(f"{f'{m}x{k}x{n}':<20}{2 * m * k * n / 1e6:9.1f}{ratios[0]:9.2f}x{ratios[1]:9.2f}x", flush=True)
    print(f"the policy's threshold (threads.BIG_FLOPS): {threads.BIG_FLOPS / 1e6:.0f} MFLOP")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.threads", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer and shorter repeats (a rough look)")
    ap.add_argument("--products", action="store_true", help="time single matrix products at 1 and 2 threads instead")
    args = ap.parse_args()
    if threads.user_set_env() is not None:
        # A user who sets nothing: the BLAS must start without the variables, so start again.
        argv = [sys.executable, "-m", "benchmarks.threads", *sys.argv[1:]]
        sys.exit(subprocess.run(argv, env=user_env(), cwd=HERE, check=False).returncode)
    if args.products:
        products(args.quick)
    else:
        report(args.quick)


if __name__ == "__main__":
    main()
