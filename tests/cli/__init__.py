"""End-to-end tests of ``onlytorch train`` and ``onlytorch eval``, and the helpers they share."""

from __future__ import annotations

import json
import os
import pathlib
import sys
from typing import Any

import numpy as np
from click.testing import CliRunner, Result
from onlytorch_cli.main import cli

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"

# A subprocess that runs the console script exactly as installed (true exit codes, real signals).
CLI_CMD = [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()"]
SUBPROCESS_ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def spec(name: str) -> str:
    return str(SPECS / f"{name}.yaml")


def invoke(*args: Any) -> Result:
    """Run the CLI in this process; the result's output holds stdout and stderr interleaved."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def clean(result: Result) -> None:
    """A user error is a short message: never a traceback, never an exception escaping click."""
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, result.output)


def ok(*args: Any) -> Result:
    result = invoke(*args)
    clean(result)
    assert result.exit_code == 0, result.output
    return result


def fails(code: int, *args: Any) -> Result:
    result = invoke(*args)
    clean(result)
    assert result.exit_code == code, (result.exit_code, result.output)
    return result


def checkpoint(path: str | pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def assert_same_state(a: str | pathlib.Path, b: str | pathlib.Path, ignore: tuple[str, ...] = ()) -> None:
    """Two checkpoints hold the same entries, bit for bit (dtype, shape and bytes: NaN == NaN)."""
    x, y = checkpoint(a), checkpoint(b)
    assert sorted(set(x) - set(ignore)) == sorted(set(y) - set(ignore))
    differ = [
        k
        for k in x
        if k not in ignore
        and (x[k].dtype != y[k].dtype or x[k].shape != y[k].shape or x[k].tobytes() != y[k].tobytes())
    ]
    assert not differ, f"entries that differ: {differ}"


def rows(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    return [
        json.loads(line) for line in (pathlib.Path(run_dir) / "metrics.jsonl").read_text(encoding="utf-8").splitlines()
    ]


def info(run_dir: str | pathlib.Path) -> dict[str, Any]:
    return json.loads((pathlib.Path(run_dir) / "run.json").read_text(encoding="utf-8"))


def without_time(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "time"}
