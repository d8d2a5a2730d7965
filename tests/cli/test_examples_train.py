"""The fast example specs, trained as written (no overrides), reach the quality they are shown
with: xor 100% test accuracy, digits >= 97%, multitask >= 95%, tbptt_sine test MSE < 0.01.
The numbers come from the run's own evaluation (run.json) and are checked again by
``onlytorch eval`` on the saved checkpoint."""

from __future__ import annotations

import json

import pytest

from . import info, ok, rows, spec

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


def test_finetune_digits_beats_its_frozen_only_variant(tmp_path, monkeypatch):
    """specs/finetune_digits.yaml at reduced length (800 iterations, the backbone frozen for the first
    300): training the backbone after the frozen stretch beats keeping it frozen throughout (the same
    spec with the fine-tuning phase moved past the run's end)."""
    pytest.importorskip("sklearn", reason="specs/finetune_digits.yaml reads scikit-learn's bundled digits")
    monkeypatch.chdir(tmp_path)
    accuracy = {}
    for variant, switch in (("finetune", 300), ("frozen", 800)):
        ok(
            "train", spec("finetune_digits"), "--out", variant, "-q", "--set", "train.steps=800",
            "--set", f"train.schedule.frozen.until={switch}", "--set", f"train.schedule.finetune.start={switch}",
        )  # fmt: skip
        summary = info(tmp_path / variant)
        assert summary["status"] == "completed"
        accuracy[variant] = summary["final"]["eval/accuracy"]
    assert accuracy["finetune"] >= 0.93, accuracy
    assert accuracy["finetune"] >= accuracy["frozen"] + 0.15, accuracy


def test_early_stop_cancer_stops_after_its_best_and_best_npz_is_that_evaluation(tmp_path, monkeypatch):
    """specs/early_stop_cancer.yaml, capped at 1000 steps (it stops long before: the run must end
    early_stopped): it stops within patience + 1 evaluations after best.npz's evaluation, and
    best.npz re-evaluated on val gives exactly the val loss logged at that step."""
    pytest.importorskip("sklearn", reason="specs/early_stop_cancer.yaml reads scikit-learn's breast_cancer")
    monkeypatch.chdir(tmp_path)
    ok("train", spec("early_stop_cancer"), "--out", "run", "-q", "--set", "train.steps=1000")
    summary = info(tmp_path / "run")
    resolved = json.loads((tmp_path / "run/spec.json").read_text(encoding="utf-8"))
    patience, every = resolved["train"]["early_stopping"]["patience"], resolved["train"]["eval_every"]
    assert summary["status"] == "early_stopped"
    stop, best = summary["steps_done"], summary["best"]
    assert (best["metric"], best["split"]) == ("loss", "val")
    assert 0 < stop - best["step"] <= (patience + 1) * every
    logged = [r for r in rows(tmp_path / "run") if r["kind"] == "eval" and r["step"] == best["step"]]
    assert best["value"] == logged[0]["val/loss"]
    evaluated = json.loads(
        ok(
            "eval", spec("early_stop_cancer"), "--checkpoint", "run/checkpoints/best.npz", "--split", "val", "--json"
        ).stdout
    )
    assert evaluated["metrics"]["loss"] == best["value"]  # exactly: best.npz holds that evaluation's parameters
    assert summary["final"]["eval/accuracy"] >= 0.95  # the header states 98.2% test accuracy (seed 0)
