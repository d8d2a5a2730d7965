"""ot.gradcheck / gradgradcheck: they pass on correct rules and catch a wrong one."""

import numpy as np
import pytest

import onlytorch as ot
from onlytorch.ops.registry import REGISTRY, defop
from onlytorch.ops.shapes import same


@pytest.fixture
def wrong_op():
    """A temporary op whose derivative rule is deliberately off by a factor of 2."""

    @defop("test_wrong_square", same)
    def fwd(x):
        return x * x

    @fwd.vjp
    def _(ctx, gy):
        return (gy * 4.0 * ctx.inputs[0],)

    from onlytorch.builder import op_method as _op_method
    from onlytorch.graph import Graph

    Graph.test_wrong_square = _op_method(fwd)
    yield "test_wrong_square"
    del REGISTRY["test_wrong_square"]
    del Graph.test_wrong_square


def _graph():
    g = ot.Graph(dtype="float64")
    rng = np.random.default_rng(0)
    x = g.parameter("x", value=rng.normal(size=(3, 4)))
    w = g.parameter("w", value=rng.normal(size=(4, 2)))
    return g, x, w


def test_gradcheck_passes_on_correct_rules():
    g, x, w = _graph()
    y = g.sum(g.softplus(x @ w) * g.sigmoid(x @ w) + g.logsumexp(x, axis=1, keepdims=True))
    assert ot.gradcheck(g, y, [x, w])
    assert ot.gradgradcheck(g, y, [x, w])


def test_gradcheck_catches_a_wrong_rule(wrong_op):
    g, x, _ = _graph()
    y = g.sum(g.test_wrong_square(x))
    with pytest.raises(ot.GraphError, match=r"gradcheck of .* with respect to 'x': analytic"):
        ot.gradcheck(g, y, [x])
    assert ot.gradcheck(g, y, [x], raise_exception=False) is False


def test_gradcheck_restores_the_leaf_values():
    g, x, w = _graph()
    before = g.get_node_value(x).copy()
    y = g.sum(g.tanh(x @ w))
    ot.gradcheck(g, y, [x])
    np.testing.assert_array_equal(g.get_node_value(x), before)


def test_gradcheck_needs_float64_and_leaves():
    g = ot.Graph()
    x = g.parameter("x", value=np.ones(2))
    with pytest.raises(ot.GraphError, match="float64"):
        ot.gradcheck(g, g.sum(x), [x])
    g64, x64, w64 = _graph()
    h = x64 @ w64
    with pytest.raises(ot.GraphError, match="need a leaf"):
        ot.numeric_grad(g64, g64.sum(h), h)
