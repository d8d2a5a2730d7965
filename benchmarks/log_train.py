"""What ``train.log_train: mean`` (each train metric computed on every iteration's batch, in the
training forward of a phase where it costs only the metric's own nodes (onlytorch/train_metrics.py),
and every value folded into the window) costs against ``last`` (the metrics computed at a train row
only, by an extra forward): ``python -m benchmarks.log_train [--rounds N] [--steps N]``.

For each spec, the two trainers run interleaved rounds of the same training loop in one process
(train_loop with the spec's log_every, nothing written), so that load on the machine hits both
alike; prints the median seconds per step of each and their ratio mean/last."""

from __future__ import annotations

import argparse
import pathlib
import statistics
import time

from onlytorch.app import load_spec
from onlytorch.train import Trainer, train_loop

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"


def _trainer(name: str, mode: str) -> Trainer:
    loaded = load_spec(SPECS / f"{name}.yaml", overrides=[f"train.log_train={mode}"])
    return Trainer(loaded.compiled)


def _round(trainer: Trainer, steps: int) -> float:
    """Seconds per step of ``steps`` more steps."""
    t = time.perf_counter()
    train_loop(trainer, trainer.step + steps, on_log=lambda record: None)
    return (time.perf_counter() - t) / steps


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.log_train", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=9, help="interleaved rounds per mode")
    ap.add_argument("--steps", type=int, default=200, help="steps per round (a multiple of log_every is fairest)")
    ap.add_argument("specs", nargs="*", default=["xor", "digits"])
    args = ap.parse_args()
    for name in args.specs:
        trainers = {mode: _trainer(name, mode) for mode in ("mean", "last")}
        for trainer in trainers.values():  # warm-up: the straight-line code is built after a few runs
            _round(trainer, args.steps)
        times: dict[str, list[float]] = {mode: [] for mode in trainers}
        for _ in range(args.rounds):
            for mode, trainer in trainers.items():
                times[mode].append(_round(trainer, args.steps))
        med = {mode: statistics.median(v) for mode, v in times.items()}
        best = {mode: min(v) for mode, v in times.items()}
        log_every = trainers["mean"].spec.train.log_every  # type: ignore[union-attr]
        print(
            f"{name} (log_every {log_every}): mean {med['mean'] * 1e6:.1f} us/step, last {med['last'] * 1e6:.1f} "
            f"us/step (medians of {args.rounds} rounds of {args.steps} steps): mean/last "
            f"{med['mean'] / med['last']:.3f} median, {best['mean'] / best['last']:.3f} best"
        )


if __name__ == "__main__":
    main()
