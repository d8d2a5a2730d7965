"""Regression tests for engine bugs the op suite found: two targets sharing one gradient node
(a + b of equal shapes), and one gradient per requested node when a node repeats."""

from __future__ import annotations

import numpy as np

import onlytorch as ot


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


def test_grad_of_two_inputs_sharing_one_gradient_node():
    g, a, b, y, expected = _a_plus_b()
    ga, gb = g.grad(y, [a, b])
    np.testing.assert_allclose(ga, expected)
    np.testing.assert_allclose(gb, expected)


def test_backward_nodes_into_two_inputs_sharing_one_gradient_node():
    g, a, b, y, expected = _a_plus_b()
    g.backward_nodes([a, b], y)
    np.testing.assert_allclose(g.get_node_grad(a), expected)
    np.testing.assert_allclose(g.get_node_grad(b), expected)


def test_create_graph_gradients_of_a_shared_node_are_right():
    """The create_graph path returns the node itself, so it is unaffected."""
    g, a, b, y, expected = _a_plus_b()
    ga, gb = g.grad(y, [a, b], create_graph=True)
    np.testing.assert_allclose(g.forward_node(ga), expected)
    np.testing.assert_allclose(g.forward_node(gb), expected)


def test_grad_returns_one_gradient_per_requested_node():
    g, a, b, y, _ = _a_plus_b()
    grads = g.grad(y, [a, b, a], allow_unused=True)
    assert len(grads) == 3
