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


def test_the_logged_gradient_norm_is_the_global_two_norm_and_large_finite_gradients_are_not_divergence():
    import numpy as np

    text = SPEC.replace("LOSS", "mse(pred, y) * SCALE").replace("lr: 1.0e+30", "lr: 0.0")
    for scale, expect_diverged in (("1.0", False), ("1.0e+25", False), ("1.0e+38 * 1.0e+38", True)):
        compiled, report = compile_text(text.replace("SCALE", scale))
        assert compiled is not None, report.render()
        trainer = Trainer(compiled)
        if expect_diverged:
            with pytest.raises(Diverged):
                trainer.run_iteration()
            continue
        trainer.run_iteration()  # the gradients stay until the next phase clears them
        g, opt = trainer.g, compiled.optimizers["opt"]
        grads = [g.get_node_grad(p) for p in opt.params]
        exact = np.sqrt(sum(np.sum(np.square(gr, dtype=np.float64)) for gr in grads))
        # 1e25 squared overflows float32: the norm is then summed again in float64, still finite
        assert np.isfinite(exact) and exact > 0
        assert trainer.grad_norms["opt"] == pytest.approx(float(exact), rel=1e-5)
