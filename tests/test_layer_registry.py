"""The layer registry (onlytorch/nn/layers.py): one declaration per layer with parameters, read by
the spec schema, the compiler and the docs. A layer declared here, in this file alone, is usable
from a spec, listed by the JSON Schema and the docs, and reported on with located diagnostics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import yaml
from pydantic import Field

from onlytorch import nn
from onlytorch.compile import compile_text
from onlytorch.graph import Graph
from onlytorch.node import NodeId
from onlytorch.spec.docs import render_reference
from onlytorch.spec.schema import json_schema

# ---------------------------------------------------------------- a new layer, declared here alone


class ScaleOptions(nn.LayerOptions):
    init: str = Field("ones", description="the initialiser of the per-feature factors")


class Scale(nn.Module):
    """y = x * weight, one factor per feature."""

    def __init__(self, g: Graph, features: int, init: str, name: str) -> None:
        super().__init__(g, name, "scale")
        self.weight = self._param("weight", (features,), init)

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return x * self.weight


def _declare_scale() -> nn.LayerDef:
    @nn.layer(
        "scale",
        ScaleOptions,
        doc="x * w, one learned factor per feature",
        forms=("scale", "{scale: {init: ones}}"),
        params=lambda d, o: {"weight": (d,)},
        example="{scale: {init: ones}}",
    )
    def scale(g: Graph, x: NodeId, o: ScaleOptions, name: str) -> Scale:
        return Scale(g, x.shape[-1], o.init, name)

    return scale


@pytest.fixture
def scale_layer() -> Iterator[nn.LayerDef]:
    defn = _declare_scale()
    try:
        yield defn
    finally:
        nn.unregister("scale")
    assert "scale" not in nn.LAYERS


SPEC = """version: 1
name: scaled
data:
  train: {source: synthetic.xor, n: 64}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 4}, LAYER, tanh, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 2
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def _spec(layer: str) -> str:
    return SPEC.replace("LAYER", layer)


def _column(text: str, marker: str) -> tuple[int, int]:
    offset = text.index(marker)
    return text.count("\n", 0, offset) + 1, offset - (text.rfind("\n", 0, offset) + 1) + 1


@pytest.mark.parametrize("item", ["scale", "{scale: {}}", "{scale: null}", "{scale: {init: ones}}"])
def test_a_new_layer_compiles_and_owns_its_parameter(scale_layer: nn.LayerDef, item: str) -> None:
    compiled, report = compile_text(_spec(item), "scaled.yaml")
    assert compiled is not None, report.render()
    assert not report.errors
    params = {compiled.graph.record(p).name: compiled.graph.record(p) for p in compiled.modules["net"].params}
    assert "net.1.weight" in params, sorted(params)
    weight = params["net.1.weight"]
    assert weight.shape == (4,)
    np.testing.assert_array_equal(weight.value, np.ones(4))


def test_a_new_layer_with_another_initialiser(scale_layer: nn.LayerDef) -> None:
    compiled, report = compile_text(_spec("{scale: {init: zeros}}"), "scaled.yaml")
    assert compiled is not None, report.render()
    weight = compiled.graph.record("net.1.weight")
    np.testing.assert_array_equal(weight.value, np.zeros(4))


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("{scale: {initt: ones}}", "scale takes init; unknown: initt"),
        ("{scale: 3}", "scale takes options as a mapping, e.g. {scale: {init: ones}}"),
        ("{scale: {init: 3}}", "scale: init: Input should be a valid string"),
        ("{scale: {init: nope}}", "layer 1 of module net: unknown initialiser 'nope'"),
    ],
)
def test_a_wrong_option_of_a_new_layer_is_located(scale_layer: nn.LayerDef, item: str, message: str) -> None:
    text = _spec(item)
    compiled, report = compile_text(text, "scaled.yaml")
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-MODULE", *_column(text, item)), report.render()
    assert d.message.startswith(message), d.message


def test_a_new_layer_is_suggested_for_a_typo(scale_layer: nn.LayerDef) -> None:
    text = _spec("scal")
    _, report = compile_text(text, "scaled.yaml")
    (d,) = report.errors
    assert (d.code, d.message, d.hint) == ("E-MODULE", "unknown layer 'scal'", "did you mean 'scale'?")


def _layer_alternatives() -> list[dict[str, Any]]:
    schema = json_schema()
    return schema["$defs"]["ModuleSpec"]["properties"]["layers"]["anyOf"][0]["items"]["anyOf"]


def test_the_json_schema_lists_a_new_layer_and_its_options(scale_layer: nn.LayerDef) -> None:
    (alt,) = [a for a in _layer_alternatives() if "scale" in a.get("properties", {})]
    assert alt["required"] == ["scale"] and alt["additionalProperties"] is False
    options = alt["properties"]["scale"]["anyOf"]
    assert {"type": "null"} in options  # every option has a default: {scale: null} is the bare name
    (model,) = [o for o in options if o.get("type") == "object"]
    assert model["properties"]["init"]["default"] == "ones"
    assert model["properties"]["init"]["description"]
    assert model["additionalProperties"] is False


def test_the_json_schema_checks_a_new_layer_s_options(scale_layer: nn.LayerDef) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    good = yaml.safe_load(_spec("{scale: {init: ones}}"))
    assert list(validator.iter_errors(good)) == []
    bad = yaml.safe_load(_spec("{scale: {initt: ones}}"))
    assert list(validator.iter_errors(bad))


def test_the_docs_list_a_new_layer_and_its_options(scale_layer: nn.LayerDef) -> None:
    ref = render_reference()
    assert "| `scale` | `scale` or `{scale: {init: ones}}` | x * w, one learned factor per feature |" in ref
    section = ref.split("#### `scale` options", 1)[1]
    assert "| `init` | str | `'ones'` | the initialiser of the per-feature factors |" in section


def test_an_unregistered_layer_is_gone_everywhere() -> None:
    _declare_scale()
    nn.unregister("scale")
    assert not [a for a in _layer_alternatives() if "scale" in a.get("properties", {})]
    assert "#### `scale` options" not in render_reference()
    _, report = compile_text(_spec("scale"), "scaled.yaml")
    assert [d.message for d in report.errors] == ["unknown layer 'scale'"]


def test_a_layer_is_declared_once(scale_layer: nn.LayerDef) -> None:
    with pytest.raises(ValueError, match="declared twice"):
        _declare_scale()


# ---------------------------------------------------------------- the built-in declarations


def test_the_built_in_layers_are_declared() -> None:
    assert list(nn.LAYERS)[:4] == ["linear", "batch_norm", "layer_norm", "embedding"]
    for name, defn in nn.LAYERS.items():
        assert defn.name == name and defn.doc and defn.forms
        for key, f in defn.options.model_fields.items():
            assert f.description, f"{name}.{key} has no description"


@pytest.mark.parametrize(
    ("layer", "arg", "message"),
    [
        ("linear", None, "linear needs a positive output size, e.g. {linear: 64}; got None"),
        ("linear", True, "linear needs a positive output size, e.g. {linear: 64}; got True"),
        ("linear", "8", "linear needs a positive output size, e.g. {linear: 64}; got '8'"),
        ("linear", 2.5, "linear needs a positive output size, e.g. {linear: 64}; got 2.5"),
        ("linear", {"bias": False}, "linear needs a positive output size, e.g. {linear: 64}; got None"),
        ("linear", {"out": 8, "foo": 1, "bar": 2}, "linear takes out, bias and init; unknown: foo, bar"),
        ("linear", {1: 2}, "linear takes out, bias and init; unknown: 1"),
        ("linear", {"out": 8, "bias": "no"}, "linear: bias must be true or false, got 'no'"),
        ("batch_norm", 0.1, "batch_norm takes options as a mapping, e.g. {batch_norm: {eps: 1.0e-5}}"),
        ("batch_norm", [1], "batch_norm takes options as a mapping, e.g. {batch_norm: {eps: 1.0e-5}}"),
        ("batch_norm", {"foo": 1}, "batch_norm takes momentum and eps; unknown: foo"),
        ("batch_norm", {"eps": True}, "batch_norm: eps must be a number, not true"),
        ("layer_norm", 3, "layer_norm takes options as a mapping, e.g. {layer_norm: {eps: 1.0e-5}}"),
        ("embedding", None, "embedding takes {num: N, dim: D}, two positive integers"),
        ("embedding", {"num": 10}, "embedding takes {num: N, dim: D}, two positive integers"),
        ("embedding", {"num": 0, "dim": 4}, "embedding takes {num: N, dim: D}, two positive integers"),
        ("embedding", {"num": 2.0, "dim": 4}, "embedding takes {num: N, dim: D}, two positive integers"),
        ("embedding", {"num": True, "dim": 4}, "embedding takes {num: N, dim: D}, two positive integers"),
    ],
)
def test_option_problems_say_what_is_wrong(layer: str, arg: Any, message: str) -> None:
    with pytest.raises(nn.LayerOptionError) as e:
        nn.LAYERS[layer].parse(arg)
    assert str(e.value) == message


@pytest.mark.parametrize(
    ("layer", "arg", "options"),
    [
        ("linear", 8, {"out": 8, "bias": True, "init": "lecun_uniform"}),
        ("linear", {"out": 3, "bias": False, "init": "zeros"}, {"out": 3, "bias": False, "init": "zeros"}),
        ("batch_norm", None, {"momentum": 0.1, "eps": 1e-5}),
        ("batch_norm", {"eps": "1e-3"}, {"momentum": 0.1, "eps": 1e-3}),  # YAML 1.1 reads 1e-3 as a string
        ("layer_norm", {}, {"eps": 1e-5}),
        ("embedding", {"num": 10, "dim": 4}, {"num": 10, "dim": 4}),
    ],
)
def test_options_are_parsed(layer: str, arg: Any, options: dict[str, Any]) -> None:
    assert nn.LAYERS[layer].parse(arg).model_dump() == options


def test_the_declarations_give_shapes_and_widths() -> None:
    linear, bn, emb = nn.LAYERS["linear"], nn.LAYERS["batch_norm"], nn.LAYERS["embedding"]
    o = linear.parse({"out": 5})
    assert linear.params(3, o) == {"weight": (3, 5), "bias": (5,)} and linear.out_width(3, o) == 5
    assert linear.planned(3, o) == 20
    assert linear.params(3, linear.parse({"out": 5, "bias": False})) == {"weight": (3, 5)}
    assert bn.out_width(7, bn.parse(None)) == 7 and bn.params(7, bn.parse(None)) == {"weight": (7,), "bias": (7,)}
    o = emb.parse({"num": 10, "dim": 4})
    assert emb.out_width(None, o) is None and emb.params(None, o) == {"weight": (10, 4)}


def test_the_built_in_builders_build_the_nn_modules() -> None:
    g = Graph(seed=0)
    x = g.input("x", shape=(None, 3))
    lin = nn.LAYERS["linear"].build(g, x, nn.LAYERS["linear"].parse(5), "m.0")
    assert isinstance(lin, nn.Linear) and g.record(lin.weight).name == "m.0.weight"
    assert lin(x).shape == (None, 5)
    bn = nn.LAYERS["batch_norm"].build(g, x, nn.LAYERS["batch_norm"].parse({"momentum": 0.3}), "m.1")
    assert isinstance(bn, nn.BatchNorm) and bn.momentum == 0.3
    ln = nn.LAYERS["layer_norm"].build(g, x, nn.LAYERS["layer_norm"].parse({"eps": 0.01}), "m.2")
    assert isinstance(ln, nn.LayerNorm) and ln.eps == 0.01


def test_parameter_free_layers_are_the_one_input_ops() -> None:
    from onlytorch.ops.registry import public_ops

    ops = public_ops()
    assert nn.is_op_layer(ops["relu"]) and nn.is_op_layer(ops["dropout"])
    assert not nn.is_op_layer(ops["argmax"])  # no derivative
    assert not nn.is_op_layer(ops["add"])  # two inputs
    assert nn.op_keeps_width(ops["dropout"], 0.1, 8)
    assert nn.op_keeps_width(ops["tanh"], None, 8)
    assert not nn.op_keeps_width(ops["sum"], None, 8)
    assert not nn.op_keeps_width(ops["leaky_relu"], 0.2, 8)  # the plan stops at an op with arguments


def test_the_memory_plan_goes_through_a_new_layer(scale_layer: nn.LayerDef) -> None:
    from onlytorch import footprint

    # scale keeps the width (its declaration gives no width): the plan follows it past the huge
    # linear layer and refuses the layer list before anything is allocated, at the tanh whose
    # output (with the gradients a backward keeps) passes the limit
    text = SPEC.replace("[{linear: 4}, LAYER, tanh, {linear: 1}]", "[scale, {linear: 67108864}, tanh, {linear: 1}]")
    compiled, report = compile_text(text, "scaled.yaml", max_memory=footprint.parse_size("16GiB"))
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line, d.column) == ("E-MEMORY", *_column(text, "tanh")), report.render()
    assert d.message.startswith("layer 2 of module net (tanh): with the parameters before it")


def test_a_required_option_is_named_when_missing() -> None:
    class GainOptions(nn.LayerOptions):
        k: int = Field(description="how many factors")

    @nn.layer("gain_test", GainOptions, doc="a test layer", params=lambda d, o: {"weight": (o.k,)})
    def gain(g: Graph, x: NodeId, o: GainOptions, name: str) -> Scale:
        return Scale(g, o.k, "ones", name)

    try:
        with pytest.raises(nn.LayerOptionError, match=r"^gain_test needs the option 'k'$"):
            gain.parse({})
        with pytest.raises(nn.LayerOptionError, match=r"^gain_test: k must be a number, not true$"):
            gain.parse({"k": True})
        assert gain.parse({"k": 3}).k == 3
    finally:
        nn.unregister("gain_test")
