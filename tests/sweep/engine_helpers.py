"""Helpers of the sweep engine's tests (test_run*.py, test_outputs*.py, test_cli_sweep*.py): tiny
sweep files over specs/xor.yaml, short enough that a trial trains in a fraction of a second."""

from __future__ import annotations

import csv
import json
import pathlib
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[2]
XOR = ROOT / "specs" / "xor.yaml"

# a regression that SGD with a huge learning rate drives to inf within a few steps
BLOWUP = """\
version: 1
name: blowup
seed: 0
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  test: {source: synthetic.regression, n: 32, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
nodes:
  pred: net(x)
losses:
  loss: mse(pred, y)
optimizers:
  opt: {type: sgd, lr: 0.01, params: [net]}
train:
  steps: 30
  eval_every: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
"""


def write_sweep(folder: pathlib.Path, body: str, name: str = "s.yaml", steps: int = 30) -> pathlib.Path:
    """A sweep file over specs/xor.yaml (shortened to ``steps``, evaluated every 10) with ``body``
    (trials, seeds, sampler, pruner, space...) appended."""
    head = f"""\
        version: 1
        spec: {XOR}
        set:
          train.steps: {steps}
          train.eval_every: 10
          train.log_every: 10
        """
    path = folder / name
    path.write_text(textwrap.dedent(head) + textwrap.dedent(body), encoding="utf-8")
    return path


def rows(sweep_dir: pathlib.Path) -> list[dict[str, str]]:
    with open(sweep_dir / "trials.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def info(sweep_dir: pathlib.Path) -> dict:
    return json.loads((sweep_dir / "sweep.json").read_text(encoding="utf-8"))


def run_dirs(sweep_dir: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in (sweep_dir / "trials").glob("*/seed-*") if (p / "run.json").exists())
