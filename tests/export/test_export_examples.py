"""ONNX export of the main node of the MLP-style example specs (xor, digits, multitask's heads,
gan_ring's and wgan_gp's generators, the actor of a2c/ppo, dqn's Q network, tbptt_sine's GRU
step): the default node rule picks the documented node (docs/export.md), the file passes
``onnx.checker.check_model(full_check=True)``, and onnxruntime's outputs equal onlytorch's
eval-mode values (under no_grad, as ``onlytorch eval`` computes them) to 1e-5 in float32 on 100
inputs, with the batch dimension dynamic (100 rows, then 1).

Checkpoints are written as training writes them (``Trainer.state()`` saved by
``onlytorch.checkpoint``), from the spec's initial weights moved by noise: linear layers start with
zero biases, and a mapping that dropped a bias would pass on them. The reference values are
computed from the spec's own nodes and module calls, not from the exporter's choice of nodes."""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onlytorch import checkpoint as ckpt
from onlytorch.app import load_spec
from onlytorch.compiler.result import Compiled
from onlytorch.export import export_onnx
from onlytorch.train import Trainer

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
N = 100
TOL = 1e-5


def noisy_checkpoint(spec: pathlib.Path, path: pathlib.Path, noise: float = 0.3) -> pathlib.Path:
    """The spec's initial weights, each parameter moved by N(0, noise), saved as training saves them."""
    trainer = Trainer(load_spec(spec).compiled, data={})
    state = trainer.state()
    rng = np.random.default_rng(7)
    for key, value in state.items():
        if key.startswith("param/"):
            state[key] = (value + noise * rng.normal(size=value.shape)).astype(value.dtype)
    ckpt.save(path, state)
    return path


def restored(spec: pathlib.Path, checkpoint: pathlib.Path) -> Compiled:
    compiled = load_spec(spec).compiled
    Trainer(compiled, data={}).restore_weights(ckpt.load(checkpoint))
    return compiled


# How each example's reference is computed in onlytorch: (graph) input name -> (output name, node).
Reference = Callable[[Compiled], tuple[dict[str, Any], dict[str, Any]]]


def named(*names: str) -> Reference:
    def ref(c: Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(c.inputs), {n: c.names[n] for n in names}

    return ref


def module_calls(*calls: tuple[str, str]) -> Reference:
    """Outputs MODULE(NODE) as new calls of the spec's modules."""

    def ref(c: Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
        return dict(c.inputs), {f"{m}({arg})": c.modules[m].call(c.names[arg]) for m, arg in calls}

    return ref


def cell_step(module: str, width: int, hidden: int) -> Reference:
    def ref(c: Compiled) -> tuple[dict[str, Any], dict[str, Any]]:
        g = c.graph
        x, h = g.input("test.x", (None, width)), g.input("test.h", (None, hidden))
        return {"x": x, "h": h}, {f"{module}.h": c.modules[module].call(x, h)}

    return ref


EXAMPLES: dict[str, tuple[Reference, list[str]]] = {
    # spec: (its reference, the ONNX inputs in order)
    "xor": (named("logits"), ["x"]),
    "digits": (named("logits"), ["x"]),
    "multitask": (module_calls(("cls_head", "h"), ("reg_head", "h")), ["x"]),
    "gan_ring": (named("fake"), ["z"]),
    "wgan_gp": (named("fake"), ["z"]),
    "a2c_cartpole": (named("logits"), ["obs"]),
    "ppo_cartpole": (named("logits"), ["obs"]),
    "dqn_cartpole": (named("q"), ["s"]),
    "tbptt_sine": (cell_step("cell", 1, 32), ["x", "h"]),
}


def feeds_for(session: ort.InferenceSession, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    out = {}
    for i in session.get_inputs():
        dims = [n if not isinstance(d, int) else d for d in i.shape]
        out[i.name] = rng.normal(size=dims).astype(np.float32)
    return out


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_the_main_node_exports_and_matches_onnxruntime(name: str, tmp_path: pathlib.Path) -> None:
    spec = SPECS / f"{name}.yaml"
    reference, inputs = EXAMPLES[name]
    checkpoint = noisy_checkpoint(spec, tmp_path / "ckpt.npz")
    result = export_onnx(spec, checkpoint, tmp_path / "model.onnx")

    compiled = restored(spec, checkpoint)
    graph_inputs, outputs = reference(compiled)
    assert result.outputs == list(outputs), result.outputs
    assert result.inputs == inputs

    model = onnx.load(str(result.path))
    onnx.checker.check_model(model, full_check=True)
    assert model.ir_version == 8 and [(o.domain, o.version) for o in model.opset_import] == [("", 17)]
    for value in [*model.graph.input, *model.graph.output]:
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch", value
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # parameters as float32 initializers under their own names (index constants are int64)
    kinds = {t.name: t.data_type for t in model.graph.initializer}
    assert set(kinds.values()) <= {onnx.TensorProto.FLOAT, onnx.TensorProto.INT64}
    params = [p.name for p in compiled.graph.parameters() if p.name in kinds]
    assert params and all(kinds[p] == onnx.TensorProto.FLOAT for p in params)

    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == inputs
    feeds = feeds_for(session, N, np.random.default_rng(0))
    got = session.run(result.outputs, feeds)

    g = compiled.graph
    with g.no_grad():
        for key, value in feeds.items():
            g.set_value(graph_inputs[key], value)
        want = g.forward_node(list(outputs.values()))
    for out, a, b in zip(result.outputs, got, want):
        assert a.shape == b.shape, (out, a.shape, b.shape)
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=out)
        assert np.abs(b).max() > 0.05  # not a vacuous comparison of zeros

    one = session.run(result.outputs, {k: v[:1] for k, v in feeds.items()})
    for a, b in zip(one, got):
        np.testing.assert_allclose(a, b[:1], rtol=TOL, atol=TOL)


def test_digits_exports_dropout_as_the_identity(tmp_path: pathlib.Path) -> None:
    """digits' MLP has a dropout layer: in the exported (eval-mode) model it changes nothing, so
    the output equals the train-mode-free computation of the linear layers alone."""
    spec = SPECS / "digits.yaml"
    checkpoint = noisy_checkpoint(spec, tmp_path / "ckpt.npz")
    result = export_onnx(spec, checkpoint, tmp_path / "digits.onnx")
    state = ckpt.load(checkpoint)
    x = np.random.default_rng(3).normal(size=(N, 64)).astype(np.float32)
    h = np.maximum(x @ state["param/mlp.0.weight"] + state["param/mlp.0.bias"], 0)
    want = h @ state["param/mlp.3.weight"] + state["param/mlp.3.bias"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=TOL, atol=TOL)
    assert not any(n.op_type in ("Dropout", "RandomUniformLike") for n in onnx.load(str(result.path)).graph.node)
