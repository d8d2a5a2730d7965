"""Tests of the experiment trackers (onlytorch/tracking/) and the helpers they share."""

from __future__ import annotations

import json
import math
import pathlib
from typing import Any

from click.testing import CliRunner, Result
from onlytorch_cli.main import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
XOR = str(SPECS / "xor.yaml")


def invoke(*args: Any) -> Result:
    """The CLI in this process; the result's output holds stdout and stderr."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def exits(code: int, *args: Any) -> Result:
    result = invoke(*args)
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, result.output)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def log_rows(run_dir: pathlib.Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def log_series(run_dir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar key of metrics.jsonl: its (step, value) pairs, in the log's order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in log_rows(run_dir):
        for key, value in row.items():
            if key not in ("step", "kind") and isinstance(value, (int, float)) and not isinstance(value, bool):
                out.setdefault(key, []).append((row["step"], float(value)))
    return out


def accumulator(run_dir: pathlib.Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0, "images": 0})
    ea.Reload()
    return ea


def event_series(run_dir: pathlib.Path) -> dict[str, list[tuple[int, float]]]:
    ea = accumulator(run_dir)
    return {tag: [(e.step, e.value) for e in ea.Scalars(tag)] for tag in ea.Tags()["scalars"]}


def same_as_float32(a: float, b: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-30)


def assert_events_equal_log(run_dir: pathlib.Path) -> None:
    """The event files hold exactly the (step, value) pairs of metrics.jsonl for every scalar key
    (float32 precision), no tag more, no step twice."""
    log, events = log_series(run_dir), event_series(run_dir)
    assert sorted(events) == sorted(log)
    for key, pairs in log.items():
        got = events[key]
        assert [s for s, _ in got] == [s for s, _ in pairs], key
        assert len({s for s, _ in got}) == len(got), f"{key}: a step twice"
        bad = [(s, v, w) for (s, v), (_, w) in zip(pairs, got, strict=True) if not same_as_float32(v, w)]
        assert not bad, f"{key}: {bad[:3]}"
