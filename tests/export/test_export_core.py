"""The ONNX exporter's core: the Builder API mappings write to, errors that name the op and the
spec node and write nothing, --node choices with did-you-mean, the command's exit codes and
output, ``onlytorch ops`` saying whether an op exports, and onnx/onnxruntime staying unimported
until an export runs."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.export import ExportError, export_onnx
from onlytorch.export.builder import Builder, OnnxNode, apply, describe
from onlytorch.ops.registry import REGISTRY, defop
from onlytorch.ops.shapes import same

from .test_export_examples import SPECS, noisy_checkpoint, restored

XOR = SPECS / "xor.yaml"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def leftovers(folder: pathlib.Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix != ".npz" and p.suffix != ".yaml")


# ---------------------------------------------------------------- the Builder


def test_builder_names_constants_and_nodes() -> None:
    b = Builder()
    assert b.reserve("x") == "x"
    with pytest.raises(ValueError):
        b.reserve("x")
    assert b.fresh("x") == "x_1" and b.fresh("x") == "x_2" and b.fresh("t") == "t"
    one = b.scalar(1.0)
    assert b.scalar(1.0) == one and b.initializers[one].dtype == np.float32  # shared, float32
    axes = b.ints([0, 2])
    assert b.initializers[axes].dtype == np.int64 and list(b.initializers[axes]) == [0, 2]
    y = b.op("Add", "x", one)
    z = b.op("Relu", y)
    assert b.finish(z, "out") == "out"  # the last node renamed, no Identity
    assert [n.op_type for n in b.nodes] == ["Add", "Relu"] and b.nodes[-1].outputs == ["out"]
    b.set_info("x", (None, 2), np.float32)
    assert b.shape("x") == (None, 2) and b.rank("x") == 2
    assert b.finish("x", "x_out") == "x_out" and b.nodes[-1].op_type == "Identity"  # a known value is kept


def test_string_mappings_refuse_attributes_and_describe_says_what_an_op_exports_to() -> None:
    b = Builder()
    node = OnnxNode("tanh", "t", ["x"], "y", {}, (None, 2), np.dtype(np.float32), [(None, 2)], [np.dtype(np.float32)])
    assert apply("Tanh", b, node) == ["y"]
    node.attrs = {"axis": 1}
    with pytest.raises(Exception, match="takes no attributes"):
        apply("Tanh", b, node)
    assert describe(REGISTRY["linear"].onnx).startswith("Gemm")
    assert describe(REGISTRY["relu"].onnx) == "Relu"
    assert describe(REGISTRY["categorical_sample"].onnx) is None


# ---------------------------------------------------------------- errors: located, nothing written


def test_an_op_without_mapping_names_the_op_and_the_spec_node_and_writes_nothing(tmp_path: pathlib.Path) -> None:
    out = tmp_path / "a2c.onnx"
    with pytest.raises(ExportError) as e:
        export_onnx(SPECS / "a2c_cartpole.yaml", None, out, nodes=["action"])
    assert "op 'categorical_sample' has no ONNX mapping" in str(e.value)
    assert "spec node 'action'" in str(e.value)
    assert e.value.exit_code == 2
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.fixture
def unmapped_op():
    """A temporary op declared without onnx=, used inside a module of a spec."""

    @defop("export_test_cube", same)
    def fwd(x):
        return x * x * x

    @fwd.vjp
    def _(ctx, gy):
        x = ctx.inputs[0]
        return (gy * 3.0 * x * x,)

    from onlytorch.builder import op_method
    from onlytorch.graph import Graph

    Graph.export_test_cube = op_method(fwd)  # as the registry's ops get their Graph methods
    yield "export_test_cube"
    del REGISTRY["export_test_cube"]
    del Graph.export_test_cube


def test_an_unmapped_op_inside_a_module_is_located_at_the_spec_node(tmp_path: pathlib.Path, unmapped_op: str) -> None:
    spec = tmp_path / "cube.yaml"
    spec.write_text(
        "version: 1\nname: cube\ninputs:\n  x: {shape: [3], from: noise.normal}\n"
        f"modules:\n  net: [{{linear: 4}}, {unmapped_op}, {{linear: 2}}]\n"
        "nodes:\n  out: net(x)\nlosses:\n  loss: mean(out * out)\n"
    )
    target = tmp_path / "cube.onnx"
    target.write_bytes(b"the previous model")
    ck = str(noisy_checkpoint(spec, tmp_path / "c.npz"))
    code, output = run("export", str(spec), "--checkpoint", ck, "--output", str(target))
    assert code == 2 and "no main output to export by default; name the node(s) with --node" in output
    code, output = run("export", str(spec), "--checkpoint", ck, "--output", str(target), "--node", "out")
    assert code == 2, output
    assert f"op '{unmapped_op}' has no ONNX mapping: spec node 'out'" in output
    assert "in module 'net'" in output
    assert "nothing written" in output and "Traceback" not in output
    assert target.read_bytes() == b"the previous model"  # never a broken file
    assert leftovers(tmp_path) == ["cube.onnx"]


def test_a_derivative_node_is_named_as_part_of_the_spec_node_it_serves(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "g.yaml"
    spec.write_text(OPS_SPEC.replace("  total:", "  gce: grad(cross_entropy(h, argmax(x, axis=1)), x)\n  total:"))
    with pytest.raises(ExportError, match=r"spec node 'gce' \(its \w+.*part of a derivative") as e:
        export_onnx(spec, None, tmp_path / "g.onnx", nodes=["gce"])
    assert "op 'softmax_ce_grad' has no ONNX mapping" in str(e.value)


def test_unknown_node_has_a_did_you_mean_and_exit_2(tmp_path: pathlib.Path) -> None:
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    code, output = run(
        "export", str(XOR), "--checkpoint", str(ck), "--output", str(tmp_path / "m.onnx"), "--node", "logit"
    )
    assert code == 2
    assert "the spec has no node named 'logit'; did you mean 'logits'?" in output
    code, output = run(
        "export",
        str(SPECS / "multitask.yaml"),
        "--checkpoint",
        str(noisy_checkpoint(SPECS / "multitask.yaml", tmp_path / "m.npz")),
        "--output",
        str(tmp_path / "m.onnx"),
        "--node",
        "cls_head(hh)",
    )
    assert code == 2 and "did you mean 'cls_head(h)'" in output
    code, output = run("export", str(XOR), "--checkpoint", str(ck), "--output", str(tmp_path / "m.onnx"), "--node", "x")
    assert code == 2 and "is an input of the spec" in output
    assert not (tmp_path / "m.onnx").exists()


def test_a_checkpoint_of_another_spec_is_refused_with_exit_2(tmp_path: pathlib.Path) -> None:
    other = noisy_checkpoint(SPECS / "multitask.yaml", tmp_path / "other.npz")
    code, output = run("export", str(XOR), "--checkpoint", str(other), "--output", str(tmp_path / "m.onnx"))
    assert code == 2 and "no parameter 'net.0.weight'" in output
    assert not (tmp_path / "m.onnx").exists()


def test_an_invalid_spec_is_exit_2_with_its_diagnostics(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(XOR.read_text().replace("logits: net(x)", "logits: nett(x)"))
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    code, output = run("export", str(spec), "--checkpoint", str(ck), "--output", str(tmp_path / "m.onnx"))
    assert code == 2 and "bad.yaml:" in output and "invalid" in output
    assert not (tmp_path / "m.onnx").exists()


def test_a_write_failure_is_exit_1(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onlytorch.rundir

    def refuse(path, write):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(onlytorch.rundir, "write_atomic", refuse)
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    code, output = run("export", str(XOR), "--checkpoint", str(ck), "--output", str(tmp_path / "m.onnx"))
    assert code == 1 and "No space left on device" in output and "Traceback" not in output


# ---------------------------------------------------------------- the command


def test_the_command_writes_a_checked_model_and_says_what_it_holds(tmp_path: pathlib.Path) -> None:
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    out = tmp_path / "xor.onnx"
    code, output = run("export", str(XOR), "--checkpoint", str(ck), "--output", str(out))
    assert code == 0, output
    assert f"wrote {out}: ONNX opset 17, IR version 8" in output
    assert "inputs:  x (batch, 2)" in output and "outputs: logits (batch, 1)" in output
    onnx.checker.check_model(onnx.load(str(out)), full_check=True)
    assert leftovers(tmp_path) == ["xor.onnx"]  # no temporary file left behind


def test_several_nodes_and_a_module_call(tmp_path: pathlib.Path) -> None:
    spec = SPECS / "multitask.yaml"
    ck = noisy_checkpoint(spec, tmp_path / "c.npz")
    result = export_onnx(spec, ck, tmp_path / "m.onnx", nodes=["h", "radius", "cls_head(h)"])
    assert result.outputs == ["h", "radius", "cls_head(h)"] and result.inputs == ["x"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(100, 2)).astype(np.float32)
    h, radius, cls = session.run(None, {"x": x})
    np.testing.assert_allclose(radius[:, 0], np.linalg.norm(x, axis=1), rtol=1e-5)
    assert h.shape == (100, 64) and cls.shape == (100, 2)
    with pytest.raises(ExportError, match="given twice"):
        export_onnx(spec, ck, tmp_path / "m2.onnx", nodes=["h", "h"])


def test_a_metric_exports_with_the_inputs_it_needs(tmp_path: pathlib.Path) -> None:
    """xor's accuracy: comparisons (Greater, Equal cast to float) and a mean over everything."""
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    result = export_onnx(XOR, ck, tmp_path / "acc.onnx", nodes=["accuracy"])
    assert result.inputs == ["x", "y"]
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 2)).astype(np.float32)
    y = (rng.random(size=(100, 1)) > 0.5).astype(np.float32)
    c = restored(XOR, ck)
    with c.graph.no_grad():
        c.graph.set_value("x", x)
        c.graph.set_value("y", y)
        want = c.graph.forward_node("accuracy")
    got = session.run(None, {"x": x, "y": y})[0]
    assert got.shape == () and float(got) == pytest.approx(float(want), abs=1e-6)


def test_ops_says_whether_an_op_exports() -> None:
    code, output = run("ops", "relu")
    assert code == 0 and "ONNX: Relu" in output
    assert "ONNX: Gemm" in run("ops", "linear")[1]
    assert "ONNX: no mapping" in run("ops", "categorical_sample")[1]
    assert "ONNX: as the ops it is made of" in run("ops", "dropout")[1]
    listing = run("ops")[1].splitlines()
    sample = next(line for line in listing if line.startswith("categorical_sample"))
    assert sample.endswith("[no ONNX]")
    assert not next(line for line in listing if line.startswith("tanh ")).endswith("[no ONNX]")


def test_onnx_is_imported_only_when_an_export_runs() -> None:
    code = (
        "import sys\n"
        "import onlytorch, onlytorch.export\n"
        "from onlytorch_cli.main import cli\n"
        "for args in (['--help'], ['export', '--help'], ['ops', 'relu']):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('onnx', 'onnxruntime', 'onlytorch.export.exporter') if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SPECS.parent)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.splitlines()[-1] == "[]", out


# ---------------------------------------------------------------- the ops' mappings

OPS_SPEC = """version: 1
name: ops
inputs:
  x: {shape: [6], from: noise.normal}
modules:
  net: [{linear: 6}, tanh]
  lk: [{linear: 6}, {leaky_relu: 0.1}, {linear: 6}, sigmoid]
nodes:
  h: net(x)
  u: lk(x)
  act: gelu(h) + gelu(x, approximate="tanh") + softplus(x, beta=2.0) + elu(x) + leaky_relu(x, negative_slope=0.1) + relu(x)
  math: sigmoid(x) * exp(-abs(x)) + sqrt(abs(x) + 1) + log(abs(x) + 1) + sin(x) - cos(x) + sign(x) + erf(x) + square(x)
  arith: clip(x, -0.5, 0.5) + where(greater(x, 0), x, 0.1 * x) + maximum(x, h) - minimum(x, h) + x ** 2 / (abs(h) + 1)
  cmp: greater_equal(x, h) + less(x, h) + less_equal(x, 0) + not_equal(x, h) + equal(x, x)
  red: concat(sum(h, axis=1, keepdims=True), mean(h, axis=1, keepdims=True), max(h, axis=1, keepdims=True), min(h, axis=1, keepdims=True), logsumexp(h, axis=1, keepdims=True), norm(h, axis=1, keepdims=True), axis=1)
  sm: softmax(h, axis=1) + log_softmax(h)
  shp: transpose(reshape(h, [-1, 2, 3]), [0, 2, 1])[:, 1:, ::-1]
  st: stack(x, h, axis=1)[:, :, 2]
  idx: h[:, [0, 2, 5]] + h[..., None][:, -1:, 0]
  am: one_hot(argmax(h, axis=1), num_classes=6) * h
  tk: take_along(h, argmax(h, axis=1)[:, None], axis=1)
  gx: grad(sum(h * h) + sum(u), x)
  gi: grad(sum(idx) + sum(red) + sum(st) + sum(shp * shp) + sum(tk) + mean(mean(h, axis=1) * u[:, 0]) + sum(sm * am), x)
  total: mean(h) + sum(x)
  lsum: mse(h, x) + bce_with_logits(h, sigmoid(x)) + bce(sigmoid(h), sigmoid(x)) + cross_entropy(h, argmax(x, axis=1)) + cross_entropy(h, argmax(x, axis=1), reduction="sum") + mse(h, x, reduction="sum") + cross_entropy(h, argmax(x, axis=1), label_smoothing=0.1) + mean(bce_with_logits(h, sigmoid(x), reduction="none"))
losses:
  loss: mean(h * h) + mean(u)
"""
OPS_NODES = [
    *("h", "u", "act", "math", "arith", "cmp", "red", "sm", "shp", "st", "idx", "am", "tk", "gx", "gi", "total", "lsum")
]


def test_elementwise_reduction_shape_and_derivative_ops_match_onnxruntime(tmp_path: pathlib.Path) -> None:
    """Every op family mapped here (activations, arithmetic, comparisons, reductions, softmax,
    reshape/transpose/index/stack/concat/gather/one_hot/argmax, the derivative ops a grad(...)
    node is made of, the losses' forwards), exported together and run by onnxruntime on 100 rows,
    then on 1."""
    spec = tmp_path / "ops.yaml"
    spec.write_text(OPS_SPEC)
    ck = noisy_checkpoint(spec, tmp_path / "c.npz")
    result = export_onnx(spec, ck, tmp_path / "ops.onnx", nodes=OPS_NODES)
    onnx.checker.check_model(onnx.load(str(result.path)), full_check=True)
    session = ort.InferenceSession(str(result.path), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).normal(size=(100, 6)).astype(np.float32)
    got = session.run(OPS_NODES, {"x": x})
    c = restored(spec, ck)
    with c.graph.no_grad():
        c.graph.set_value("x", x)
        want = c.graph.forward_node([c.names[n] for n in OPS_NODES])
    for name, a, b in zip(OPS_NODES, got, want):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=name)
    one = session.run(OPS_NODES, {"x": x[:1]})
    for name, a, b in zip(OPS_NODES, one, got):
        if name not in ("total", "gi", "lsum"):  # means over the batch, and a derivative of one
            np.testing.assert_allclose(a, b[:1], rtol=1e-5, atol=1e-5, err_msg=name)


def test_without_onnx_installed_the_export_is_a_usage_error_naming_the_extra(
    tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` now raises ImportError
    ck = noisy_checkpoint(XOR, tmp_path / "c.npz")
    code, output = run("export", str(XOR), "--checkpoint", str(ck), "--output", str(tmp_path / "m.onnx"))
    assert code == 2 and "pip install 'onlytorch[onnx]'" in output and "Traceback" not in output
    assert not (tmp_path / "m.onnx").exists()
