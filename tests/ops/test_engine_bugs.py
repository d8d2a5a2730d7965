"""Engine bugs the op suite found outside the op modules (graph.py / plan.py are not ours to
change): each is a strict xfail, so it turns into a failure as soon as the bug is fixed. Then drop
the xfail here and the matching ``xfail=`` / ``assume`` in cases_math.py and test_properties.py."""

from __future__ import annotations

import numpy as np
import pytest

import onlytorch as ot

SHARED_NODE = (
    "graph.py Graph._run_backward: after running the gradient steps it reads each target's gradient "
    "node and immediately sets that node's value to None; when two targets have the very same "
    "gradient node (a + b of equal shapes: add's rule returns gy for both, no sum_to is added) the "
    "second target reads None"
)


def _a_plus_b():
    g = ot.Graph(dtype="float64")
    a = g.input("a", (2,))
    b = g.input("b", (2,))
    g.set_value(a, np.array([0.1, 0.2]))
    g.set_value(b, np.array([0.3, -0.4]))
    y = g.sum(g.tanh(a + b))
    g.forward_node(y)
    expected = 1 - np.tanh([0.4, -0.2]) ** 2
    return g, a, b, y, expected


@pytest.mark.xfail(strict=True, reason=SHARED_NODE)
def test_grad_of_two_inputs_sharing_one_gradient_node():
    g, a, b, y, expected = _a_plus_b()
    ga, gb = g.grad(y, [a, b], allow_unused=True)  # without allow_unused it even raises "not reachable"
    np.testing.assert_allclose(ga, expected)
    np.testing.assert_allclose(gb, expected)  # gb is None


@pytest.mark.xfail(strict=True, reason=SHARED_NODE)
def test_backward_nodes_into_two_inputs_sharing_one_gradient_node():
    g, a, b, y, expected = _a_plus_b()
    g.backward_nodes([a, b], y)
    np.testing.assert_allclose(g.get_node_grad(a), expected)
    np.testing.assert_allclose(g.get_node_grad(b), expected)  # b's gradient silently stays None


def test_create_graph_gradients_of_a_shared_node_are_right():
    """The create_graph path returns the node itself, so it is unaffected."""
    g, a, b, y, expected = _a_plus_b()
    ga, gb = g.grad(y, [a, b], create_graph=True)
    np.testing.assert_allclose(g.forward_node(ga), expected)
    np.testing.assert_allclose(g.forward_node(gb), expected)


@pytest.mark.xfail(
    strict=True,
    reason="graph.py Graph.grad de-duplicates xs (_unique_nodes), so g.grad(y, [a, a]) returns one "
    "gradient instead of one per requested node (torch.autograd.grad returns two)",
)
def test_grad_returns_one_gradient_per_requested_node():
    g, a, b, y, _ = _a_plus_b()
    grads = g.grad(y, [a, b, a], allow_unused=True)
    assert len(grads) == 3
