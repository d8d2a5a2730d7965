"""The Python-API examples in ``examples/`` run as a user runs them (a fresh interpreter, the
working directory elsewhere) and reach what their docstrings say."""

from __future__ import annotations

import ast
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
    doc = ast.get_docstring(ast.parse((EXAMPLES / "actor_critic.py").read_text()))
    stated = re.search(
        r"defaults (\d+) and 0;.*?With the defaults the last 20 training\s+episodes average (\d+)", doc, re.S
    )
    assert stated, doc
    iterations, target = int(stated[1]), float(stated[2])
    assert target == 500.0, doc  # the maximum CartPole-v1 return
    out = run("actor_critic.py")  # seed 0
    lines = [line for line in out.splitlines() if line.startswith("iteration")]
    assert len(lines) == -(-iterations // 100), out
    assert lines[-1].split()[1] == str(iterations), out
    final = float(lines[-1].rsplit(maxsplit=1)[1])
    assert final == target, f"the last 20 training episodes average {final}, the docstring says {target:g}\n{out}"
