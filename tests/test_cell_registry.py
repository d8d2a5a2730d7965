"""The recurrent-cell registry (onlytorch/nn/cells.py): one declaration per cell kind, read by the
spec schema (the allowed values of ``cell``), the compiler and the docs. A cell declared here, in
this file alone, is usable from a spec through ``scan(cell, xs, h0)``, listed by the JSON Schema and
the docs, and gone from all three once unregistered."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import yaml

from onlytorch import nn
from onlytorch.compile import compile_text
from onlytorch.graph import Graph
from onlytorch.node import NodeId
from onlytorch.spec.docs import render_reference
from onlytorch.spec.schema import json_schema

# ---------------------------------------------------------------- a new cell, declared here alone


class ScaledRNN(nn.Module):
    """h' = tanh(x W + h U + b) * 0.5"""

    def __init__(self, g: Graph, in_width: int, hidden: int, name: str) -> None:
        super().__init__(g, name, "scaled_rnn")
        self.w = self._param("w", (in_width, hidden), "xavier_uniform")
        self.u = self._param("u", (hidden, hidden), "xavier_uniform")
        self.b = self._param("b", (hidden,), "uniform")

    def __call__(self, x: NodeId, h: NodeId) -> NodeId:  # type: ignore[override]
        g = self.g
        return g.tanh(g.matmul(x, self.w) + g.matmul(h, self.u) + self.b) * 0.5


def _declare_scaled_rnn() -> nn.CellDef:
    @nn.cell(
        "scaled_rnn",
        doc="h' = tanh(x W + h U + b) * 0.5",
        params=lambda d, h: {"w": (d, h), "u": (h, h), "b": (h,)},
    )
    def scaled_rnn(g: Graph, in_width: int, hidden: int, name: str) -> ScaledRNN:
        return ScaledRNN(g, in_width, hidden, name)

    return scaled_rnn


@pytest.fixture
def scaled_rnn() -> Iterator[nn.CellDef]:
    defn = _declare_scaled_rnn()
    try:
        yield defn
    finally:
        nn.unregister_cell("scaled_rnn")
    assert "scaled_rnn" not in nn.CELLS


SPEC = """version: 1
name: scaled-rnn
data:
  train: {source: synthetic.sine, n: 16, length: 10}
  batch_size: 4
inputs:
  x: {shape: [5, 1], from: train.x, window: 5}
  y: {shape: [5, 1], from: train.y, window: 5}
  h0: {shape: [HIDDEN], carry: h_last}
modules:
  cell: {cell: CELL, hidden: HIDDEN}
  readout: [{linear: 1}]
nodes:
  hs: scan(cell, x, h0)
  h_last: hs[:, -1]
  pred: readout(hs)
losses:
  loss: mse(pred, y)
optimizers:
  opt: {type: adam, lr: 3.0e-3, params: [cell, readout]}
train:
  steps: 2
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def _spec(cell: str = "scaled_rnn", hidden: int = 8) -> str:
    return SPEC.replace("CELL", cell).replace("HIDDEN", str(hidden))


def _column(text: str, marker: str) -> tuple[int, int]:
    offset = text.index(marker)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


def test_a_new_cell_runs_through_scan_and_owns_its_parameters(scaled_rnn: nn.CellDef) -> None:
    compiled, report = compile_text(_spec(), "scaled.yaml")
    assert compiled is not None, report.render()
    assert not report.errors and not report.warnings, report.render()
    g = compiled.graph
    info = compiled.modules["cell"]
    assert info.kind == "cell" and info.calls == 5  # one call per step of the window
    shapes = {g.record(p).name: g.record(p).shape for p in info.params}
    assert shapes == {"cell.w": (1, 8), "cell.u": (8, 8), "cell.b": (8,)}
    assert set(shapes) <= {g.record(p).name for p in compiled.optimizer_params["opt"]}

    # the unrolled graph computes the declared recurrence, step by step
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(4, 5, 1)).astype(np.float32)
    h = rng.normal(size=(4, 8)).astype(np.float32)
    g.set_value(compiled.inputs["x"], xs)
    g.set_value(compiled.inputs["h0"], h)
    hs = g.forward_node(compiled.names["hs"])
    w, u, b = (g.require_value(n) for n in ("cell.w", "cell.u", "cell.b"))
    expected = []
    for t in range(5):
        h = np.tanh(xs[:, t] @ w + h @ u + b) * 0.5
        expected.append(h)
    np.testing.assert_allclose(hs, np.stack(expected, axis=1), rtol=1e-5, atol=1e-6)

    # and the loss reaches every parameter of the cell
    g.set_value(compiled.inputs["y"], rng.normal(size=(4, 5, 1)).astype(np.float32))
    g.forward_node(compiled.losses["loss"])
    g.backward_nodes(info.params, compiled.losses["loss"])
    for p in info.params:
        grad = g.get_node_grad(p)
        assert grad is not None and np.abs(grad).sum() > 0, g.record(p).name


def test_a_cell_built_as_a_function_owns_the_parameters_it_made() -> None:
    """A builder may return a plain function (x, h) -> h': the parameters it made are the module's."""

    def build(g: Graph, in_width: int, hidden: int, name: str) -> object:
        w = g.parameter(f"{name}.w", shape=(in_width + hidden, hidden), init="xavier_uniform")
        return lambda x, h: g.tanh(g.matmul(g.concat([x, h], axis=-1), w))

    nn.cell("concat_rnn", doc="h' = tanh([x, h] W)", params=lambda d, h: {"w": (d + h, h)})(build)  # type: ignore[arg-type]
    try:
        compiled, report = compile_text(_spec("concat_rnn", 4), "concat.yaml")
        assert compiled is not None, report.render()
        params = compiled.modules["cell"].params
        assert [(compiled.graph.record(p).name, compiled.graph.record(p).shape) for p in params] == [("cell.w", (5, 4))]
    finally:
        nn.unregister_cell("concat_rnn")


def test_a_misspelt_cell_is_located_with_a_suggestion(scaled_rnn: nn.CellDef) -> None:
    text = _spec("scaled_rn")
    compiled, report = compile_text(text, "scaled.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-TYPE", *_column(text, "scaled_rn")), report.render()
    assert d.message == "modules.cell.cell: Input should be 'rnn', 'gru', 'lstm' or 'scaled_rnn'"
    assert d.hint == "did you mean 'scaled_rnn'?"


def test_a_new_cell_too_large_is_refused_before_it_is_allocated(scaled_rnn: nn.CellDef) -> None:
    # no declared bound: the weight matrices stacked, (D + H, H)
    assert scaled_rnn.checked_shape(1, 20000) == (20001, 20000)
    text = _spec(hidden=20000)
    compiled, report = compile_text(text, "scaled.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-MODULE", *_column(text, "scan(cell")), report.render()
    assert d.message == (
        "cell cell would need a parameter of 400,020,000 values (shape (20001, 20000)); the limit is 134,217,728"
    )


def _cell_field() -> dict:
    return json_schema()["$defs"]["ModuleSpec"]["properties"]["cell"]


def test_the_json_schema_lists_a_new_cell(scaled_rnn: nn.CellDef) -> None:
    field = _cell_field()
    assert {"enum": ["rnn", "gru", "lstm", "scaled_rnn"], "type": "string"} in field["anyOf"]
    assert (
        field["description"]
        == "a recurrent cell called as cell(x, h), or cell(x, h, c) for a cell with several states: rnn, gru, lstm or scaled_rnn"
    )
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    assert list(validator.iter_errors(yaml.safe_load(_spec()))) == []
    assert list(validator.iter_errors(yaml.safe_load(_spec("scaled_rn"))))


def test_the_docs_list_a_new_cell(scaled_rnn: nn.CellDef) -> None:
    ref = render_reference()
    assert "| `scaled_rnn` | h' = tanh(x W + h U + b) * 0.5 | `w` (D, H), `u` (H, H), `b` (H) |" in ref
    assert (
        "a recurrent cell called as cell(x, h), or cell(x, h, c) for a cell with several states: rnn, gru, lstm or scaled_rnn |"
        in ref
    )


def test_an_unregistered_cell_is_gone_everywhere() -> None:
    _declare_scaled_rnn()
    nn.unregister_cell("scaled_rnn")
    assert {"enum": ["rnn", "gru", "lstm"], "type": "string"} in _cell_field()["anyOf"]
    ref = render_reference()
    assert (
        "`scaled_rnn`" not in ref
        and "a recurrent cell called as cell(x, h), or cell(x, h, c) for a cell with several states: rnn, gru or lstm |"
        in ref
    )
    _, report = compile_text(_spec(), "scaled.yaml")
    assert [d.message for d in report.errors] == ["modules.cell.cell: Input should be 'rnn', 'gru' or 'lstm'"]


def test_a_cell_is_declared_once(scaled_rnn: nn.CellDef) -> None:
    with pytest.raises(ValueError, match="declared twice"):
        _declare_scaled_rnn()


def test_the_docs_name_the_parameters_when_their_shapes_are_no_formula() -> None:
    @nn.cell("halved_test", doc="a test cell", params=lambda d, h: {"w": (d, h // 2)})
    def halved(g: Graph, in_width: int, hidden: int, name: str) -> ScaledRNN:
        return ScaledRNN(g, in_width, hidden, name)

    try:
        assert "| `halved_test` | a test cell | `w` |" in render_reference()
    finally:
        nn.unregister_cell("halved_test")


# ---------------------------------------------------------------- the built-in declarations


def test_the_built_in_cells_are_declared_in_order() -> None:
    assert list(nn.CELLS)[:2] == ["rnn", "gru"]  # the order E-TYPE lists them in
    for name, defn in nn.CELLS.items():
        assert defn.name == name and defn.doc


@pytest.mark.parametrize(("kind", "module"), [("rnn", nn.RNNCell), ("gru", nn.GRUCell)])
def test_the_built_in_declarations_give_the_built_shapes(kind: str, module: type) -> None:
    g = Graph(seed=0)
    defn = nn.CELLS[kind]
    cell = defn.build(g, 3, 5, "c")
    assert isinstance(cell, module)
    built = {g.record(p).name.removeprefix("c."): g.record(p).shape for p in cell.parameters()}
    assert built == defn.params(3, 5)


@pytest.mark.parametrize("kind", ["rnn", "gru"])
def test_both_built_in_cells_are_checked_against_the_gru_sized_bound(kind: str) -> None:
    # what validate checked before the registry, for either cell: (D + H, 3H)
    assert nn.CELLS[kind].checked_shape(3, 5) == (8, 15)


def test_a_gru_too_large_gives_the_message_it_gave_before() -> None:
    text = _spec("gru", 10000)
    compiled, report = compile_text(text, "gru.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-MODULE", *_column(text, "scan(cell")), report.render()
    assert d.message == (
        "cell cell would need a parameter of 300,030,000 values (shape (10001, 30000)); the limit is 134,217,728"
    )
