"""``onlytorch report`` on runs really trained (issue 17): the metrics log's keys as the trainer
writes them reach the pictures (train and evaluation of a loss on the same axes, a weighted
backward's loss dashed next to its raw one, gradient norms), and a constant learning rate is said,
not drawn."""

from __future__ import annotations

from pathlib import Path

import pytest

import onlytorch
from onlytorch import report

pytest.importorskip("matplotlib")

SPECS = Path(__file__).resolve().parents[1] / "specs"

# xor with its loss weighted (so the log holds fit/loss and fit/loss:weighted), a cosine learning
# rate and evaluations every 50 steps (a curve of them).
WEIGHTED_XOR = """\
version: 1
name: xor-weighted
seed: 0
data:
  train: {source: synthetic.xor, n: 128, noise: 0.05}
  test: {source: synthetic.xor, n: 32, noise: 0.05}
  batch_size: 32
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
metrics:
  accuracy: mean(equal(greater(logits, 0), y))
optimizers:
  opt: {type: adam, lr: 0.05, params: [net], schedule: {type: cosine_annealing_lr, T_max: 200}}
train:
  steps: 200
  log_every: 20
  eval_every: 50
  schedule:
    - name: fit
      backward: [{loss: loss, weight: 0.5}]
      step: [opt]
eval:
  split: test
  metrics: [accuracy, loss]
"""


def test_xor_as_trained(tmp_path: Path) -> None:
    onlytorch.fit(SPECS / "xor.yaml", tmp_path / "run")
    run = report.read_run(tmp_path / "run")
    drawn = dict(report.figures(run))
    assert "lr.png" not in drawn  # xor's learning rate is constant
    said = dict(report.facts(run))
    assert said["learning rate"] == "opt constant at 0.05"
    assert said["wall time"] == report.duration(run.info["wall_time"]) != "0.0 s"
    assert said["directory"] == str(tmp_path / "run")  # which run the page is of (two may share a name)
    ax = drawn["losses.png"].axes[0]
    assert {line.get_gid() for line in ax.lines} == {"fit/loss", "eval/loss"}
    assert {line.get_gid() for line in drawn["grad_norm.png"].axes[0].lines} == {"grad_norm/opt"}
    written = report.write_plots(run, tmp_path / "pictures")
    assert [p.name for p in written] == list(drawn)


def test_a_weighted_backward_as_trained(tmp_path: Path) -> None:
    (tmp_path / "spec.yaml").write_text(WEIGHTED_XOR)
    onlytorch.fit(tmp_path / "spec.yaml", tmp_path / "run")
    run = report.read_run(tmp_path / "run")
    (panel,) = report.loss_panels(run)
    assert panel.curves == ("fit/loss", "fit/loss:weighted", "eval/loss")
    raw, weighted = (report.series(run, n)[1] for n in ("fit/loss", "fit/loss:weighted"))
    assert weighted == pytest.approx(0.5 * raw)
    drawn = dict(report.figures(run))
    assert list(drawn) == ["losses.png", "metrics.png", "lr.png", "grad_norm.png"]
    lines = {line.get_gid(): line for line in drawn["losses.png"].axes[0].lines}
    assert lines["fit/loss"].get_linestyle() == "-" and lines["fit/loss:weighted"].get_linestyle() == "--"
    assert len(lines["eval/loss"].get_xdata()) == 4  # steps 50, 100, 150, 200
    metric_lines = {line.get_gid() for line in drawn["metrics.png"].axes[0].lines}
    assert metric_lines == {"train/accuracy", "eval/accuracy"}
    lr = report.series(run, "lr/opt")[1]
    assert 0 <= lr[-1] < lr[0] < 0.05  # cosine to 0, logged after each window's last step
    assert dict(report.facts(run))["learning rate"] == f"opt from {lr[0]:.5g} to {lr[-1]:.5g}"
