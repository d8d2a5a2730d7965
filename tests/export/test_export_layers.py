"""ONNX export of the layers of real models (convolutions, pooling, resampling, normalisation,
embeddings, attention, recurrent cells) and of the examples built from them (digits_cnn,
dcgan_digits' generator, transformer_reverse, lstm_sine, vae_digits): every exported model passes
``onnx.checker.check_model(full_check=True)`` and onnxruntime's outputs equal onlytorch's
eval-mode values (the computation ``onlytorch eval`` does, under no_grad) to 1e-5 in float32 on
a batch of 100.

Checkpoints are written the way training writes them (``Trainer.state()``), from freshly
initialised weights moved by a little noise so that no bias is zero and no norm's gain is one
(a mapping that dropped a bias would pass on the initial weights); the batch-norm test trains a
few steps instead, for running statistics far from their initial (0, 1)."""

from __future__ import annotations

import pathlib
from collections.abc import Set
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from onlytorch import checkpoint as ckpt
from onlytorch.app import fit, load_spec
from onlytorch.export import ExportError, export_onnx
from onlytorch.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
N = 100
TOL = 1e-5


# ---------------------------------------------------------------- helpers


def _write_spec(tmp_path: pathlib.Path, text: str, name: str = "layer.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _layer_spec(inputs: str, modules: str, nodes: str, loss: str = "mean(out * out)", data: str = "") -> str:
    """A spec around the layer under test: inputs drawn from noise or data (the test feeds its
    own), the module, the node(s) to export, and a loss (a spec needs one)."""
    return f"""version: 1
name: layer
seed: 0
{data}inputs:
{inputs}
modules:
{modules}
nodes:
{nodes}
losses:
  loss: {loss}
"""


def _fresh_checkpoint(spec: pathlib.Path, path: pathlib.Path, noise: float = 0.1) -> pathlib.Path:
    """The spec's initial weights, each parameter moved by N(0, noise), saved as training saves
    them."""
    trainer = Trainer(load_spec(spec).compiled, data={})
    state = trainer.state()
    rng = np.random.default_rng(1)
    for key, value in state.items():
        if key.startswith("param/"):
            state[key] = (value + noise * rng.normal(size=value.shape)).astype(value.dtype)
    ckpt.save(path, state)
    return path


def _reference(
    spec: pathlib.Path, checkpoint: pathlib.Path, feeds: dict[str, np.ndarray], nodes: list[str]
) -> list[np.ndarray]:
    """onlytorch's values of the nodes in eval mode under no_grad, as ``onlytorch eval`` computes
    them."""
    compiled = load_spec(spec).compiled
    Trainer(compiled, data={}).restore_weights(ckpt.load(checkpoint))
    g = compiled.graph
    with g.no_grad():
        for name, value in feeds.items():
            g.set_value(compiled.inputs[name], value)
        return [np.array(g.forward_node(compiled.names[n])) for n in nodes]


def _session(path: pathlib.Path) -> tuple[onnx.ModelProto, ort.InferenceSession]:
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17 and model.ir_version == 8
    return model, ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _op_types(model: onnx.ModelProto) -> set[str]:
    return {n.op_type for n in model.graph.node}


def _export_and_compare(
    tmp_path: pathlib.Path,
    spec: pathlib.Path,
    feeds: dict[str, np.ndarray],
    nodes: list[str] | None,
    checkpoint: pathlib.Path | None = None,
    expect_ops: Set[str] = frozenset(),
) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """Export nodes (None: the default rule's), check the model, run it on feeds with onnxruntime
    and compare every output with onlytorch's eval-mode value; the model and onnxruntime's values."""
    checkpoint = checkpoint or _fresh_checkpoint(spec, tmp_path / "fresh.npz")
    out = tmp_path / "model.onnx"
    result = export_onnx(spec, checkpoint, out, nodes=nodes)
    model, sess = _session(out)
    assert expect_ops <= _op_types(model), f"missing {expect_ops - _op_types(model)} in {sorted(_op_types(model))}"
    wanted = [i.name for i in sess.get_inputs()]
    assert sorted(wanted) == sorted(result.inputs)
    got = sess.run(None, {k: _onnx_value(feeds[k]) for k in wanted})
    names = [o.name for o in sess.get_outputs()]
    ref = _reference(spec, checkpoint, feeds, names)
    for name, a, b in zip(names, got, ref):
        assert a.shape == b.shape, name
        np.testing.assert_allclose(a, b, rtol=TOL, atol=TOL, err_msg=name)
    if all(o.type.tensor_type.shape.dim[0].dim_param == "batch" for o in model.graph.output):
        # the batch dimension is dynamic: one row gives the first row of the batch's values
        row = sess.run(None, {k: _onnx_value(feeds[k][:1]) for k in wanted})
        for name, a, b in zip(names, row, got):
            np.testing.assert_allclose(a, b[:1], rtol=TOL, atol=TOL, err_msg=name)
    return model, dict(zip(names, got))


def _onnx_value(a: np.ndarray) -> np.ndarray:
    return a.astype(np.int64) if a.dtype.kind in "iu" else a.astype(np.float32)


def _normal(*shape: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> np.ndarray:
    return (shift + scale * np.random.default_rng(seed).normal(size=shape)).astype(np.float32)


def _attrs(model: onnx.ModelProto, op_type: str) -> dict[str, Any]:
    node = next(n for n in model.graph.node if n.op_type == op_type)
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


# ---------------------------------------------------------------- convolutions


def test_conv1d_with_stride_padding_dilation_and_groups(tmp_path: pathlib.Path) -> None:
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [4, 16], from: noise.normal}",
            "  net: [{conv1d: {out: 6, kernel: 3, stride: 2, padding: 2, dilation: 2, groups: 2}}]",
            "  out: net(x)",
        ),
    )
    model, got = _export_and_compare(tmp_path, spec, {"x": _normal(N, 4, 16)}, ["out"], expect_ops={"Conv"})
    assert got["out"].shape == (N, 6, 8)
    attrs = _attrs(model, "Conv")
    assert (attrs["strides"], attrs["dilations"], attrs["group"]) == ([1, 2], [1, 2], 2)


@pytest.mark.parametrize(
    "options",
    [
        "{out: 8, kernel: 3, stride: 2, padding: 1, groups: 2}",
        "{out: 6, kernel: [3, 2], padding: same}",
        "{out: 4, kernel: 3, stride: [2, 1], padding: [0, 2], dilation: [1, 2], bias: false}",
    ],
)
def test_conv2d_with_stride_padding_groups(tmp_path: pathlib.Path, options: str) -> None:
    spec = _write_spec(
        tmp_path,
        _layer_spec("  x: {shape: [4, 9, 8], from: noise.normal}", f"  net: [{{conv2d: {options}}}]", "  out: net(x)"),
    )
    _export_and_compare(tmp_path, spec, {"x": _normal(N, 4, 9, 8)}, ["out"], expect_ops={"Conv"})


@pytest.mark.parametrize(
    "options",
    [
        "{out: 6, kernel: 4, stride: 2, padding: 1}",
        # output_padding larger than padding: ONNX's output_padding, not negative end pads
        "{out: 4, kernel: 3, stride: [3, 2], padding: [0, 1], output_padding: [2, 1], groups: 2}",
        "{out: 3, kernel: [2, 3], stride: 2, padding: 1, output_padding: 1, dilation: [1, 2], bias: false}",
    ],
)
def test_conv_transpose2d(tmp_path: pathlib.Path, options: str) -> None:
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [4, 5, 6], from: noise.normal}", f"  net: [{{conv_transpose2d: {options}}}]", "  out: net(x)"
        ),
    )
    _export_and_compare(tmp_path, spec, {"x": _normal(N, 4, 5, 6)}, ["out"], expect_ops={"ConvTranspose"})


def test_convolution_in_a_spec_expression_with_an_explicit_weight(tmp_path: pathlib.Path) -> None:
    """conv2d called in an expression on a parameter of a subgraph module, with a 'valid' padding."""
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [2, 7, 7], from: noise.normal}",
            """  net:
    args: [a]
    params:
      w: {shape: [3, 2, 3, 3]}
      b: {shape: [3]}
    nodes:
      y: conv2d(a, w, b, stride=2, padding='valid')
    output: y""",
            "  out: net(x)",
        ),
    )
    _, got = _export_and_compare(tmp_path, spec, {"x": _normal(N, 2, 7, 7)}, ["out"], expect_ops={"Conv"})
    assert got["out"].shape == (N, 3, 3, 3)


@pytest.mark.parametrize(
    ("size", "layer", "onnx_ops"),
    [
        ((8, 9), "{conv2d: {out: 3, kernel: 3, stride: 2, padding: 1}}", {"ConvTranspose"}),
        # 9 = 3 windows of 2 at stride 3 plus one row and column no window reads: the gradient's
        # transposed convolution reaches past its span (ONNX output_padding)
        ((9, 9), "{conv2d: {out: 3, kernel: 2, stride: 3}}", {"ConvTranspose"}),
        # a transposed convolution's input gradient is a convolution; with output_padding beyond
        # the padding it crops the gradient first (negative pads: a Slice before the Conv)
        ((4, 5), "{conv_transpose2d: {out: 4, kernel: 3, stride: 2, output_padding: 1, groups: 2}}", {"Slice", "Conv"}),
    ],
)
def test_input_gradient_of_a_convolution_is_its_adjoint(
    tmp_path: pathlib.Path, size: tuple[int, int], layer: str, onnx_ops: set[str]
) -> None:
    """grad(y, x) in a spec is part of the graph: a convolution's input gradient is a transposed
    convolution at the input's size (whatever rows the windows skip) and a transposed
    convolution's is a convolution."""
    h, w = size
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            f"  x: {{shape: [2, {h}, {w}], from: noise.normal}}",
            f"  net: [{layer}]",
            "  out: grad(sum(net(x) * net(x)), x)",
            loss="mean(net(x))",
        ),
    )
    _, got = _export_and_compare(tmp_path, spec, {"x": _normal(N, 2, h, w)}, ["out"], expect_ops=onnx_ops)
    assert got["out"].shape == (N, 2, h, w)


@pytest.mark.parametrize(
    "layer",
    [
        "{conv2d: {out: 4, kernel: 3, stride: 2, padding: 1}}",
        "{conv2d: {out: 4, kernel: [2, 3], stride: [1, 2], padding: [2, 0], dilation: [2, 1], groups: 2}}",
        "{conv1d: {out: 4, kernel: 3, padding: same, groups: 2}}",
    ],
)
def test_weight_gradient_of_a_convolution(tmp_path: pathlib.Path, layer: str) -> None:
    """grad(y, param(...)) of a convolution's weight: a Conv with the batch as channels, summed
    over the whole batch (so the batch of 1 check does not apply: the output has no batch axis)."""
    one_d = layer.startswith("{conv1d")
    shape = [2, 9] if one_d else [2, 7, 8]
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            f"  x: {{shape: {shape}, from: noise.normal}}",
            f"  net: [{layer}]",
            "  out: grad(sum(net(x) * net(x)), param('net.0.weight'))",
            loss="mean(net(x))",
        ),
    )
    x = _normal(N, *shape)
    model, got = _export_and_compare(tmp_path, spec, {"x": x}, ["out"], expect_ops={"Conv"})
    assert got["out"].shape[0] == 4 and model.graph.output[0].type.tensor_type.shape.dim[0].dim_value == 4


# ---------------------------------------------------------------- pooling, resampling, flatten


@pytest.mark.parametrize(
    ("layer", "onnx_op"),
    [
        ("{max_pool2d: {kernel: 2}}", "MaxPool"),
        ("{max_pool2d: {kernel: 3, stride: [2, 1], padding: 1}}", "MaxPool"),
        ("{avg_pool2d: {kernel: 2}}", "AveragePool"),
        ("{avg_pool2d: {kernel: 3, stride: 2, padding: 1}}", "AveragePool"),
        ("{avg_pool2d: {kernel: 3, stride: 2, padding: 1, count_include_pad: false}}", "AveragePool"),
        ("{adaptive_avg_pool2d: {output_size: 1}}", "GlobalAveragePool"),
        ("{adaptive_avg_pool2d: {output_size: [4, 3]}}", "AveragePool"),
        ("{adaptive_avg_pool2d: {output_size: [3, 5]}}", "MatMul"),
        ("{upsample_nearest2d: {scale_factor: 2}}", "Resize"),
        ("{upsample_nearest2d: {scale_factor: [3, 2]}}", "Resize"),
        ("flatten", "Reshape"),
    ],
)
def test_pooling_resampling_and_flatten(tmp_path: pathlib.Path, layer: str, onnx_op: str) -> None:
    """After a 1x1 convolution (so that the spec has parameters and the pooled values are not the
    raw input); a shifted input so that padding (zeros, or -inf for max) matters."""
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [3, 8, 9], from: noise.normal}",
            f"  net: [{{conv2d: {{out: 4, kernel: 1}}}}, {layer}]",
            "  out: net(x)",
        ),
    )
    x = _normal(N, 3, 8, 9, shift=-2.0)
    _, got = _export_and_compare(tmp_path, spec, {"x": x}, ["out"], expect_ops={onnx_op})
    if onnx_op == "Reshape":
        assert got["out"].shape == (N, 4 * 8 * 9)


@pytest.mark.parametrize(
    ("layer", "onnx_op"),
    [
        ("{avg_pool2d: {kernel: 2}}", "ConvTranspose"),
        ("{avg_pool2d: {kernel: 3, stride: 2, padding: 1}}", "ConvTranspose"),
        ("{avg_pool2d: {kernel: 3, stride: 2, padding: 1, count_include_pad: false}}", "ConvTranspose"),
        ("{adaptive_avg_pool2d: {output_size: 1}}", "MatMul"),
        ("{adaptive_avg_pool2d: {output_size: [3, 5]}}", "MatMul"),
        ("{upsample_nearest2d: {scale_factor: [2, 3]}}", "ReduceSum"),
    ],
)
def test_input_gradient_through_pooling_and_resampling(tmp_path: pathlib.Path, layer: str, onnx_op: str) -> None:
    """The derivatives of the pooling and resampling layers (their transposes) export too: a
    spec node grad(...) through them."""
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [2, 8, 9], from: noise.normal}",
            f"  net: [{{conv2d: {{out: 3, kernel: 1}}}}, {layer}]",
            "  out: grad(sum(net(x) * net(x)), x)",
            loss="mean(net(x))",
        ),
    )
    _, got = _export_and_compare(tmp_path, spec, {"x": _normal(N, 2, 8, 9)}, ["out"], expect_ops={onnx_op})
    assert got["out"].shape == (N, 2, 8, 9)


def test_the_derivative_of_max_pooling_does_not_export(tmp_path: pathlib.Path) -> None:
    """Max pooling's derivative (the window argmax, with torch's rule for ties) has no mapping:
    the export fails naming the op and the spec node, and writes nothing."""
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [2, 8, 8], from: noise.normal}",
            "  net: [{conv2d: {out: 3, kernel: 1}}, {max_pool2d: {kernel: 2}}]",
            "  out: grad(sum(net(x) * net(x)), x)",
            loss="mean(net(x))",
        ),
    )
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match=r"op 'max_pool2d_argmax' has no ONNX mapping: spec node 'out'") as e:
        export_onnx(spec, _fresh_checkpoint(spec, tmp_path / "fresh.npz"), out, nodes=["out"])
    assert e.value.exit_code == 2
    assert not out.exists()


def test_count_include_pad_decides_the_border_means(tmp_path: pathlib.Path) -> None:
    """The same pooling with and without count_include_pad differs at the borders: the attribute
    reaches onnxruntime (the comparison with onlytorch alone would not show a swapped default if
    both sides ignored it)."""
    values = {}
    for flag in ("true", "false"):
        spec = _write_spec(
            tmp_path,
            _layer_spec(
                "  x: {shape: [1, 4, 4], from: noise.normal}",
                f"  net: [{{conv2d: {{out: 1, kernel: 1, bias: false}}}}, "
                f"{{avg_pool2d: {{kernel: 3, stride: 1, padding: 1, count_include_pad: {flag}}}}}]",
                "  out: net(x)",
            ),
            f"pool_{flag}.yaml",
        )
        model, got = _export_and_compare(tmp_path, spec, {"x": np.ones((N, 1, 4, 4), np.float32)}, ["out"])
        assert _attrs(model, "AveragePool")["count_include_pad"] == (1 if flag == "true" else 0)
        values[flag] = got["out"]
    # without padding counted every window of a constant image has its mean; with it, corners
    # average 4 values and 5 zeros
    assert np.allclose(values["false"], values["false"][0, 0, 1, 1])
    np.testing.assert_allclose(values["true"][:, :, 0, 0], values["true"][:, :, 1, 1] * 4 / 9, rtol=1e-5)


# ---------------------------------------------------------------- normalisation


def test_group_norm_and_layer_norm(tmp_path: pathlib.Path) -> None:
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [6, 5, 4], from: noise.normal}\n  s: {shape: [7, 12], from: noise.normal}",
            "  gn: [{group_norm: 3}]\n  ln: [layer_norm]\n  gn2: [{group_norm: {groups: 6, eps: 0.1}}]",
            "  out: gn(x)\n  out2: ln(s)\n  out3: gn2(x)",
            loss="mean(out * out) + mean(out2) + mean(out3)",
        ),
    )
    feeds = {"x": _normal(N, 6, 5, 4, scale=3.0, shift=1.0), "s": _normal(N, 7, 12, seed=1, scale=2.0, shift=-1.0)}
    _, got = _export_and_compare(tmp_path, spec, feeds, ["out", "out2", "out3"])
    assert got["out2"].shape == (N, 7, 12)


BATCH_NORM_SPEC = """version: 1
name: bn
seed: 0
data:
  train: {source: file.npz, path: d.npz}
  batch_size: 32
inputs:
  x: {shape: [3, 5, 5], from: train.x}
  v: {shape: [6], from: train.v}
modules:
  net: [{conv2d: {out: 4, kernel: 3}}, {batch_norm: {momentum: 0.5}}, relu]
  head: [{linear: 5}, {batch_norm: {momentum: 0.5, eps: 0.01}}]
nodes:
  out: net(x)
  out2: head(v)
losses:
  loss: mean(out * out) + mean(out2 * out2)
optimizers:
  opt: {type: sgd, lr: 0.01, params: [net, head]}
train:
  steps: 6
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def test_batch_norm_in_eval_mode_uses_the_trained_running_statistics(tmp_path: pathlib.Path) -> None:
    """(N, C, H, W) and (N, C) batch norm after a few training steps on data far from mean 0 and
    variance 1: the running statistics the model exports are the checkpoint's, not (0, 1), and
    onnxruntime's values are onlytorch's eval-mode ones."""
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "d.npz",
        x=(3.0 + 2.0 * rng.normal(size=(256, 3, 5, 5))).astype(np.float32),
        v=(-4.0 + 0.5 * rng.normal(size=(256, 6))).astype(np.float32),
    )
    spec = _write_spec(tmp_path, BATCH_NORM_SPEC)
    result = fit(spec, tmp_path / "run", seed=0, tensorboard=False)
    assert result.ok, result
    checkpoint = tmp_path / "run" / "checkpoints" / "last.npz"
    state = ckpt.load(checkpoint)
    means = [np.asarray(state[k]) for k in state if k.startswith("state/") and k.endswith("running_mean")]
    assert len(means) == 2 and all(np.abs(m).max() > 0.5 for m in means), means
    feeds = {"x": _normal(N, 3, 5, 5, shift=3.0, scale=2.0), "v": _normal(N, 6, seed=1, shift=-4.0)}
    model, _ = _export_and_compare(tmp_path, spec, feeds, ["out", "out2"], checkpoint, {"BatchNormalization"})
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    exported = [v for k, v in inits.items() if "running_mean" in k]
    assert sorted(float(m.sum()) for m in exported) == pytest.approx(sorted(float(m.sum()) for m in means))


# ---------------------------------------------------------------- embeddings and attention


def test_embedding_and_positional_embedding(tmp_path: pathlib.Path) -> None:
    tokens = np.random.default_rng(0).integers(0, 11, size=(N, 7))
    np.savez(tmp_path / "d.npz", t=tokens)
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  t: {shape: [7], dtype: int64, from: train.t}",
            "  embed: [{embedding: {num: 11, dim: 6}}, {positional: 9}]\n  plain: [{embedding: {num: 11, dim: 3}}]",
            "  out: embed(t)\n  out2: plain(t)",
            loss="mean(out * out) + mean(out2)",
            data="data:\n  train: {source: file.npz, path: d.npz}\n  batch_size: 10\n",
        ),
    )
    _, got = _export_and_compare(tmp_path, spec, {"t": tokens}, ["out", "out2"], expect_ops={"Gather"})
    assert got["out"].shape == (N, 7, 6)


def test_the_gradient_of_an_embedding_table_adds_repeated_rows(tmp_path: pathlib.Path) -> None:
    """embedding's derivative in its table (scatter_rows): rows of tokens that repeat add up."""
    tokens = np.random.default_rng(0).integers(0, 5, size=(N, 7))  # 5 of 11 rows, each many times
    np.savez(tmp_path / "d.npz", t=tokens)
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  t: {shape: [7], dtype: int64, from: train.t}",
            "  embed: [{embedding: {num: 11, dim: 6}}]",
            "  out: grad(sum(embed(t) * embed(t)), param('embed.0.weight'))",
            loss="mean(embed(t))",
            data="data:\n  train: {source: file.npz, path: d.npz}\n  batch_size: 10\n",
        ),
    )
    _, got = _export_and_compare(tmp_path, spec, {"t": tokens}, ["out"], expect_ops={"ScatterND"})
    assert got["out"].shape == (11, 6) and not got["out"][5:].any() and got["out"][:5].all()


@pytest.mark.parametrize("causal", [False, True])
def test_multihead_self_attention(tmp_path: pathlib.Path, causal: bool) -> None:
    flag = "true" if causal else "false"
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  x: {shape: [6, 8], from: noise.normal}",
            f"  att: [layer_norm, {{attention: {{heads: 2, causal: {flag}}}}}]",
            "  out: att(x)",
        ),
    )
    x = _normal(N, 6, 8)
    _, got = _export_and_compare(tmp_path, spec, {"x": x}, ["out"], expect_ops={"Softmax"})
    # the causal model's first position sees itself only: changing the last position leaves it
    y = x.copy()
    y[:, -1] += _normal(N, 8, seed=3)
    _, moved = _export_and_compare(tmp_path, spec, {"x": y}, ["out"])
    first_same = np.allclose(got["out"][:, 0], moved["out"][:, 0], atol=1e-6)
    assert first_same == causal


def test_attention_with_a_mask_input_a_bias_and_triangles(tmp_path: pathlib.Path) -> None:
    """The attention op in an expression with a fed 0/1 mask (combined with causal) and an
    additive bias built from triu; tril and triu on their own; arange as positions."""
    spec = _write_spec(
        tmp_path,
        _layer_spec(
            "  q: {shape: [5, 4], from: noise.normal}\n  k: {shape: [5, 4], from: noise.normal}\n"
            "  v: {shape: [5, 3], from: noise.normal}\n  m: {shape: [5, 5], from: noise.normal}",
            "  lin: [{linear: 4}]",
            "  out: attention(lin(q), k, v, m, -0.5 * triu(m, diagonal=1), causal=True)\n"
            "  out2: tril(m, diagonal=-1) + triu(m, diagonal=2)\n"
            "  out3: q * arange(0.0, 1.0, 0.25)",
            loss="mean(out * out) + mean(out2) + mean(out3)",
        ),
    )
    rng = np.random.default_rng(0)
    mask = (rng.random((N, 5, 5)) > 0.3).astype(np.float32)
    feeds = {"q": _normal(N, 5, 4), "k": _normal(N, 5, 4, seed=1), "v": _normal(N, 5, 3, seed=2), "m": mask}
    _, got = _export_and_compare(tmp_path, spec, feeds, ["out", "out2", "out3"], expect_ops={"Trilu"})
    np.testing.assert_array_equal(got["out2"], np.tril(mask, -1) + np.triu(mask, 2))


# ---------------------------------------------------------------- recurrent cells

LSTM_SPEC = """version: 1
name: lstm
seed: 0
inputs:
  x: {shape: [6, 3], from: noise.normal}
  h0: {shape: [5], from: noise.normal}
  c0: {shape: [5], from: noise.normal}
modules:
  cell: {cell: lstm, hidden: 5}
  readout: [{linear: 2}]
nodes:
  r: scan(cell, x, h0, c0)
  h_last: r["h_last"]
  c_last: r["c_last"]
  pred: readout(r["h"])
losses:
  loss: mean(pred * pred)
"""


def test_lstm_cell_step_and_the_scanned_sequence(tmp_path: pathlib.Path) -> None:
    """The default export of a spec with an LSTM cell module is its step (x, h, c) -> (cell.h,
    cell.c); the scan over a sequence exports unrolled (--node). Stepping the exported cell
    through the sequence with onnxruntime gives the scan's final states."""
    spec = _write_spec(tmp_path, LSTM_SPEC)
    checkpoint = _fresh_checkpoint(spec, tmp_path / "fresh.npz")
    feeds = {"x": _normal(N, 6, 3), "h0": _normal(N, 5, seed=1), "c0": _normal(N, 5, seed=2)}
    _, seq = _export_and_compare(tmp_path, spec, feeds, ["pred", "h_last", "c_last"], checkpoint)
    out = tmp_path / "step.onnx"
    result = export_onnx(spec, checkpoint, out)
    assert result.outputs == ["cell.h", "cell.c"] and sorted(result.inputs) == ["c", "h", "x"]
    _, sess = _session(out)
    h, c = feeds["h0"], feeds["c0"]
    for t in range(6):
        h, c = sess.run(["cell.h", "cell.c"], {"x": feeds["x"][:, t], "h": h, "c": c})
    np.testing.assert_allclose(h, seq["h_last"], rtol=TOL, atol=TOL)
    np.testing.assert_allclose(c, seq["c_last"], rtol=TOL, atol=TOL)


# ---------------------------------------------------------------- the examples


def _example(name: str) -> pathlib.Path:
    return SPECS / f"{name}.yaml"


def test_digits_cnn_logits(tmp_path: pathlib.Path) -> None:
    spec = _example("digits_cnn")
    x = np.random.default_rng(0).uniform(0, 16, size=(N, 64)).astype(np.float32)
    model, got = _export_and_compare(tmp_path, spec, {"x": x}, None, expect_ops={"Conv", "MaxPool"})
    assert [o.name for o in model.graph.output] == ["logits"] and got["logits"].shape == (N, 10)
    assert "Dropout" not in _op_types(model)  # eval mode: the identity


def test_dcgan_digits_generator(tmp_path: pathlib.Path) -> None:
    spec = _example("dcgan_digits")
    model, got = _export_and_compare(tmp_path, spec, {"z": _normal(N, 32)}, None, expect_ops={"ConvTranspose", "Conv"})
    assert [o.name for o in model.graph.output] == ["fake"] and got["fake"].shape == (N, 64)


def test_transformer_reverse_logits(tmp_path: pathlib.Path) -> None:
    spec = _example("transformer_reverse")
    tokens = np.random.default_rng(0).integers(0, 10, size=(N, 8))
    model, got = _export_and_compare(tmp_path, spec, {"x": tokens}, None, expect_ops={"Gather", "Softmax"})
    assert [o.name for o in model.graph.output] == ["logits"] and got["logits"].shape == (N, 8, 10)


def test_lstm_sine_cell_over_a_window(tmp_path: pathlib.Path) -> None:
    """lstm_sine's subgraph LSTM cell scanned over a 20-step window (unrolled), its predictions
    and both final states, from the carried states as inputs."""
    spec = _example("lstm_sine")
    feeds = {"x": _normal(N, 20, 1), "h0": _normal(N, 32, seed=1, scale=0.5), "c0": _normal(N, 32, seed=2)}
    model, got = _export_and_compare(tmp_path, spec, feeds, None)
    assert [o.name for o in model.graph.output] == ["pred"] and got["pred"].shape == (N, 20, 1)
    _export_and_compare(tmp_path, spec, feeds, ["h_last", "c_last"])


def test_vae_digits_encoder_and_decoder(tmp_path: pathlib.Path) -> None:
    """The encoder's two heads, and the decoder's logits of z = mu + exp(logvar / 2) eps (the
    noise eps is an input of the exported model)."""
    spec = _example("vae_digits")
    x = np.random.default_rng(0).uniform(0, 1, size=(N, 64)).astype(np.float32)
    model, _ = _export_and_compare(tmp_path, spec, {"x": x}, ["mu", "logvar"])
    assert [i.name for i in model.graph.input] == ["x"]
    _, got = _export_and_compare(tmp_path, spec, {"x": x, "eps": _normal(N, 8)}, ["logits"])
    assert got["logits"].shape == (N, 64)
