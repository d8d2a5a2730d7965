"""``onlytorch eval``: a checkpoint's metrics under no_grad (eval mode), as a table or JSON, on
the spec's eval split or another; the same numbers as Trainer.evaluate; deterministic with dropout
and batch norm (running statistics); checkpoints of another spec refused."""

from __future__ import annotations

import json
import pathlib
import re

import numpy as np
import pytest

from onlytorch import checkpoint as ckpt
from onlytorch.compile import compile_file
from onlytorch.train import Trainer

from . import fails, ok, rows, spec


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> pathlib.Path:  # type: ignore[no-untyped-def]
    """Short trained runs of xor, digits and multitask (the same folder for the whole module)."""
    folder = tmp_path_factory.mktemp("eval-runs")
    ok("train", spec("xor"), "--out", folder / "xor", "--set", "train.steps=60", "-q")
    ok("train", spec("digits"), "--out", folder / "digits", "--set", "train.steps=20", "-q")
    ok("train", spec("multitask"), "--out", folder / "multitask", "--set", "train.steps=5", "-q")
    return folder


def direct(
    spec_path: str | pathlib.Path, checkpoint: pathlib.Path, split: str, names: list[str] | None
) -> dict[str, float]:
    compiled, _ = compile_file(spec_path)
    trainer = Trainer(compiled)
    trainer.restore_weights(ckpt.load(checkpoint))
    return trainer.evaluate(split, names)


def as_json(*args: object) -> dict:
    return json.loads(ok("eval", *args, "--json").stdout)


def test_eval_prints_a_table(runs):
    last = runs / "xor/checkpoints/last.npz"
    out = ok("eval", spec("xor"), "--checkpoint", last).output
    assert f"evaluation of {last} on test (no_grad)" in out
    table = dict(re.findall(r"^(accuracy|loss)\s+(\S+)$", out, re.M))
    assert set(table) == {"accuracy", "loss"}
    expected = direct(spec("xor"), last, "test", ["accuracy", "loss"])
    assert float(table["accuracy"]) == expected["accuracy"] == 1.0
    assert float(table["loss"]) == pytest.approx(expected["loss"], rel=1e-5)


@pytest.mark.parametrize(
    "name, names",
    [
        ("xor", ["accuracy", "loss"]),
        ("digits", ["accuracy", "loss"]),
        ("multitask", ["accuracy", "cls_loss", "reg_loss"]),
    ],
)
def test_eval_json_equals_trainer_evaluate(name, names, runs):
    last = runs / name / "checkpoints/last.npz"
    data = as_json(spec(name), "--checkpoint", last)
    assert set(data) == {"split", "checkpoint", "metrics"}
    assert data["split"] == "test" and data["checkpoint"] == str(last)
    assert list(data["metrics"]) == names
    assert data["metrics"] == direct(spec(name), last, "test", names)
    # the same numbers the run logged when it evaluated these weights at its last step
    logged = [r for r in rows(runs / name) if r["kind"] == "eval"][-1]
    assert {f"eval/{k}": v for k, v in data["metrics"].items()} == {
        k: v for k, v in logged.items() if k.startswith("eval/")
    }


def test_eval_split_selects_another_split(runs):
    last = runs / "xor/checkpoints/last.npz"
    test = as_json(spec("xor"), "--checkpoint", last)
    train = as_json(spec("xor"), "--checkpoint", last, "--split", "train")
    assert train["split"] == "train"
    assert train["metrics"] == direct(spec("xor"), last, "train", ["accuracy", "loss"])
    assert train["metrics"]["loss"] != test["metrics"]["loss"]


def test_eval_of_a_split_the_spec_lacks_is_a_usage_error(runs):
    # Caught a bug: --split val on a spec without a val split escaped as a GraphError traceback.
    result = fails(2, "eval", spec("xor"), "--checkpoint", runs / "xor/checkpoints/last.npz", "--split", "val")
    assert "no 'val' split" in result.output and "test, train" in result.output


def test_eval_is_deterministic_with_dropout(runs):
    last = runs / "digits/checkpoints/last.npz"
    first = as_json(spec("digits"), "--checkpoint", last)
    assert as_json(spec("digits"), "--checkpoint", last) == first
    assert first["metrics"] == direct(spec("digits"), last, "test", ["accuracy", "loss"])


def test_a_checkpoint_of_another_spec_is_refused(runs):
    result = fails(2, "eval", spec("xor"), "--checkpoint", runs / "multitask/checkpoints/last.npz")
    assert "no parameter 'net.0.weight'" in result.output and "another spec" in result.output
    # same names, other shapes
    result = fails(
        2, "eval", spec("xor"), "--checkpoint", runs / "xor/checkpoints/last.npz", "--set", "modules.net.0.linear=16"
    )
    assert "parameter 'net.0.weight' has shape (2, 16) in the spec but (2, 8) in the checkpoint" in result.output


def test_missing_or_unreadable_checkpoints(runs, tmp_path):
    result = fails(2, "eval", spec("xor"), "--checkpoint", tmp_path / "nope.npz")
    assert "does not exist" in result.output
    result = fails(2, "eval", spec("xor"))
    assert "Missing option '--checkpoint'" in result.output
    # Caught a bug: a truncated checkpoint escaped as a zipfile.BadZipFile traceback, and a file
    # that is not an archive gave numpy's advice to load it with allow_pickle.
    cut = tmp_path / "cut.npz"
    cut.write_bytes((runs / "xor/checkpoints/last.npz").read_bytes()[:2000])
    result = fails(2, "eval", spec("xor"), "--checkpoint", cut)
    assert "cannot read checkpoint" in result.output and "not an .npz archive" in result.output
    result = fails(2, "eval", spec("xor"), "--checkpoint", spec("xor"))
    assert "not an .npz archive" in result.output and "pickle" not in result.output


# ------------------------------------------------------------------ eval mode: dropout and batch norm

BN_DROPOUT = """\
version: 1
name: bn
seed: 0
data:
  train: {source: synthetic.moons, n: 256, noise: 0.1}
  test: {source: synthetic.moons, n: 128, noise: 0.1}
  batch_size: 32
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [], dtype: int64, from: train.y}
modules:
  net: [{linear: 32}, batch_norm, relu, {dropout: 0.5}, {linear: 2}]
nodes:
  logits: net(x)
losses:
  loss: cross_entropy(logits, y)
metrics:
  accuracy: mean(argmax(logits, axis=1) == y)
optimizers:
  opt: {type: adam, lr: 0.01, params: [net]}
train:
  steps: 30
  schedule:
    - {name: fit, backward: [{loss: loss}], step: [opt]}
eval:
  split: test
  metrics: [loss, accuracy]
"""


def test_eval_uses_eval_mode_with_batch_norm_and_dropout(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bn.yaml").write_text(BN_DROPOUT)
    ok("train", "bn.yaml", "--out", "run", "-q")
    last = tmp_path / "run/checkpoints/last.npz"
    state = ckpt.load(last)
    stats = {k: v for k, v in state.items() if k.startswith("state/")}
    assert stats, "batch norm's running statistics are saved"
    assert not all(np.array_equal(v, np.zeros_like(v)) or np.array_equal(v, np.ones_like(v)) for v in stats.values())

    first = as_json("bn.yaml", "--checkpoint", last)
    assert as_json("bn.yaml", "--checkpoint", last) == first
    compiled, _ = compile_file(tmp_path / "bn.yaml")
    trainer = Trainer(compiled)
    trainer.restore_weights(state)
    assert trainer.evaluate("test", ["loss", "accuracy"]) == first["metrics"]
    assert trainer.evaluate("test", ["loss", "accuracy"]) == first["metrics"]
    g = compiled.graph
    for s in g.states():  # evaluation does not touch the running statistics
        assert np.array_equal(g.get_node_value(s), state[f"state/{s.name}"])

    # train mode on the same weights and data: dropout on, batch statistics: other numbers,
    # and different from one forward to the next
    test = trainer.data["test"]
    g.set_train_mode()
    g.set_value("x", test["x"])
    g.set_value("y", test["y"])
    once = float(g.forward_node(compiled.losses["loss"]))
    g.set_value("x", test["x"].copy())  # a new value: forward again, with new dropout masks
    again = float(g.forward_node(compiled.losses["loss"]))
    assert once != pytest.approx(first["metrics"]["loss"], rel=1e-6)
    assert once != again


def test_eval_without_an_eval_section_needs_split(tmp_path, monkeypatch, runs):
    monkeypatch.chdir(tmp_path)
    text = pathlib.Path(spec("xor")).read_text()
    (tmp_path / "noeval.yaml").write_text(text[: text.index("eval:")])
    last = runs / "xor/checkpoints/last.npz"
    result = fails(2, "eval", "noeval.yaml", "--checkpoint", last)
    assert "no eval section" in result.output and "--split" in result.output
    data = as_json("noeval.yaml", "--checkpoint", last, "--split", "test")
    assert data["metrics"] == direct(spec("xor"), last, "test", None) == {"accuracy": 1.0}
