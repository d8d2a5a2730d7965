"""User mistakes: each raises ot.GraphError (or the named subclass) with a message that names the node,
and the graph stays usable afterwards."""

from __future__ import annotations

import re

import numpy as np
import pytest

import onlytorch as ot

X = np.random.default_rng(0).normal(size=(5, 3))
Y = np.random.default_rng(1).normal(size=(5, 1))


class Model:
    def __init__(self) -> None:
        g = self.g = ot.Graph(dtype="float64")
        self.x = g.input("x", shape=(None, 3))
        self.y = g.input("y", shape=(None, 1))
        self.labels = g.input("labels", shape=(None,), dtype="int64")
        self.w = g.parameter("w", shape=(3, 1))
        self.b = g.parameter("b", shape=(1,), init="zeros")
        self.pred = g.linear(self.x, self.w, self.b, name="pred")
        self.loss = g.mse(self.pred, self.y, name="loss")

    def train_step(self) -> None:
        """A correct forward and backward: proves the graph is still usable."""
        g = self.g
        g.clear_jacobi()
        g.set_value(self.x, X)
        g.set_value(self.y, Y)
        value = float(g.forward_node(self.loss))
        expected = np.mean((X @ g.get_node_value(self.w) + g.get_node_value(self.b) - Y) ** 2)
        assert np.isclose(value, expected)
        g.backward_nodes([self.w, self.b], self.loss)
        assert g.get_node_grad(self.w).shape == (3, 1)


@pytest.fixture
def m() -> Model:
    return Model()


def q(name: str) -> str:
    return re.escape(repr(name))


# ---------------------------------------------------------------- shapes at construction


def test_matmul_inner_dimensions(m):
    v = m.g.parameter("v", shape=(4, 2))
    with pytest.raises(ot.ShapeError, match=rf"{q('mm')}.*matmul.*{q('x')} \(N, 3\).*{q('v')} \(4, 2\).*3 and 4"):
        m.g.matmul(m.x, v, name="mm")
    with pytest.raises(ot.ShapeError, match=r"'x' \(N, 3\).*'v' \(4, 2\)"):
        m.x @ v
    m.train_step()


def test_broadcasting(m):
    z = m.g.input("z", shape=(None, 4))
    with pytest.raises(ot.ShapeError, match=rf"{q('s')}.*add.*{q('x')} \(N, 3\).*{q('z')} \(N, 4\).*broadcast"):
        m.g.add(m.x, z, name="s")
    m.train_step()


def test_reshape_of_wrong_size(m):
    with pytest.raises(ot.ShapeError, match=rf"{q('r')}.*reshape.*{q('w')} \(3, 1\).*3 elements.*\(2, 2\)"):
        m.g.reshape(m.w, shape=(2, 2), name="r")
    m.train_step()


def test_concat_off_axis(m):
    with pytest.raises(
        ot.ShapeError, match=rf"{q('cat')}.*concat.*{q('x')} \(N, 3\).*{q('w')} \(3, 1\).*off that axis"
    ):
        m.g.concat(m.x, m.w, axis=1, name="cat")
    m.train_step()


def test_shape_error_inside_a_composite_names_the_composite_and_inputs(m):
    v = m.g.parameter("v", shape=(4, 2))
    with pytest.raises(ot.ShapeError, match=rf"{q('l')}.*mse.*{q('x')} \(N, 3\).*{q('v')} \(4, 2\)"):
        m.g.mse(m.x, v, name="l")
    m.train_step()


def test_failed_construction_adds_no_node(m):
    before = len(m.g.nodes(include_hidden=True))
    with pytest.raises(ot.ShapeError):
        m.g.matmul(m.x, m.x, name="bad")
    assert len(m.g.nodes(include_hidden=True)) == before
    m.g.matmul(m.x, m.w, name="bad")  # the name was not taken by the failed attempt


# ---------------------------------------------------------------- values


@pytest.mark.parametrize(
    ("value", "shown"),
    [(np.ones((5, 2)), r"\(5, 2\)"), (np.ones(3), r"\(3,\)"), (np.ones((1, 5, 3)), r"\(1, 5, 3\)")],
)
def test_set_value_with_wrong_shape_or_rank(m, value, shown):
    with pytest.raises(ot.ShapeError, match=rf"input {q('x')} has shape {shown}, expected \(N, 3\)"):
        m.g.set_value(m.x, value)
    m.train_step()


def test_set_value_of_a_parameter_with_wrong_shape(m):
    with pytest.raises(ot.ShapeError, match=rf"parameter {q('w')} has shape \(1, 3\), expected \(3, 1\)"):
        m.g.set_value(m.w, np.ones((1, 3)))
    m.train_step()


def test_set_value_of_a_computed_node(m):
    with pytest.raises(ot.GraphError, match=rf"cannot set the value of node {q('pred')}.*only inputs"):
        m.g.set_value(m.pred, np.ones((5, 1)))
    m.train_step()


def test_missing_input_value_at_forward(m):
    m.g.set_value(m.x, X)
    with pytest.raises(ot.GraphError, match=rf"input {q('y')} has no value.*set_value\({q('y')}"):
        m.g.forward_node(m.loss)
    m.train_step()


def test_backward_on_a_non_scalar_loss(m):
    m.g.set_value(m.x, X)
    m.g.forward_node(m.pred)
    with pytest.raises(ot.GraphError, match=rf"scalar.*{q('pred')}.*\(5, 1\)"):
        m.g.backward_nodes([m.w], m.pred)
    m.train_step()


@pytest.mark.parametrize(
    ("value", "what"),
    [
        (np.array([["a", "b", "c"]]), "dtype <U1"),
        (np.ones((2, 3)) * 1j, "dtype complex128"),
        (np.array([[1, "a", None]], dtype=object), "dtype object"),
        ([[1.0, 2.0], [3.0]], "not an array"),
    ],
)
def test_values_that_are_not_real_numbers(m, value, what):
    with pytest.raises(ot.GraphError, match=rf"{q('x')}.*{re.escape(what)}"):
        m.g.set_value(m.x, value)
    m.train_step()


def test_floats_into_an_integer_input(m):
    with pytest.raises(ot.GraphError, match=rf"{q('labels')} must hold integers.*int64"):
        m.g.set_value(m.labels, np.array([0.0, 1.5, 2.0]))
    with pytest.raises(ot.GraphError, match=rf"{q('labels')} must hold integers"):
        m.g.set_value(m.labels, np.array([0.0, np.nan]))
    m.g.set_value(m.labels, np.array([0.0, 1.0, 2.0]))  # whole numbers are fine
    assert m.g.get_node_value(m.labels).dtype == np.int64
    m.train_step()


def test_unsupported_dtypes_at_declaration(m):
    with pytest.raises(ot.GraphError, match=rf"input {q('c')}.*complex128"):
        m.g.input("c", shape=(3,), dtype="complex128")
    with pytest.raises(ot.GraphError, match=r"float type.*'int32'"):
        ot.Graph(dtype="int32")
    with pytest.raises(ot.GraphError, match=r"dtype <U1"):
        m.g.constant(np.array(["a"]))
    m.train_step()


# ---------------------------------------------------------------- non-finite values


def test_nan_in_an_input_propagates_and_is_located(m):
    g = m.g
    bad = X.copy()
    bad[2, 1] = np.nan
    g.set_value(m.x, bad)
    g.set_value(m.y, Y)
    assert np.isnan(g.forward_node(m.loss))
    assert g.first_nonfinite(m.loss) == m.x
    assert g.first_nonfinite(m.pred) == m.x

    g.set_anomaly_detection(True)
    g.set_value(m.x, bad)
    with pytest.raises(ot.NonFiniteError, match=rf"{q('pred')}.*NaN.*input {q('x')}") as info:
        g.forward_node(m.loss)
    assert info.value.node_name == "pred"
    assert "from finite inputs" not in str(info.value)  # regression: the message used to claim so
    m.train_step()


# ---------------------------------------------------------------- names and handles


def test_unknown_op_argument_has_a_did_you_mean(m):
    with pytest.raises(ot.GraphError, match=r"sum has no argument 'axes'; did you mean 'axis'\?"):
        m.g.sum(m.x, axes=1)
    with pytest.raises(ot.GraphError, match=r"tanh has no argument 'foo'"):
        m.g.tanh(m.x, foo=2)
    m.train_step()


@pytest.mark.parametrize(
    ("build", "shown"),
    ids=["sum-axis", "reshape-shape", "dropout-p"],
    argvalues=[
        (lambda g, x: g.sum(x, axis="a", name="total"), r"node 'total' \(sum of 'x' \(N, 3\), axis='a'\)"),
        (lambda g, x: g.reshape(x, shape=("a", 3), name="total"), r"node 'total' \(reshape of 'x' \(N, 3\), shape="),
        (lambda g, x: g.dropout(x, p="a", name="total"), r"'total' dropout\('x' \(N, 3\), p='a'\)"),
    ],
)
def test_op_argument_of_the_wrong_type(m, build, shown):
    # Regression: these escaped as bare TypeErrors from inside the shape rule or the composite.
    with pytest.raises(ot.GraphError, match=rf"cannot build {shown}"):
        build(m.g, m.x)
    m.train_step()


def test_unknown_dtype_names():
    # Regression: np.dtype's bare TypeError escaped.
    with pytest.raises(ot.GraphError, match=r"graph: 'nope' is not a dtype"):
        ot.Graph(dtype="nope")
    g = ot.Graph()
    with pytest.raises(ot.GraphError, match=r"input 'i': 'nope' is not a dtype"):
        g.input("i", shape=(None,), dtype="nope")


def test_unknown_node_name_has_a_did_you_mean(m):
    with pytest.raises(ot.GraphError, match=r"no node named 'los'; did you mean 'loss'\?"):
        m.g.node("los")
    with pytest.raises(ot.GraphError, match=r"no node named 'pred2'; did you mean 'pred'\?"):
        m.g.forward_node("pred2")
    with pytest.raises(ot.GraphError, match=r"no node named 'w0'; did you mean 'w'\?"):
        m.g.backward_nodes(["w0"], m.loss)
    with pytest.raises(ot.GraphError, match=r"no node named 'zzz'$"):
        m.g.detach_node("zzz")
    m.train_step()


@pytest.mark.parametrize("kind", ["input", "parameter", "op"])
def test_duplicate_names(m, kind):
    make = {
        "input": lambda: m.g.input("pred", shape=(3,)),
        "parameter": lambda: m.g.parameter("pred", shape=(3,)),
        "op": lambda: m.g.tanh(m.x, name="pred"),
    }[kind]
    with pytest.raises(
        ot.GraphError, match=rf"a node named {q('pred')} already exists \(node {q('pred')} \(linear\)\)"
    ):
        make()
    m.train_step()


def test_node_from_another_graph(m):
    other = ot.Graph(dtype="float64")
    z = other.input("z", shape=(None, 3))
    with pytest.raises(ot.GraphError, match=rf"{q('z')} belongs to another graph"):
        m.g.add(m.x, z)
    with pytest.raises(ot.GraphError, match=rf"{q('z')} belongs to another graph"):
        m.x + z
    with pytest.raises(ot.GraphError, match=rf"{q('z')} belongs to another graph"):
        m.g.set_value(z, X)
    with pytest.raises(ot.GraphError, match=rf"{q('z')} belongs to another graph"):
        m.g.backward_nodes([z], m.loss)
    m.train_step()


def test_truth_value_of_a_node(m):
    with pytest.raises(ot.GraphError, match=rf"node {q('pred')} has no truth value.*g.where"):
        bool(m.pred)
    with pytest.raises(ot.GraphError, match=r"no truth value"):
        if m.x > 0:
            pass
    m.train_step()


def test_iterating_a_node(m):
    # Regression: iteration fell back to __getitem__ and built index nodes without end along the batch axis.
    before = len(m.g.nodes(include_hidden=True))
    with pytest.raises(ot.GraphError, match=rf"node {q('x')} cannot be iterated.*x\[i\]"):
        list(m.x)
    with pytest.raises(ot.GraphError, match=rf"node {q('w')} cannot be iterated"):
        _first, _second, _third = m.w
    assert len(m.g.nodes(include_hidden=True)) == before
    m.train_step()


def test_integer_nodes_cannot_be_gradient_targets(m):
    m.g.set_value(m.x, X)
    m.g.set_value(m.y, Y)
    m.g.forward_node(m.loss)
    with pytest.raises(ot.GraphError, match=rf"input {q('labels')} holds integers and cannot have a gradient"):
        m.g.backward_nodes([m.w, m.labels], m.loss)
    with pytest.raises(ot.GraphError, match=rf"input {q('labels')} holds integers"):
        m.g.grad(m.loss, m.labels)
    assert m.g.get_node_grad(m.w) is None
    m.train_step()


def test_non_node_inputs(m):
    with pytest.raises(ot.GraphError, match=r"op tanh: cannot use NoneType None as an input"):
        m.g.tanh(None)
    with pytest.raises(ot.GraphError, match=r"expected a NodeId \(or a node name\), got int 3"):
        m.g.forward_node(3)
    m.train_step()


# ---------------------------------------------------------------- failures at run time


def test_batch_sizes_that_disagree_at_run_time(m):
    g = m.g
    g.set_value(m.x, X)  # 5 samples
    g.set_value(m.y, Y[:4])  # 4 targets
    with pytest.raises(ot.GraphError, match=r"failed on inputs .*\(5, 1\).*'y' \(4, 1\)") as info:
        g.forward_node(m.loss)
    assert not isinstance(info.value.__cause__, ot.GraphError)  # the numpy error is kept as the cause
    m.train_step()


def test_runtime_reshape_of_wrong_size(m):
    r = m.g.reshape(m.x, shape=(4, 4), name="r")  # (N, 3) -> (4, 4) holds only for N = 16/3
    m.g.set_value(m.x, X)
    with pytest.raises(ot.GraphError, match=rf"node {q('r')} \(reshape\) failed on inputs {q('x')} \(5, 3\)"):
        m.g.forward_node(r)
    m.train_step()


def test_bad_index_values_at_run_time(m):
    emb = m.g.parameter("emb", shape=(4, 2))
    looked_up = m.g.embedding(m.labels, emb, name="looked_up")
    m.g.set_value(m.labels, np.array([0, 7]))
    with pytest.raises(ot.GraphError, match=rf"node {q('looked_up')} \(embedding\) failed.*\[0, 4\)"):
        m.g.forward_node(looked_up)
    m.g.set_value(m.labels, np.array([0, 3]))
    assert m.g.forward_node(looked_up).shape == (2, 2)
    m.train_step()


# ---------------------------------------------------------------- op arguments checked


def test_take_along_with_float_indices_raises(m):
    idx = m.g.input("idx", shape=(None, 1))  # float, by mistake
    picked = m.g.take_along(m.x, idx, axis=1, name="picked")
    m.g.set_value(m.x, X)
    m.g.set_value(idx, np.full((5, 1), 0.7))
    with pytest.raises(ot.GraphError, match=r"'picked'.*integer"):
        m.g.forward_node(picked)


def test_gelu_with_an_unknown_approximation_raises(m):
    m.g.set_value(m.x, X)
    with pytest.raises(ot.GraphError, match=r"approximate"):
        m.g.forward_node(m.g.gelu(m.x, approximate="tahn", name="act"))


def test_softplus_beta_and_one_hot_classes_are_checked(m):
    with pytest.raises(ot.ShapeError, match="beta must be positive"):
        m.g.softplus(m.x, beta=0)
    labels = m.g.input("labels_bad", shape=(None,), dtype="int64")
    with pytest.raises(ot.ShapeError, match="num_classes must be a positive integer"):
        m.g.one_hot(labels, num_classes="a")
