"""Initialisers: seeded, reproducible, with the documented scales; and the graph's dtype."""

import math

import numpy as np
import pytest

import onlytorch as ot


def test_same_seed_same_values_different_seed_different_values():
    a, b, c = ot.Graph(seed=3), ot.Graph(seed=3), ot.Graph(seed=4)
    va = [a.get_node_value(a.parameter(f"w{i}", shape=(5, 7))) for i in range(3)]
    vb = [b.get_node_value(b.parameter(f"w{i}", shape=(5, 7))) for i in range(3)]
    vc = c.get_node_value(c.parameter("w0", shape=(5, 7)))
    for x, y in zip(va, vb):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(va[0], vc)
    assert not np.array_equal(va[0], va[1])


def test_initialisation_does_not_move_the_runtime_rng():
    """Adding a parameter must not change the dropout masks drawn later."""
    masks = []
    for extra in (0, 3):
        g = ot.Graph(seed=0)
        x = g.input("x", shape=(None, 50))
        for i in range(extra):
            g.parameter(f"p{i}", shape=(10,), init="normal")
        d = g.dropout(x, p=0.5)
        g.set_value(x, np.ones((4, 50)))
        masks.append(g.forward_node(d))
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize(
    ("init", "kwargs", "check"),
    [
        ("zeros", {}, lambda v: np.all(v == 0)),
        ("ones", {}, lambda v: np.all(v == 1)),
        ("constant", {"fill": 0.25}, lambda v: np.all(v == 0.25)),
        ("uniform", {"low": -2.0, "high": 3.0}, lambda v: v.min() >= -2 and v.max() <= 3 and abs(v.mean() - 0.5) < 0.1),
        ("normal", {"mean": 1.0, "std": 2.0}, lambda v: abs(v.mean() - 1) < 0.05 and abs(v.std() - 2) < 0.05),
        ("xavier_uniform", {}, lambda v: np.abs(v).max() <= math.sqrt(6 / (200 + 300)) + 1e-7),
        ("xavier_normal", {}, lambda v: abs(v.std() - math.sqrt(2 / (200 + 300))) < 0.002),
        ("kaiming_uniform", {"nonlinearity": "relu"}, lambda v: np.abs(v).max() <= math.sqrt(6 / 200) + 1e-7),
        ("kaiming_normal", {"nonlinearity": "relu"}, lambda v: abs(v.std() - math.sqrt(2 / 200)) < 0.002),
        ("lecun_uniform", {}, lambda v: np.abs(v).max() <= 1 / math.sqrt(200) + 1e-7),
    ],
)
def test_initialiser_scales(init, kwargs, check):
    g = ot.Graph(seed=0, dtype="float64")
    v = g.get_node_value(g.parameter("w", shape=(200, 300), init=init, **kwargs))
    assert v.shape == (200, 300) and v.dtype == np.float64
    assert check(v)


def test_float32_default_and_float64_on_request():
    assert ot.Graph().dtype == np.float32
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", shape=(2, 2))
    assert g.get_node_value(w).dtype == np.float64
    with pytest.raises(ot.GraphError, match="float type"):
        ot.Graph(dtype="int32")


def test_unknown_initialiser_suggests_the_right_one():
    g = ot.Graph()
    with pytest.raises(ot.GraphError, match="did you mean 'xavier_uniform'"):
        g.parameter("w", shape=(2, 2), init="xavier_unifrom")
    with pytest.raises(ot.GraphError, match="initialiser 'normal'"):
        g.parameter("v", shape=(2, 2), init="normal", sigma=3)


def test_parameter_from_value_checks_shape_and_copies():
    g = ot.Graph(dtype="float64")
    src = np.arange(6.0).reshape(2, 3)
    w = g.parameter("w", value=src)
    src[0, 0] = 100.0
    assert g.get_node_value(w)[0, 0] == 0.0
    with pytest.raises(ot.ShapeError, match="shape"):
        g.parameter("v", shape=(3, 2), value=src)
    with pytest.raises(ot.GraphError, match="needs a shape or a value"):
        g.parameter("u")
    with pytest.raises(ot.GraphError, match="non-negative integers"):
        g.parameter("t", shape=(None, 2))
