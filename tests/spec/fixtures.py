"""Spec texts shared by the spec tests."""

# a fixed copy of specs/xor.yaml, so that the positions below do not move when the examples change
XOR = """\
# XOR with a 2-8-1 MLP: the smallest complete spec (data, inputs, one module, a loss, a metric,
# one optimizer, one phase). The four points are repeated with a little noise.
version: 1
name: xor
seed: 0
data:
  train: {source: synthetic.xor, n: 256, noise: 0.05}
  test: {source: synthetic.xor, n: 64, noise: 0.05}
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
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 400
  log_every: 50
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
  metrics: [accuracy, loss]
"""
