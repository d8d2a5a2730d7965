"""Divergence inside a built-in loss names the spec's own node, not only the internal one."""

import pytest

from onlytorch.compile import compile_text
from onlytorch.train import Diverged, Trainer

SPEC = """
version: 1
name: blowup
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
nodes:
  pred: net(x)
losses:
  loss: LOSS
optimizers:
  opt: {type: sgd, lr: 1.0e+30, params: [net]}
train:
  steps: 5
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def diverge(loss: str) -> Diverged:
    compiled, report = compile_text(SPEC.replace("LOSS", loss))
    assert compiled is not None, report.render()
    trainer = Trainer(compiled)
    with pytest.raises(Diverged) as info:
        for _ in range(5):
            trainer.run_iteration()
    return info.value


def test_an_overflow_inside_mse_names_the_loss():
    # The pointwise form keeps mse's internal nodes (the mean form is one fused node, below).
    err = diverge('mean(mse(pred, y, reduction="none"))')
    assert err.phase == "fit" and err.step == 2
    assert "(inside 'loss')" in str(err)
    assert err.node.startswith("square_")


def test_an_overflow_in_the_fused_mse_names_the_loss_itself():
    err = diverge("mse(pred, y)")
    assert err.phase == "fit" and err.step == 2
    assert err.node == "loss" and "went NaN/inf is 'loss'" in str(err)
