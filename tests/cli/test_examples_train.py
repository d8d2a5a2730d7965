"""The fast example specs, trained as written (no overrides), reach the quality they are shown
with: xor 100% test accuracy, digits >= 97%, multitask >= 95%, tbptt_sine test MSE < 0.01.
The numbers come from the run's own evaluation (run.json) and are checked again by
``onlytorch eval`` on the saved checkpoint."""

from __future__ import annotations

import json

import pytest

from . import info, ok, spec

# name -> (metric, predicate, what the spec claims)
CLAIMS = {
    "xor": ("accuracy", lambda v: v == 1.0, "100% test accuracy"),
    "digits": ("accuracy", lambda v: v >= 0.97, ">= 97% test accuracy"),
    "multitask": ("accuracy", lambda v: v >= 0.95, ">= 95% test accuracy"),
    "tbptt_sine": ("loss", lambda v: v < 0.01, "test MSE < 0.01"),
}


@pytest.mark.parametrize("name", list(CLAIMS))
def test_example_reaches_its_stated_quality(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    metric, good, claim = CLAIMS[name]
    ok("train", spec(name), "--out", "run", "-q")
    summary = info(tmp_path / "run")
    assert summary["status"] == "completed" and summary["eval_split"] == "test"
    value = summary["final"][f"eval/{metric}"]
    assert good(value), f"{name}: test {metric} {value}, the spec claims {claim}"
    evaluated = json.loads(ok("eval", spec(name), "--checkpoint", "run/checkpoints/last.npz", "--json").stdout)
    assert evaluated["metrics"][metric] == value
