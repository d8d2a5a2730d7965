"""``onlytorch eval --split X`` where X lacks a field that a data input reads: a usage error that
names the split, the input and the field, worded as the compiler's E-DATA for eval.split (one rule:
onlytorch.compiler.bind.missing_fields), not an internal error from Trainer.evaluate."""

from __future__ import annotations

import pathlib

import pytest

from onlytorch.app import Refused, evaluate_checkpoint

from . import fails, ok

SPEC = """\
version: 1
name: cgan-split
seed: 0
data:
  train: {source: synthetic.ring, n: 256, modes: 8, radius: 2.0, std: 0.02}
  test: {source: synthetic.xor, n: 64}
  batch_size: 64
inputs:
  real: {shape: [2], from: train.x}
  label: {shape: [], dtype: int64, from: train.mode}
  z: {shape: [4], from: noise.normal}
modules:
  G: [{linear: 8}, relu, {linear: 2}]
  D: [{linear: 8}, relu, {linear: 1}]
nodes:
  cond: one_hot(label, 8)
  fake: G(concat([z, cond], axis=1))
  d_real: D(concat([real, cond], axis=1))
  d_fake: D(concat([fake, cond], axis=1))
losses:
  d_loss: bce_with_logits(d_real, 1) + bce_with_logits(d_fake, 0)
  g_loss: bce_with_logits(d_fake, 1)
optimizers:
  d_opt: {type: adam, lr: 1.0e-3, params: [D]}
  g_opt: {type: adam, lr: 1.0e-3, params: [G]}
train:
  steps: 2
  schedule:
    - name: discriminator
      detach: [fake]
      backward: [{loss: d_loss}]
      step: [d_opt]
    - name: generator
      backward: [{loss: g_loss}]
      step: [g_opt]
eval:
  split: train
"""

LACKS = (
    "the test split, which lacks fields that data inputs read (label reads 'mode'; it has: x, y): "
    "an evaluation feeds every data input from the split it evaluates"
)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[pathlib.Path, pathlib.Path]:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("eval-split-fields")
    path = folder / "cgan_split.yaml"
    path.write_text(SPEC, encoding="utf-8")
    ok("train", path, "--out", folder / "run", "-q")
    return path, folder / "run/checkpoints/last.npz"


def test_eval_of_a_split_without_a_read_field_is_a_usage_error(trained):
    # Caught a bug: this ended in "internal error: KeyError: 'mode'" (exit 1) from Trainer.evaluate.
    path, last = trained
    result = fails(2, "eval", path, "--checkpoint", last, "--split", "test")
    assert f"cannot evaluate {LACKS}; choose a split that has them" in result.output
    assert "internal error" not in result.output


def test_the_api_refuses_it_and_the_split_that_has_the_fields_still_evaluates(trained):
    path, last = trained
    with pytest.raises(Refused, match="label reads 'mode'"):
        evaluate_checkpoint(path, last, split="test")
    assert set(evaluate_checkpoint(path, last, split="train").metrics) == {"d_loss", "g_loss"}


def test_the_compiler_says_the_same_of_eval_split(tmp_path):
    # One rule and one wording: validate's E-DATA for eval.split: test names the same fields.
    path = tmp_path / "eval_test.yaml"
    path.write_text(SPEC.replace("  split: train", "  split: test"), encoding="utf-8")
    result = fails(2, "validate", path)
    assert "E-DATA" in result.output and f"eval evaluates {LACKS}" in result.output
