"""The Python-API examples in ``examples/`` run as a user runs them (a fresh interpreter, the
working directory elsewhere) and reach what their docstrings say."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}


def run(name: str, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        cwd=pathlib.Path("/"),
        env=ENV,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    return done.stdout


def test_xor_example_learns_xor():
    out = run("xor.py")
    assert re.search(r"^final loss 0\.\d+  accuracy 100%$", out, re.M), out


def test_actor_critic_example_balances_the_pole():
    pytest.importorskip("gymnasium")
    out = run("actor_critic.py")
    lines = [line for line in out.splitlines() if line.startswith("iteration")]
    assert len(lines) == 15, out
    final = float(lines[-1].rsplit(maxsplit=1)[1])
    assert final == 500.0, f"the last 20 training episodes average {final}, the docstring says 500\n{out}"
