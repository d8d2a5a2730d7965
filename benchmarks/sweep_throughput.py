"""Sweep throughput (not a test): ``python -m benchmarks.sweep_throughput [--quick] [--no-ray]``.

Trials completed per second by ``onlytorch sweep`` (the library's ``onlytorch.sweep.run``) on
specs/xor.yaml lengthened to ``--steps`` steps per trial, with 1 and with 2 local worker processes,
interleaved (1, 2, 1, 2, ...: a change in the machine's load hits both alike), each run a fresh
sweep of ``--trials`` trials in a temporary directory; then the Ray executor (2 tasks of one CPU
on a local Ray instance that the run starts and stops). Issue 15's goal: 2 local workers on
2 cores complete trials at >= 1.8x the rate of 1 worker.

Two rates per run: ``steady`` = trials / (first trial's start to last trial's end, Optuna's own
timestamps), the rate at which the workers complete trials, which the goal is about; ``wall`` =
trials / the whole call (starting the worker processes, or Ray, and writing the tables included).
``s/trial`` is the mean time of one trial: on free cores it is the same with 1 and 2 workers;
``busy`` = steady x s/trial / workers, the share of each worker's time spent inside trials (the
rest is asking, telling and writing the tables): when it is the same with 1 and 2 workers, the
sweep machinery costs nothing in parallel and only free cores limit the ratio.
Medians over the repeats. The load average is printed: the goal assumes two otherwise idle cores."""

from __future__ import annotations

import argparse
import os
import pathlib
import statistics
import tempfile
import textwrap
import time
from dataclasses import dataclass

HERE = pathlib.Path(__file__).resolve().parent.parent
GOAL = 1.8


@dataclass
class Rate:
    executor: str
    workers: int
    wall: float  # trials/s over the whole call
    steady: float  # trials/s from the first trial's start to the last one's end
    trial: float  # mean seconds of one trial (its start to its end): grows when the cores are not free


def sweep_file(folder: pathlib.Path, trials: int, steps: int) -> pathlib.Path:
    path = folder / "throughput.yaml"
    path.write_text(
        textwrap.dedent(f"""\
            version: 1
            name: throughput
            spec: {HERE / "specs" / "xor.yaml"}
            set:
              train.steps: {steps}
              train.eval_every: {max(steps // 4, 1)}
              train.log_every: {max(steps // 4, 1)}
            trials: {trials}
            sampler: {{type: random, seed: 0}}
            space:
              optimizers.opt.lr: {{loguniform: [0.005, 0.1]}}
            """),
        encoding="utf-8",
    )
    return path


def one_run(file: pathlib.Path, work: pathlib.Path, executor: str, workers: int, tag: str) -> Rate:
    from onlytorch.sweep import runner as sweeping
    from onlytorch.sweep.study import open_study

    out = work / tag
    start = time.perf_counter()
    result = sweeping.run(file, out, workers=workers, executor=executor)
    wall = time.perf_counter() - start
    if result.status != "completed":
        raise SystemExit(f"{tag}: the sweep ended {result.status}: {result.message}")
    done = [t for t in open_study(out).trials if t.datetime_start and t.datetime_complete]
    first = min(t.datetime_start for t in done if t.datetime_start)
    last = max(t.datetime_complete for t in done if t.datetime_complete)
    each = statistics.fmean((t.datetime_complete - t.datetime_start).total_seconds() for t in done)  # type: ignore[operator]
    return Rate(executor, workers, len(done) / wall, len(done) / (last - first).total_seconds(), each)


def report(trials: int, steps: int, repeats: int, with_ray: bool) -> None:
    load = os.getloadavg()[0]
    print(
        f"sweep throughput: specs/xor.yaml, {trials} trials of {steps} steps per sweep; {os.cpu_count()} cores; "
        f"load average {load:.2f} at start"
    )
    print(f"{'run':<6}{'executor':<10}{'workers':>8}{'wall tr/s':>11}{'steady tr/s':>13}{'s/trial':>9}{'busy':>7}")
    rates: dict[tuple[str, int], list[Rate]] = {}
    with tempfile.TemporaryDirectory(prefix="ot-sweep-bench-") as tmp:
        work = pathlib.Path(tmp)
        file = sweep_file(work, trials, steps)
        plan = [("local", w) for _ in range(repeats) for w in (1, 2)] + ([("ray", 2)] if with_ray else [])
        for i, (executor, workers) in enumerate(plan):
            rate = one_run(file, work, executor, workers, f"run{i}")
            rates.setdefault((executor, workers), []).append(rate)
            busy = rate.steady * rate.trial / workers
            print(
                f"{i:<6}{executor:<10}{workers:>8}{rate.wall:>11.3f}{rate.steady:>13.3f}{rate.trial:>9.2f}{busy:>7.0%}",
                flush=True,
            )
    med = {k: (statistics.median(r.wall for r in v), statistics.median(r.steady for r in v)) for k, v in rates.items()}
    one, two = med[("local", 1)], med[("local", 2)]
    ratio = two[1] / one[1]
    print(
        f"median trials/s (steady; wall): 1 local worker {one[1]:.3f}; {one[0]:.3f}  "
        f"2 local workers {two[1]:.3f}; {two[0]:.3f}"
    )
    print(
        f"2 workers / 1 worker: {ratio:.2f}x steady (goal >= {GOAL}x: {'met' if ratio >= GOAL else 'NOT met'}), "
        f"{two[0] / one[0]:.2f}x wall"
    )
    if ("ray", 2) in med:
        r = med[("ray", 2)]
        print(
            f"ray executor, 2 tasks on a local Ray instance: {r[1]:.3f} trials/s steady ({r[1] / one[1]:.2f}x one local "
            f"worker, {r[1] / two[1]:.2f}x two), {r[0]:.3f} wall (Ray's start and stop included)"
        )
    end = os.getloadavg()[0]
    if max(load, end) > 0.5 + (os.cpu_count() or 1) / 4:
        print(f"note: the machine was busy (load average {load:.2f} at start, {end:.2f} at the end): the ratio is low")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.sweep_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one repeat of shorter sweeps")
    parser.add_argument("--trials", type=int, default=None, help="trials per sweep (default 8; quick 4)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per trial (default 2000; quick 800)")
    parser.add_argument("--repeats", type=int, default=None, help="runs of each worker count (default 3; quick 1)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray executor")
    args = parser.parse_args()
    trials = args.trials or (4 if args.quick else 8)
    steps = args.steps or (800 if args.quick else 2000)
    repeats = args.repeats or (1 if args.quick else 3)
    report(trials, steps, repeats, with_ray=not args.no_ray)


if __name__ == "__main__":
    main()
