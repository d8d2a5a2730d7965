"""Internal graph names (``tanh_5``, ``log_8``) never stand alone in a message about a graph
compiled from a spec: each message names the spec node first (``node 'h' (its tanh, graph node
tanh_5)``, ``the log (inside 'h') at names.yaml:14:3``), at every site that can name a node:
compile diagnostics (shape, dtype, released values), divergence, failures while training and
evaluating, anomaly detection, gradcheck, the Python API on a compiled graph, and export."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.compile import Compiled, compile_text
from onlytorch.errors import GraphError
from onlytorch.gradcheck import gradcheck
from onlytorch.graph import Graph
from onlytorch.node import NodeId
from onlytorch.train import Diverged, Trainer

BASE = """version: 1
name: names
dtype: float64
seed: 0
data:
  train: {source: synthetic.xor, n: 60, noise: 0.05}
  batch_size: 6
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 4}, tanh]
nodes:
  h: NODE
losses:
  loss: LOSS
optimizers:
  opt: {type: sgd, lr: 0.1, params: [net]}
train:
  steps: 3
  log_every: 1
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""

# an op's internal name: the op, an underscore, the node's index
INTERNAL = re.compile(r"\b([a-z][a-z0-9_]*_\d+)\b")


def spec(node: str, loss: str = "mean(h)") -> str:
    return BASE.replace("NODE", node).replace("LOSS", loss)


def compiled_from(text: str) -> Compiled:
    compiled, report = compile_text(text, "names.yaml")
    assert compiled is not None, report.render()
    return compiled


def diagnostics(text: str) -> list[tuple[str, int, int, str]]:
    compiled, report = compile_text(text, "names.yaml")
    assert compiled is None
    return [(d.code, d.line, d.column, d.message) for d in report.errors]


def assert_spec_names_first(message: str, g: Graph | None = None) -> None:
    """Every internal name in the message is a node of ``g`` that a spec node's definition built,
    and that spec node is named before it; without ``g``, no internal name at all."""
    for m in INTERNAL.finditer(message):
        assert g is not None, f"internal name {m.group(1)!r} in {message!r}"
        rec = next((n for n in g.records() if n.name == m.group(1)), None)
        assert rec is not None and rec.spec_node is not None, f"{m.group(1)!r} is no part of a spec node: {message!r}"
        assert f"'{rec.spec_node}'" in message[: m.start()], f"{m.group(1)!r} before its spec node: {message!r}"


def test_the_checker_catches_a_bare_internal_name() -> None:
    c = compiled_from(spec("tanh(x @ transpose(x)) * 2"))
    tanh = next(n for n in c.graph.records() if n.op is not None and n.op.name == "tanh")
    assert tanh.spec_node == "h" and not tanh.user_named
    with pytest.raises(AssertionError, match="before its spec node"):
        assert_spec_names_first(f"the first node is {tanh.name!r} (inside 'h')", c.graph)
    with pytest.raises(AssertionError, match="internal name"):
        assert_spec_names_first("cannot build node 'matmul_2'")
    assert_spec_names_first(f"node 'h' (its tanh, graph node {tanh.name})", c.graph)


# ------------------------------------------------------------------ compile diagnostics


def test_a_shape_error_inside_an_expression_names_the_spec_node() -> None:
    [d] = diagnostics(spec("tanh(x @ x)", "mean(net(x))"))
    assert d == (
        "E-SHAPE",
        14,
        11,
        "cannot build node 'h' (its matmul of 'x' (N, 2), 'x' (N, 2)): matmul of (N, 2) and (N, 2): "
        "inner dimensions 2 and N differ",
    )
    assert_spec_names_first(d[3])


def test_a_shape_error_in_a_composite_op_calls_the_other_parts_its_own() -> None:
    [d] = diagnostics(spec("cross_entropy(net(x) * 1, y)"))
    assert d == (
        "E-SHAPE",
        14,
        6,
        "cannot build node 'h': its cross_entropy(its mul (N, 4), 'y' (N, 1)): cross_entropy: class "
        "probabilities must have the logits' shape (N, 4), got (N, 1) (for class labels, declare the "
        "input with dtype='int64')",
    )
    assert_spec_names_first(d[3])


def test_a_dtype_error_names_the_spec_node_of_the_offending_part() -> None:
    [d] = diagnostics(spec("nll(net(x) * 2, y + 1)"))
    assert d == (
        "E-ARG",
        14,
        6,
        "nll needs integer labels; node 'h' (its add, graph node add_9) holds floats (declare the input "
        "with dtype='int64')",
    )


def test_grad_of_a_part_of_a_node_names_the_node() -> None:
    [d] = diagnostics(spec("sum(grad(sum(x * 2), y))"))
    assert d == (
        "E-ARG",
        14,
        10,
        "input 'y' is not reachable from node 'h' (its sum, graph node sum_4) (unrelated, or cut by a detach "
        "or stop_gradient); pass allow_unused=True to get None for it",
    )


def test_released_values_inside_a_node_are_named_by_it() -> None:
    text = (pathlib.Path(__file__).parent / "spec" / "broken" / "released_multitask.yaml").read_text()
    text = text.replace("  h: backbone(x)\n", "  h: sin(backbone(x))\n")
    [d] = diagnostics(text)
    assert d == (
        "E-RELEASED",
        29,
        11,
        "phase joint: backward 2 (reg_loss) needs values that backward 1 (cls_loss) releases: "
        "node 'h' (its tanh, graph node tanh_5), 'h'",
    )


# ------------------------------------------------------------------ running a compiled spec


def test_divergence_names_the_spec_node_and_where_it_is_defined() -> None:
    c = compiled_from(spec("log(net(x) - 2) * 2"))
    with pytest.raises(Diverged) as info:
        Trainer(c).run_iteration()
    message = str(info.value)
    assert message == (
        "training diverged at step 1, phase 'fit': loss 'loss' is nan; the first node whose value "
        "went NaN/inf is the log (inside 'h') at names.yaml:14:3 (graph node log_8)"
    )
    assert info.value.node == "log_8"  # the attribute keeps the graph's name (tools look it up)
    assert_spec_names_first(message, c.graph)


def test_divergence_at_a_named_node_gives_its_position() -> None:
    c = compiled_from(spec("log(net(x) - 2)"))
    with pytest.raises(Diverged) as info:
        Trainer(c).run_iteration()
    assert str(info.value).endswith("the first node whose value went NaN/inf is 'h' (names.yaml:14:3)")


def test_a_failing_op_while_training_names_the_spec_node_and_its_parts() -> None:
    c = compiled_from(spec("reshape(tanh(net(x)), [5, -1]) * 1"))
    with pytest.raises(GraphError) as info:
        Trainer(c).run_iteration()
    message = str(info.value)
    assert message == (
        "node 'h' (its reshape, graph node reshape_7) failed on inputs its tanh (6, 4): cannot reshape "
        "array of size 24 into shape (5,newaxis)"
    )
    assert_spec_names_first(message, c.graph)


def test_anomaly_detection_on_a_compiled_graph_names_the_spec_node() -> None:
    c = compiled_from(spec("log(net(x) - 2) * 2"))
    g = c.graph
    g.set_anomaly_detection(True)
    g.set_value("x", np.ones((3, 2)))
    with pytest.raises(GraphError) as info:
        g.forward_node(c.names["loss"])
    assert str(info.value) == "node 'h' (its log, graph node log_8) produced NaN from finite inputs (its sub)"


def test_gradcheck_of_a_part_of_a_spec_node_names_the_node() -> None:
    c = compiled_from(spec("sum(relu(x)) * 1"))
    g = c.graph
    total = next(n for n in g.records() if n.op is not None and n.op.name == "sum")
    g.set_value("x", np.zeros((2, 2)))  # relu's kink: analytic 0, central difference 0.5
    with pytest.raises(GraphError) as info:
        gradcheck(g, NodeId(g, total.index), [c.inputs["x"]])
    assert str(info.value).startswith("gradcheck of node 'h' (its sum, graph node sum_3) with respect to 'x': ")
    assert_spec_names_first(str(info.value), g)


def test_the_python_api_on_a_compiled_graph_names_spec_parts() -> None:
    c = compiled_from(spec("tanh(net(x)) * 2"))
    g = c.graph
    part = next(n for n in g.records() if n.op is not None and n.op.name == "tanh" and n.spec_node == "h")
    assert part.describe() == f"node 'h' (its tanh, graph node {part.name})"
    with pytest.raises(GraphError) as info:
        g.matmul(NodeId(g, part.index), c.inputs["x"])  # a node of the user's own: its name is theirs
    message = str(info.value)
    assert message.startswith(f"cannot build node 'matmul_{g.node_count()}' (matmul of node 'h' (its tanh, ")
    assert f"graph node {part.name}) (N, 4), 'x' (N, 2))" in message
    # a graph built without a spec keeps its messages
    plain = Graph()
    a = plain.input("a", shape=(None, 2))
    with pytest.raises(GraphError, match=r"^cannot build node 'matmul_1' \(matmul of 'a' \(N, 2\), 'a' \(N, 2\)\)"):
        plain.matmul(a, a)


# ------------------------------------------------------------------ the commands


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def test_eval_names_the_spec_node_of_a_failing_metric(tmp_path: pathlib.Path) -> None:
    text = spec("net(x)").replace(
        "  batch_size: 6\n", "  test: {source: synthetic.xor, n: 64, noise: 0.05}\n  batch_size: 6\n"
    )
    text = text.replace("optimizers:", "metrics:\n  odd: mean(reshape(h * 1, [3, -1]))\noptimizers:")
    text += "eval:\n  split: test\n  metrics: [odd]\n"
    path = tmp_path / "names.yaml"
    path.write_text(text)
    code, output = run("train", str(path), "--out", str(tmp_path / "run"), "-q", "--no-tensorboard")
    assert code == 1  # the final evaluation fails: 64 samples are no multiple of 3
    code, output = run("eval", str(path), "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.npz"))
    assert code == 1
    expected = (
        "node 'odd' (its reshape, graph node reshape_9) failed on inputs its mul (64, 4): cannot reshape "
        "array of size 256 into shape (3,newaxis)"
    )
    assert f"error: {expected}" in output, output
    assert_spec_names_first(output, compiled_from(text).graph)


def test_export_refusal_names_the_spec_node_and_where_it_is(tmp_path: pathlib.Path) -> None:
    pytest.importorskip("onnx")
    path = tmp_path / "ex.yaml"
    path.write_text(
        "version: 1\nname: ex\ninputs:\n  x: {shape: [3], from: noise.normal}\n"
        "modules:\n  net: [{linear: 4}, tanh, {linear: 2}]\n"
        "nodes:\n  out: categorical_sample(net(x) * 2) + 1\nlosses:\n  loss: mean(net(x))\n"
        "optimizers:\n  opt: {type: adam, lr: 0.01, params: [net]}\n"
        "train:\n  steps: 1\n  schedule:\n    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n"
    )
    code, output = run("train", str(path), "--out", str(tmp_path / "run"), "-q", "--no-tensorboard")
    assert code == 0, output
    ckpt = str(tmp_path / "run" / "checkpoints" / "last.npz")
    code, output = run("export", str(path), "--checkpoint", ckpt, "--output", str(tmp_path / "m.onnx"), "--node", "out")
    assert code == 2
    assert (
        "error: op 'categorical_sample' has no ONNX mapping: spec node 'out' (its categorical_sample, graph node "
        f"categorical_sample_10, in module 'net') at {path}:8:3 cannot be exported"
    ) in output, output
    assert not (tmp_path / "m.onnx").exists()
