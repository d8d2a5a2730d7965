"""The tiny SGD step alone (2-16-16-1, batch 32), interleaved with its numpy twin, where Python
overhead dominates: ``python -m benchmarks.tiny_step [--rounds N]``. Prints the best and the
median round of each and their ratios."""

from __future__ import annotations

import argparse
import statistics
import time

from .__main__ import mlp_case


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tiny_step", description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15, help="interleaved rounds of 2000 steps each")
    ap.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    args = ap.parse_args()
    fns = mlp_case([2, 16, 16, 1], 32, args.optimizer)
    ours, numpy_twin = fns["ours"], fns["numpy"]
    assert numpy_twin is not None
    inner = 2000
    for _ in range(inner):
        ours()
        numpy_twin()
    times: dict[str, list[float]] = {"ours": [], "numpy": []}
    for _ in range(args.rounds):
        for name, fn in (("ours", ours), ("numpy", numpy_twin)):
            t = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - t) / inner)
    best = {k: min(v) for k, v in times.items()}
    median = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"ours {best['ours'] * 1e6:.1f} us, numpy {best['numpy'] * 1e6:.1f} us (best rounds): "
        f"ratio {best['ours'] / best['numpy']:.2f}x best, {median['ours'] / median['numpy']:.2f}x median"
    )


if __name__ == "__main__":
    main()
