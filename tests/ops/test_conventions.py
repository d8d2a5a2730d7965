"""The derivative conventions at kinks and ties, spelled out with their numbers (the case tables
check the same against torch), and numerical safety at large inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import onlytorch as ot
from onlytorch.ops import REGISTRY


def _grads(build, *values, dtype="float64"):
    """Gradients of sum(build(g, *xs)) with respect to every x."""
    g = ot.Graph(dtype=dtype)
    xs = []
    for i, v in enumerate(values):
        x = g.input(f"x{i}", np.shape(v))
        g.set_value(x, np.asarray(v, dtype=dtype))
        xs.append(x)
    y = g.sum(build(g, *xs))
    g.forward_node(y)
    return g.grad(y, xs, allow_unused=True)


def test_relu_and_abs_have_zero_slope_at_zero():
    (gr,) = _grads(lambda g, x: g.relu(x), [-1.0, 0.0, 2.0])
    (ga,) = _grads(lambda g, x: g.abs(x), [-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(gr, [0.0, 0.0, 1.0])
    np.testing.assert_array_equal(ga, [-1.0, 0.0, 1.0])


def test_leaky_relu_and_elu_take_the_negative_side_at_zero():
    (gl,) = _grads(lambda g, x: g.leaky_relu(x, negative_slope=0.1), [0.0])
    (ge,) = _grads(lambda g, x: g.elu(x, alpha=0.7), [0.0])
    np.testing.assert_allclose(gl, [0.1])
    np.testing.assert_allclose(ge, [0.7])


def test_maximum_minimum_ties_split_half_half():
    ga, gb = _grads(lambda g, a, b: g.maximum(a, b), [1.0, 2.0, 3.0], [1.0, 0.0, 5.0])
    np.testing.assert_array_equal(ga, [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(gb, [0.5, 0.0, 1.0])
    ga, gb = _grads(lambda g, a, b: g.minimum(a, b), [1.0, 2.0, 3.0], [1.0, 0.0, 5.0])
    np.testing.assert_array_equal(ga, [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(gb, [0.5, 1.0, 0.0])


def test_max_min_ties_share_equally():
    x = [[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]]
    (g_axis,) = _grads(lambda g, x: g.max(x, axis=1), x)
    np.testing.assert_allclose(g_axis, [[0.0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3]])
    (g_all,) = _grads(lambda g, x: g.max(x), x)
    np.testing.assert_allclose(g_all, [[0.0, 0.5, 0.5], [0.0, 0.0, 0.0]])
    (g_min,) = _grads(lambda g, x: g.min(x, axis=0), x)
    np.testing.assert_allclose(g_min, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])


def test_clip_passes_the_gradient_at_its_bounds():
    gx, glo, ghi = _grads(lambda g, x, lo, hi: g.clip(x, lo, hi), [-2.0, -0.5, 0.0, 0.5, 2.0], -0.5, 0.5)
    np.testing.assert_array_equal(gx, [0.0, 1.0, 1.0, 1.0, 0.0])
    assert float(glo) == 1.0 and float(ghi) == 1.0


def test_pow_at_zero_base_is_finite():
    ga, gb = _grads(lambda g, a, b: a**b, [0.0, 0.0, 0.0], [0.0, 2.0, 0.5])
    np.testing.assert_array_equal(ga[:2], [0.0, 0.0])  # d/da 0**0 = 0 (torch), 2 * 0**1 = 0
    assert np.isinf(ga[2])  # 0.5 * 0**-0.5
    np.testing.assert_array_equal(gb, [0.0, 0.0, 0.0])  # d/db 0**b = 0 for b >= 0 (torch)


def test_stop_gradient_passes_no_gradient():
    g = ot.Graph(dtype="float64")
    x = g.input("x", (3,))
    g.set_value(x, np.array([1.0, 2.0, 3.0]))
    y = g.sum(g.stop_gradient(x) * 2.0)
    g.forward_node(y)
    assert g.grad(y, [x], allow_unused=True) == [None]
    with pytest.raises(ot.GraphError, match="not reachable"):
        g.grad(y, [x])
    # x * stop_gradient(x): only the first factor carries a gradient
    y2 = g.sum(x * g.detach(x))
    g.forward_node(y2)
    np.testing.assert_array_equal(g.grad(y2, x), [1.0, 2.0, 3.0])


def test_comparisons_pass_no_gradient():
    g = ot.Graph(dtype="float64")
    a = g.input("a", (3,))
    g.set_value(a, np.array([1.0, -2.0, 3.0]))
    for name in ("greater", "greater_equal", "less", "less_equal", "equal", "not_equal"):
        y = g.sum(getattr(g, name)(a, 0.0) * 3.0)
        g.forward_node(y)
        assert g.grad(y, [a], allow_unused=True) == [None], name
    y = g.sum(g.argmax(g.reshape(a, shape=(1, 3))) * 1.0)
    g.forward_node(y)
    assert g.grad(y, [a], allow_unused=True) == [None]


LARGE = np.array([-1e4, -1000.0, -750.0, -100.0, -0.0, 0.0, 100.0, 750.0, 1000.0, 1e4])

# op -> attributes; forwards that must stay finite, silently, for any finite input
SATURATING = {
    "sigmoid": {},
    "tanh": {},
    "softplus": {},
    "elu": {},
    "gelu": {},
    "logsumexp": {"axis": -1},
    "softmax": {"axis": -1},
    "log_softmax": {"axis": -1},
}


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("op", sorted(SATURATING))
def test_no_overflow_warning_at_large_inputs(op, dtype):
    x = LARGE.astype(dtype)
    attrs = SATURATING[op]
    # the numpy forward itself (the graph silences numpy's floating-point errors, so ask directly)
    with np.errstate(over="raise", invalid="raise", divide="raise", under="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        out = REGISTRY[op].forward(x, **attrs)
    assert np.all(np.isfinite(out))
    assert np.asarray(out).dtype == dtype
    # and through a graph with anomaly detection on: every value and gradient is finite
    g = ot.Graph(dtype=dtype)
    g.set_anomaly_detection(True)
    xn = g.input("x", x.shape)
    g.set_value(xn, x)
    y = g.sum(getattr(g, op)(xn, **attrs) * 0.5)
    g.forward_node(y)
    (gx,) = g.grad(y, [xn])
    assert np.all(np.isfinite(gx)) and gx.dtype == dtype


def test_sigmoid_saturates_exactly():
    out = REGISTRY["sigmoid"].forward(np.array([-1000.0, 1000.0]))
    np.testing.assert_array_equal(out, [0.0, 1.0])


def test_softplus_is_linear_beyond_its_threshold():
    (gx,) = _grads(lambda g, x: g.softplus(x, beta=2.0, threshold=3.0), [1.6, 5.0, 100.0])
    np.testing.assert_array_equal(gx, [1.0, 1.0, 1.0])
    g = ot.Graph(dtype="float64")
    x = g.input("x", (2,))
    g.set_value(x, np.array([25.0, 1e4]))
    np.testing.assert_array_equal(g.forward_node(g.softplus(x)), [25.0, 1e4])


def test_take_along_indices_may_not_outgrow_the_values():
    """As torch.gather: off the axis, indices may be shorter than the values (the case tables read
    the leading part), never longer (numpy would broadcast a size-1 values dimension)."""
    g = ot.Graph(dtype="float64")
    x = g.input("x", (1, 5))
    idx = g.input("idx", (4, 2), dtype="int64")
    with pytest.raises(ot.ShapeError, match="larger than the values"):
        g.take_along(x, idx, axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(), (1,), (7, 3), (256, 128)])
def test_sigmoid_is_the_two_stable_formulas_bit_for_bit(dtype, shape):
    # 1 / (1 + e^-x) where x >= 0, e^x / (1 + e^x) elsewhere: written with masks, the reference
    rng = np.random.default_rng(len(shape))
    x = np.asarray(rng.normal(size=shape) * 30, dtype=dtype)
    if x.ndim:
        x.reshape(-1)[:9] = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 89.0, -104.0])[: x.size]
    flat = x.reshape(-1)
    want = np.empty_like(flat)
    pos = flat >= 0
    want[pos] = 1.0 / (1.0 + np.exp(-flat[pos]))
    ex = np.exp(flat[~pos])
    want[~pos] = ex / (1.0 + ex)
    with np.errstate(all="ignore"):
        got = REGISTRY["sigmoid"].forward(x)
    assert got.dtype == x.dtype and got.shape == x.shape
    assert np.array_equal(got.reshape(-1), want, equal_nan=True)
