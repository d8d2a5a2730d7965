"""The convolution layers of the layer registry (conv2d, conv1d, conv_transpose2d, group_norm, and
batch_norm over (N, C), (N, C, L), (N, C, H, W)): each built from its declaration, in train and eval
mode, against its torch twin with the same weights in float64 (output, input and parameter
gradients); torch's default init; their static shape rules; and a spec that uses them validates,
trains, and writes a checkpoint whose arrays load 1:1 into a torch state_dict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import onlytorch as ot
from onlytorch import nn
from onlytorch.compile import compile_text
from onlytorch.errors import ShapeError

RTOL, ATOL = 1e-9, 1e-11


def _build(kind: str, options, in_shape, seed: int = 0):
    """The layer `{kind: options}` built from its declaration on an input of shape (N, *in_shape)."""
    g = ot.Graph(seed=seed, dtype="float64")
    x = g.input("x", shape=(None, *in_shape))
    defn = nn.LAYERS[kind]
    module = defn.build(g, x, defn.parse(options), "net.0")
    return g, x, module, module(x)


def _torch_twin(kind: str, o: dict, in_shape):
    c = in_shape[0]
    bias = o.get("bias", True)
    common = {k: o[k] for k in ("stride", "padding", "dilation", "groups") if k in o}
    if kind == "conv2d":
        return torch.nn.Conv2d(c, o["out"], o["kernel"], bias=bias, **common)
    if kind == "conv1d":
        return torch.nn.Conv1d(c, o["out"], o["kernel"], bias=bias, **common)
    if kind == "conv_transpose2d":
        extra = {"output_padding": o["output_padding"]} if "output_padding" in o else {}
        return torch.nn.ConvTranspose2d(c, o["out"], o["kernel"], bias=bias, **common, **extra)
    if kind == "group_norm":
        return torch.nn.GroupNorm(o["groups"], c, eps=o.get("eps", 1e-5))
    bn = {1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm2d}[len(in_shape)]
    return bn(c, momentum=o.get("momentum", 0.1), eps=o.get("eps", 1e-5))


CASES = [
    ("conv2d", {"out": 6, "kernel": 3}, (3, 7, 6)),
    ("conv2d", {"out": 4, "kernel": [3, 2], "stride": [2, 1], "padding": 1, "dilation": [1, 2]}, (2, 9, 8)),
    ("conv2d", {"out": 6, "kernel": 3, "padding": "same", "groups": 3, "bias": False}, (3, 5, 5)),
    ("conv2d", {"out": 4, "kernel": 4, "padding": "same", "dilation": 2}, (2, 7, 6)),
    ("conv1d", {"out": 5, "kernel": 3, "stride": 2, "padding": 1}, (4, 11)),
    ("conv1d", {"out": 4, "kernel": 5, "padding": "same", "groups": 2}, (2, 9)),
    ("conv_transpose2d", {"out": 3, "kernel": 4, "stride": 2, "padding": 1}, (4, 3, 4)),
    ("conv_transpose2d", {"out": 4, "kernel": 3, "stride": 2, "output_padding": 1, "groups": 2}, (2, 3, 3)),
    ("group_norm", {"groups": 2}, (4, 3, 5)),
    ("group_norm", {"groups": 3, "eps": 1e-3}, (6, 7)),
    ("batch_norm", {}, (5,)),
    ("batch_norm", {"momentum": 0.3}, (3, 7)),
    ("batch_norm", {"eps": 1e-3}, (4, 3, 5)),
]


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize(("kind", "options", "in_shape"), CASES, ids=lambda v: str(v))
def test_layer_matches_its_torch_twin(kind, options, in_shape, mode):
    rng = np.random.default_rng(7)
    g, x, module, y = _build(kind, options, in_shape)
    twin = _torch_twin(kind, options, in_shape).double()
    params = module.parameters()
    # random values everywhere (not the inits), the same on both sides, matched by name
    named = dict(twin.named_parameters())
    assert sorted(named) == sorted(g.record(p).name.rsplit(".", 1)[1] for p in params)
    for p in params:
        value = rng.normal(size=g.record(p).shape)
        g.set_value(p, value)
        with torch.no_grad():
            named[g.record(p).name.rsplit(".", 1)[1]].copy_(torch.tensor(value))
    if kind == "batch_norm" and mode == "eval":
        rm, rv = rng.normal(size=in_shape[0]), rng.uniform(0.5, 2.0, in_shape[0])
        g.set_value(module.running_mean, rm)
        g.set_value(module.running_var, rv)
        twin.running_mean.copy_(torch.tensor(rm))
        twin.running_var.copy_(torch.tensor(rv))
    if mode == "eval":
        g.set_eval_mode()
        twin.eval()
    xv = rng.normal(size=(3, *in_shape)) * 2 + 0.5
    g.set_value(x, xv)
    out = g.forward_node(y)
    R = rng.normal(size=out.shape)
    s = g.sum(g.tanh(y) * R)
    g.forward_node(s)
    grads = g.grad(s, [x, *params])

    tx = torch.tensor(xv, requires_grad=True)
    ty = twin(tx)
    (torch.tanh(ty) * torch.tensor(R)).sum().backward()
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=RTOL, atol=ATOL, err_msg="output")
    np.testing.assert_allclose(grads[0], tx.grad.numpy(), rtol=RTOL, atol=ATOL, err_msg="input gradient")
    for p, gp in zip(params, grads[1:]):
        local = g.record(p).name.rsplit(".", 1)[1]
        np.testing.assert_allclose(gp, named[local].grad.numpy(), rtol=RTOL, atol=ATOL, err_msg=local)
    if kind == "batch_norm":
        np.testing.assert_allclose(g.get_node_value(module.running_mean), twin.running_mean.numpy(), rtol=RTOL)
        np.testing.assert_allclose(g.get_node_value(module.running_var), twin.running_var.numpy(), rtol=RTOL)


@pytest.mark.parametrize(
    ("kind", "options", "in_shape", "weight", "fan_in"),
    [
        ("conv2d", {"out": 64, "kernel": 3}, (16, 8, 8), (64, 16, 3, 3), 16 * 9),
        ("conv2d", {"out": 64, "kernel": [3, 5], "groups": 4}, (16, 8, 8), (64, 4, 3, 5), 4 * 15),
        ("conv1d", {"out": 32, "kernel": 5}, (24, 16), (32, 24, 5), 24 * 5),
        # torch's fan_in of a transposed conv: the weight's axis 1 (out/groups) times the kernel
        ("conv_transpose2d", {"out": 32, "kernel": 4, "groups": 2}, (40, 4, 4), (40, 16, 4, 4), 16 * 16),
    ],
)
def test_init_is_torchs_default_uniform_within_one_over_sqrt_fan_in(kind, options, in_shape, weight, fan_in):
    g, _, module, _ = _build(kind, options, in_shape, seed=3)
    w = g.get_node_value(module.weight)
    b = g.get_node_value(module.bias)
    assert w.shape == weight and b.shape == (options["out"],)
    bound = 1 / math.sqrt(fan_in)
    assert np.abs(w).max() <= bound and np.abs(b).max() <= bound
    # uniform on [-bound, bound]: it reaches near both ends, mean 0, variance bound^2 / 3
    assert w.max() > 0.98 * bound and w.min() < -0.98 * bound
    assert abs(w.mean()) < 0.05 * bound
    assert w.std() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    # and torch's twin draws from the same law: its weights lie within the same bound
    twin = _torch_twin(kind, options, in_shape)
    assert tuple(twin.weight.shape) == weight
    assert twin.weight.abs().max().item() <= bound and twin.weight.abs().max().item() > 0.98 * bound


def test_the_declarations_give_shapes_from_the_input_shape():
    conv = nn.LAYERS["conv2d"]
    o = conv.parse({"out": 8, "kernel": 3, "stride": 2})
    assert conv.axis == 1 and conv.input_width((None, 3, 9, 9)) == 3
    assert conv.params(3, o) == {"weight": (8, 3, 3, 3), "bias": (8,)}
    assert conv.out_shape((None, 3, 9, 9), o) == (None, 8, 4, 4)
    t = nn.LAYERS["conv_transpose2d"]
    o = t.parse({"out": 4, "kernel": 4, "stride": 2, "padding": 1})
    assert t.out_shape((None, 6, 5, 5), o) == (None, 4, 10, 10) and t.params(6, o)["weight"] == (6, 4, 4, 4)
    bn = nn.LAYERS["batch_norm"]
    assert bn.out_shape((None, 4, 5, 5), bn.parse(None)) == (None, 4, 5, 5) and bn.input_width((None, 4, 5, 5)) == 4
    assert nn.LAYERS["linear"].out_shape((None, 7, 3), nn.LAYERS["linear"].parse(5)) == (None, 7, 5)
    gn = nn.LAYERS["group_norm"]
    assert gn.parse(2).groups == 2  # {group_norm: 2} is groups: 2


@pytest.mark.parametrize(
    ("kind", "options", "in_shape", "message"),
    [
        ("conv2d", {"out": 8, "kernel": 3}, (None, 64), "takes (batch, channels, height, width) inputs, got (N, 64)"),
        ("conv2d", {"out": 8, "kernel": 5}, (None, 1, 4, 8), "kernel 5x5 is larger than the padded input 4x8"),
        ("conv2d", {"out": 8, "kernel": 6, "padding": 1}, (None, 1, 3, 8), "larger than the padded input 5x10"),
        ("conv2d", {"out": 8, "kernel": 1, "groups": 3}, (None, 4, 4, 4), "groups=3 does not divide the 4 input"),
        ("conv2d", {"out": 8, "kernel": 1, "groups": 3}, (None, 6, 4, 4), "groups=3 does not divide the 8 output"),
        ("conv2d", {"out": 8, "kernel": 3, "stride": 2, "padding": "same"}, (None, 1, 8, 8), "'same' needs stride 1"),
        ("conv1d", {"out": 8, "kernel": 3}, (None, 1, 8, 8), "takes (batch, channels, length) inputs"),
        ("conv_transpose2d", {"out": 2, "kernel": 1, "padding": 2}, (None, 1, 2, 2), "use less padding"),
        ("group_norm", {"groups": 4}, (None, 6, 3), "groups=4 does not divide the 6 channels"),
    ],
)
def test_static_shape_rules_refuse_inputs_before_anything_is_built(kind, options, in_shape, message):
    defn = nn.LAYERS[kind]
    with pytest.raises(ShapeError, match=message.replace("(", r"\(").replace(")", r"\)")):
        defn.out_shape(in_shape, defn.parse(options))


def test_bad_options_are_named():
    for kind, options, message in [
        ("conv2d", {"out": 8}, "conv2d needs the option 'kernel'"),
        ("conv2d", {"out": 8, "kernel": [3, 3, 3]}, "kernel must be an integer or a list of 2"),
        ("conv2d", {"out": 8, "kernel": 3, "padding": "full"}, "padding must be an integer, 'same' or 'valid'"),
        ("conv1d", {"out": 0, "kernel": 3}, "out must be at least 1"),
        ("conv2d", 32, "conv2d takes options as a mapping, e.g. {conv2d: {out: 32, kernel: 3}}"),
    ]:
        with pytest.raises(nn.LayerOptionError, match=message.replace("{", r"\{").replace("}", r"\}")):
            nn.LAYERS[kind].parse(options)


SPEC = """
version: 1
name: cnn-test
seed: 0
data:
  train: {source: synthetic.xor, n: 64}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net:
    - {reshape: {shape: [-1, 2, 1, 1]}}
    - {conv_transpose2d: {out: 4, kernel: 3}}
    - {group_norm: 2}
    - tanh
    - {conv2d: {out: 8, kernel: 3, padding: same}}
    - batch_norm
    - relu
    - {conv2d: {out: 8, kernel: 2}}
    - {reshape: {shape: [-1, 8, 4]}}
    - {conv1d: {out: 4, kernel: 3, padding: same}}
    - flatten
    - {linear: 1}
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def test_a_spec_of_conv_layers_compiles_with_torch_layouts_and_a_memory_plan():
    compiled, report = compile_text(SPEC)
    assert report.errors == [], report.render()
    assert compiled is not None
    shapes = {compiled.graph.record(p).name: compiled.graph.record(p).shape for p in compiled.modules["net"].params}
    assert shapes == {
        "net.1.weight": (2, 4, 3, 3),
        "net.1.bias": (4,),
        "net.2.weight": (4,),
        "net.2.bias": (4,),
        "net.4.weight": (8, 4, 3, 3),
        "net.4.bias": (8,),
        "net.5.weight": (8,),
        "net.5.bias": (8,),
        "net.7.weight": (8, 8, 2, 2),
        "net.7.bias": (8,),
        "net.9.weight": (4, 8, 3),
        "net.9.bias": (4,),
        "net.11.weight": (16, 1),
        "net.11.bias": (1,),
    }
    assert tuple(compiled.names["logits"].shape) == (None, 1)


def test_the_memory_plan_follows_conv_layers_and_refuses_a_huge_one_at_its_position():
    from onlytorch import footprint

    # the plan follows the reshape, the transposed conv and group norm to the conv whose
    # parameters and outputs pass the limit, before any of them is allocated
    wide = "{conv2d: {out: 4000, kernel: 3, padding: same}}"
    huge = SPEC.replace("{conv2d: {out: 8, kernel: 3, padding: same}}", wide)
    compiled, report = compile_text(huge, max_memory=footprint.parse_size("2MiB"))
    assert compiled is None
    (d,) = report.errors
    assert (d.code, d.line) == ("E-MEMORY", 17), report.render()
    assert d.message.startswith("layer 4 of module net (conv2d (N, 4, 3, 3) -> (N, 4000, 3, 3)): with the parameters")
    compiled, report = compile_text(SPEC, max_memory=footprint.parse_size("2MiB"))
    assert compiled is not None and report.errors == []


def test_checkpoint_of_digits_cnn_loads_into_torch_state_dict(tmp_path):
    """A short run of specs/digits_cnn.yaml: its checkpoint's param/ (and state/) arrays are the
    torch Sequential twin's state_dict, name for name and shape for shape (the linear weight
    transposed: ours is (in, out)); loaded strictly, torch classifies the digits as our eval did."""
    pytest.importorskip("sklearn")
    from click.testing import CliRunner
    from onlytorch_cli.main import cli
    from sklearn.datasets import load_digits

    out = tmp_path / "run"
    spec = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "specs" / "digits_cnn.yaml")
    result = CliRunner().invoke(cli, ["train", spec, "--out", str(out), "-q", "--set", "train.steps=60"])
    assert result.exit_code == 0, result.output
    ck = np.load(out / "checkpoints" / "last.npz")
    T = torch.nn
    twin = T.Sequential(
        T.Unflatten(1, (1, 8, 8)),
        T.Conv2d(1, 16, 3, padding="same"),
        T.GroupNorm(4, 16),
        T.ReLU(),
        T.Conv2d(16, 32, 3, padding="same"),
        T.GroupNorm(4, 32),
        T.ReLU(),
        T.MaxPool2d(2),
        T.Flatten(),
        T.Dropout(0.25),
        T.Linear(512, 10),
    ).double()
    state = twin.state_dict()
    ours = {k.split("/", 1)[1].removeprefix("cnn."): ck[k] for k in ck.files if k.startswith(("param/", "state/"))}
    assert set(ours) == set(state)
    loaded = {}
    for k, v in ours.items():
        v = v.T if k == "10.weight" else v
        assert tuple(state[k].shape) == v.shape, k
        loaded[k] = torch.tensor(v)
    twin.load_state_dict({**state, **loaded}, strict=True)
    twin.eval()
    digits = load_digits()
    with torch.no_grad():
        pred = twin(torch.tensor(digits.data / 16.0)).argmax(1).numpy()
    # 60 steps already classify most digits; a mapping off by a transpose or a name would not
    assert (pred == digits.target).mean() > 0.8
