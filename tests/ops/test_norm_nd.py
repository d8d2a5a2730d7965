"""batch_norm over (N, C, L) and (N, C, H, W) through the BatchNorm module, next to torch's
BatchNorm1d/2d over several train steps and in eval mode (running statistics, outputs, first and
second derivatives); the pooling ops' tie rule with its numbers; and the static shape rules'
messages for the new ops' mistakes."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import onlytorch as ot

RTOL, ATOL = 1e-9, 1e-11


def _close(a, b, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


class Twin:
    """ot.nn.BatchNorm over a (None, *shape) input, and torch's BatchNorm1d/2d with the same
    parameters."""

    def __init__(self, shape, momentum, seed):
        rng = np.random.default_rng(seed)
        self.rng = rng
        c = shape[0]
        self.g = g = ot.Graph(dtype="float64")
        self.x = g.input("x", shape=(None, *shape))
        self.bn = ot.nn.BatchNorm(g, c, momentum=momentum, eps=1e-4, name="bn")
        w, b = rng.normal(size=c) + 1.0, rng.normal(size=c)
        g.set_value(self.bn.weight, w)
        g.set_value(self.bn.bias, b)
        self.y = self.bn(self.x)
        cls = torch.nn.BatchNorm2d if len(shape) == 3 else torch.nn.BatchNorm1d
        self.t = cls(c, momentum=momentum, eps=1e-4, dtype=torch.float64)
        with torch.no_grad():
            self.t.weight.copy_(torch.tensor(w))
            self.t.bias.copy_(torch.tensor(b))

    def step(self, xv):
        self.g.set_value(self.x, xv)
        ours = np.array(self.g.forward_node(self.y))
        theirs = self.t(torch.tensor(xv)).detach().numpy()
        return ours, theirs

    def stats(self):
        rm, rv = self.g.get_node_value(self.bn.running_mean), self.g.get_node_value(self.bn.running_var)
        return (rm, rv), (self.t.running_mean.numpy(), self.t.running_var.numpy())


@pytest.mark.parametrize("shape", [(3, 4, 5), (4, 6)], ids=["nchw", "ncl"])
def test_batch_norm_module_follows_torch_over_train_steps_then_eval(shape):
    twin = Twin(shape, momentum=0.3, seed=len(shape))
    for step in range(3):
        xv = twin.rng.normal(size=(2 + step, *shape)) * (step + 1) + step
        ours, theirs = twin.step(xv)
        _close(ours, theirs, f"train output at step {step}")
        (rm, rv), (trm, trv) = twin.stats()
        _close(rm, trm, f"running mean after step {step}")
        _close(rv, trv, f"running var (unbiased over batch and positions) after step {step}")
    twin.g.set_eval_mode()
    twin.t.eval()
    ours, theirs = twin.step(twin.rng.normal(size=(3, *shape)))
    _close(ours, theirs, "eval output")
    (rm, _), (trm, _) = twin.stats()
    _close(rm, trm, "eval leaves the running mean alone")


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_norm_nchw_derivatives_match_torch(mode):
    twin = Twin((2, 3, 3), momentum=0.1, seed=7)
    g, rng = twin.g, twin.rng
    twin.step(rng.normal(size=(4, 2, 3, 3)))  # running statistics away from their start
    if mode == "eval":
        g.set_eval_mode()
        twin.t.eval()
    xv = rng.normal(size=(3, 2, 3, 3)) * 2 + 0.5
    R = rng.normal(size=xv.shape)
    g.set_value(twin.x, xv)
    wrt = [twin.x, twin.bn.weight, twin.bn.bias]
    s = g.sum(g.tanh(twin.y) * R)
    g.forward_node(s)
    first = g.grad(s, wrt, create_graph=True)
    Vs = [rng.normal(size=np.shape(g.forward_node(f))) for f in first]
    h = g.sum(first[0] * Vs[0]) + g.sum(first[1] * Vs[1]) + g.sum(first[2] * Vs[2])
    g.forward_node(h)
    second = g.grad(h, wrt, allow_unused=True)

    tx = torch.tensor(xv, requires_grad=True)
    twrt = [tx, twin.t.weight, twin.t.bias]
    ts = (torch.tanh(twin.t(tx)) * torch.tensor(R)).sum()
    tfirst = torch.autograd.grad(ts, twrt, create_graph=True)
    th = sum((f * torch.tensor(v)).sum() for f, v in zip(tfirst, Vs))
    tsecond = torch.autograd.grad(th, twrt, allow_unused=True)
    for name, f, tf in zip(("x", "weight", "bias"), first, tfirst):
        _close(g.forward_node(f), tf.detach().numpy(), f"gradient wrt {name}")
    for name, s2, ts2, w in zip(("x", "weight", "bias"), second, tsecond, twrt):
        want = np.zeros(tuple(w.shape)) if ts2 is None else ts2.numpy()
        _close(np.zeros(want.shape) if s2 is None else s2, want, f"second derivative wrt {name}", 1e-8, 1e-10)


def test_batch_norm_nd_needs_more_than_one_value_per_channel_in_train_mode():
    twin = Twin((2, 1, 1), momentum=0.1, seed=1)
    twin.g.set_value(twin.x, np.ones((1, 2, 1, 1)))
    with pytest.raises(
        ot.GraphError, match=r"\(batch_norm\) in train mode needs more than one value per channel, got 1"
    ):
        twin.g.forward_node(twin.y)
    (rm, _), _ = twin.stats()
    np.testing.assert_array_equal(rm, np.zeros(2))  # not moved
    # one sample with several positions is enough, as torch
    twin = Twin((2, 3, 1), momentum=0.1, seed=1)
    ours, theirs = twin.step(twin.rng.normal(size=(1, 2, 3, 1)))
    _close(ours, theirs, "one sample, three positions")


def test_max_pool_derivative_goes_to_the_first_largest_value_of_each_window():
    g = ot.Graph(dtype="float64")
    x = g.input("x", (1, 1, 2, 4))
    g.set_value(x, np.array([[[[1.0, 3.0, 3.0, 0.0], [3.0, 2.0, 0.0, 3.0]]]]))
    s = g.sum(g.max_pool2d(x, kernel=2))
    g.forward_node(s)
    np.testing.assert_array_equal(g.forward_node(g.max_pool2d(x, kernel=2)), [[[[3.0, 3.0]]]])
    # windows (row-major): [1, 3 / 3, 2] -> the 3 in the first row; [3, 0 / 0, 3] -> the top-left 3
    np.testing.assert_array_equal(g.grad(s, x), [[[[0.0, 1.0, 1.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]])


def test_max_pool_padding_is_minus_infinity_and_avg_pool_counts_it():
    g = ot.Graph(dtype="float64")
    x = g.input("x", (1, 1, 2, 2))
    g.set_value(x, -np.ones((1, 1, 2, 2)))
    np.testing.assert_array_equal(
        g.forward_node(g.max_pool2d(x, kernel=2, stride=1, padding=1))[0, 0], -np.ones((3, 3))
    )
    avg = g.forward_node(g.avg_pool2d(x, kernel=2, stride=1, padding=1))[0, 0]
    np.testing.assert_array_equal(avg, [[-0.25, -0.5, -0.25], [-0.5, -1.0, -0.5], [-0.25, -0.5, -0.25]])
    exclusive = g.forward_node(g.avg_pool2d(x, kernel=2, stride=1, padding=1, count_include_pad=False))
    np.testing.assert_array_equal(exclusive[0, 0], -np.ones((3, 3)))


def _shape_error(build, x_shape, *extra_shapes):
    g = ot.Graph(dtype="float64")
    x = g.input("x", x_shape)
    extra = [g.parameter(f"p{i}", value=np.ones(s)) for i, s in enumerate(extra_shapes)]
    with pytest.raises(ot.ShapeError) as e:
        build(g, x, *extra)
    return str(e.value)


@pytest.mark.parametrize(
    ("build", "x_shape", "extra", "message"),
    [
        (
            lambda g, x: g.max_pool2d(x, kernel=5),
            (None, 1, 4, 6),
            (),
            r"kernel \(5, 5\) is larger than the padded input \(4, 6\)",
        ),
        (
            lambda g, x: g.avg_pool2d(x, kernel=(5, 2), padding=(0, 1)),
            (None, 1, 4, 6),
            (),
            r"kernel \(5, 2\) is larger than the padded input \(4, 8\)",
        ),
        (
            lambda g, x: g.max_pool2d(x, kernel=3, padding=2),
            (None, 1, 8, 8),
            (),
            r"padding \(2, 2\) must be at most half the kernel \(3, 3\)",
        ),
        (
            lambda g, x: g.max_pool2d(x, kernel=2),
            (None, 8),
            (),
            r"max_pool2d takes \(batch, channels, height, width\) inputs, got \(N, 8\)",
        ),
        (lambda g, x: g.max_pool2d(x, kernel=0), (None, 1, 4, 4), (), r"kernel must be a positive integer or a pair"),
        (
            lambda g, x: g.avg_pool2d(x, kernel=2, stride=(1, 2, 3)),
            (None, 1, 4, 4),
            (),
            r"stride must be a positive integer or a pair",
        ),
        (
            lambda g, x: g.adaptive_avg_pool2d(x, output_size=0),
            (None, 1, 4, 4),
            (),
            r"output_size must be a positive integer",
        ),
        (
            lambda g, x: g.upsample_nearest2d(x, scale_factor=1.5),
            (None, 1, 4, 4),
            (),
            r"scale_factor must be a positive integer",
        ),
        (lambda g, x: g.flatten(x, start_dim=2, end_dim=1), (None, 2, 3), (), r"start_dim 2 comes after end_dim 1"),
        (
            lambda g, x, w, b: g.group_norm(x, w, b, num_groups=4),
            (None, 6, 3, 3),
            ((6,), (6,)),
            r"num_groups 4 does not divide the 6 channels",
        ),
        (
            lambda g, x, w, b: g.group_norm(x, w, b, num_groups=2),
            (None, 6, 3, 3),
            ((3,), (6,)),
            r"weight must have shape \(6,\), got \(3,\)",
        ),
        (
            lambda g, x, w, b: g.batch_norm(x, w, b, g.state("rm", shape=(3,)), g.state("rv", shape=(3,))),
            (None, 4, 5, 5),
            ((3,), (3,)),
            r"gamma must have shape \(4,\), got \(3,\)",
        ),
    ],
    ids=[
        "max-kernel-too-large",
        "avg-kernel-too-large-padded",
        "padding-over-half-kernel",
        "not-an-image",
        "kernel-zero",
        "stride-triple",
        "adaptive-zero",
        "upsample-fraction",
        "flatten-order",
        "groups-not-dividing",
        "group-norm-weight",
        "batch-norm-channels",
    ],
)
def test_shape_mistakes_are_shape_errors_that_say_what_is_wrong(build, x_shape, extra, message):
    text = _shape_error(build, x_shape, *extra)
    assert re.search(message, text), text
