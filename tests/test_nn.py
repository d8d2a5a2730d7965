"""The modules of ot.nn against their torch twins (weights copied; our weights are (in, out), torch's
weight.T), in float64, in train and eval mode where they differ; naming, sharing, initialisation,
seeding, copy_parameters."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onlytorch as ot
from onlytorch import nn

RTOL, ATOL = 1e-9, 1e-11


def _close(a, b, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


def _val(g, n):
    return g.get_node_value(n)


def _tensor(a, grad=False):
    return torch.tensor(np.array(a, dtype=np.float64), requires_grad=grad)


class Twin:
    """Pairs of (our parameter, torch parameter, transposed?) with copy and compare helpers."""

    def __init__(self, g):
        self.g = g
        self.pairs: list[tuple[ot.NodeId, torch.Tensor, bool]] = []

    def add(self, ours, theirs: torch.Tensor, transpose: bool = False):
        v = _val(self.g, ours)
        with torch.no_grad():
            theirs.copy_(torch.tensor(v.T if transpose else v))
        self.pairs.append((ours, theirs, transpose))

    def linear(self, lin: nn.Linear) -> torch.nn.Linear:
        t = torch.nn.Linear(lin.in_features, lin.out_features, bias=lin.bias is not None).double()
        self.add(lin.weight, t.weight, True)
        if lin.bias is not None:
            self.add(lin.bias, t.bias)
        return t

    def check_grads(self, s, t_loss, extra=()):
        """Gradients of our scalar s and torch's t_loss wrt every paired parameter (and extra
        (our node, torch leaf) pairs)."""
        ours = [p for p, _, _ in self.pairs] + [o for o, _ in extra]
        theirs = [t for _, t, _ in self.pairs] + [t for _, t in extra]
        flips = [f for _, _, f in self.pairs] + [False] * len(extra)
        self.g.forward_node(s)
        got = self.g.grad(s, ours)
        want = torch.autograd.grad(t_loss, theirs)
        for node, a, b, flip in zip(ours, got, want, flips):
            b = b.numpy()
            _close(a, b.T if flip else b, f"gradient wrt {node.name}")


# ================================================================ Linear


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4)], ids=["2d", "3d"])
def test_linear_matches_torch(bias, shape):
    rng = np.random.default_rng(0)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, *shape[1:]))
    lin = nn.Linear(g, 4, 3, bias=bias)
    tw = Twin(g)
    tlin = tw.linear(lin)
    xv, R = rng.normal(size=shape), rng.normal(size=(*shape[:-1], 3))
    g.set_value(x, xv)
    y = lin(x)
    s = g.sum(g.tanh(y) * R)
    tx = _tensor(xv, True)
    ty = tlin(tx)
    _close(g.forward_node(y), ty.detach().numpy(), "output")
    tw.check_grads(s, (torch.tanh(ty) * _tensor(R)).sum(), extra=[(x, tx)])
    g.set_eval_mode()  # no mode dependence
    _close(g.forward_node(y), ty.detach().numpy(), "eval output")
    assert lin.num_parameters() == sum(p.numel() for p in tlin.parameters())


def test_linear_called_twice_shares_its_weights_and_sums_their_gradients():
    rng = np.random.default_rng(1)
    g = ot.Graph(dtype="float64")
    x1, x2 = g.input("x1", shape=(None, 4)), g.input("x2", shape=(None, 4))
    lin = nn.Linear(g, 4, 3)
    tw = Twin(g)
    tlin = tw.linear(lin)
    v1, v2 = rng.normal(size=(5, 4)), rng.normal(size=(2, 4))
    R1, R2 = rng.normal(size=(5, 3)), rng.normal(size=(2, 3))
    g.set_value(x1, v1)
    g.set_value(x2, v2)
    y1, y2 = lin(x1), lin(x2)
    assert len(g.parameters()) == 2  # the second call made no new parameter
    part1, part2 = g.sum(g.tanh(y1) * R1), g.sum(y2 * R2)
    s = part1 + part2
    t_loss = (torch.tanh(tlin(_tensor(v1))) * _tensor(R1)).sum() + (tlin(_tensor(v2)) * _tensor(R2)).sum()
    tw.check_grads(s, t_loss)
    g.forward_node([part1, part2])
    g1 = g.grad(part1, [lin.weight, lin.bias])
    g2 = g.grad(part2, [lin.weight, lin.bias])
    g.forward_node(s)
    both = g.grad(s, [lin.weight, lin.bias])
    for a, b, c in zip(g1, g2, both):
        _close(a + b, c, "the gradient of the sum is the sum of the gradients")


# ================================================================ MLP

TORCH_ACT = {
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "leaky_relu": F.leaky_relu,
    "elu": F.elu,
    "gelu": F.gelu,
    "softplus": F.softplus,
}


def _mlp_twin(g, mlp: nn.MLP, act: str, out_act: str | None):
    """torch layers for each of mlp.layers; dropout layers read our masks (looked up after forward)."""
    tw = Twin(g)
    layers = []
    n_linear = sum(isinstance(layer, nn.Linear) for layer in mlp.layers)
    seen_linear = 0
    for layer in mlp.layers:
        if isinstance(layer, nn.Linear):
            layers.append(tw.linear(layer))
            seen_linear += 1
        elif isinstance(layer, nn.BatchNorm):
            t = torch.nn.BatchNorm1d(layer.weight.shape[0], momentum=layer.momentum, eps=layer.eps).double()
            tw.add(layer.weight, t.weight)
            tw.add(layer.bias, t.bias)
            t.running_mean.copy_(torch.tensor(_val(g, layer.running_mean)))
            t.running_var.copy_(torch.tensor(_val(g, layer.running_var)))
            layers.append(t)
        elif isinstance(layer, nn.LayerNorm):
            t = torch.nn.LayerNorm(layer.weight.shape, eps=layer.eps).double()
            tw.add(layer.weight, t.weight)
            tw.add(layer.bias, t.bias)
            layers.append(t)
        elif isinstance(layer, nn.Dropout):
            layers.append("dropout")
        else:  # an activation
            layers.append(TORCH_ACT[act if seen_linear < n_linear else out_act])
    return tw, layers


def _dropout_masks(g):
    return [
        _val(g, n) for n in g.nodes(include_hidden=True) if n.node.op is not None and n.node.op.name == "dropout_mask"
    ]


def _run_torch_layers(layers, x, masks, train):
    masks = iter(masks)
    for layer in layers:
        if isinstance(layer, torch.nn.Module):
            layer.train(train)
            x = layer(x)
        elif layer == "dropout":
            x = x * _tensor(next(masks)) if train else x
        else:
            x = layer(x)
    return x


MLP_CONFIGS = {
    "relu-2layers": dict(sizes=[3, 8, 2]),
    "tanh-sigmoid-out": dict(sizes=[3, 8, 6, 2], activation_fn="tanh", out_activation="sigmoid"),
    "leaky-batchnorm": dict(sizes=[3, 8, 8, 2], activation_fn="leaky_relu", norm="batch"),
    "gelu-layernorm": dict(sizes=[3, 8, 8, 2], activation_fn="gelu", norm="layer"),
    "relu-dropout": dict(sizes=[3, 8, 8, 2], dropout=0.3),
    "elu-batchnorm-dropout-softplus-out": dict(
        sizes=[3, 6, 5, 2], activation_fn="elu", norm="batch", dropout=0.2, out_activation="softplus"
    ),
}


@pytest.mark.parametrize("mode", ["train", "eval"])
@pytest.mark.parametrize("config", list(MLP_CONFIGS))
def test_mlp_matches_torch(config, mode):
    kw = MLP_CONFIGS[config]
    rng = np.random.default_rng(2)
    g = ot.Graph(seed=3, dtype="float64")
    x = g.input("x", shape=(None, 3))
    mlp = nn.MLP(g, **kw)
    if mode == "eval":
        g.set_eval_mode()
        for s in mlp.states():  # non-trivial running statistics
            g.set_value(s, rng.uniform(0.5, 1.5, s.shape) if s.name.endswith("var") else rng.normal(size=s.shape))
    tw, layers = _mlp_twin(g, mlp, kw.get("activation_fn", "relu"), kw.get("out_activation"))
    xv = rng.normal(size=(7, 3))
    R = rng.normal(size=(7, kw["sizes"][-1]))
    g.set_value(x, xv)
    y = mlp(x)
    s = g.sum(y * R)
    out = g.forward_node(y).copy()
    masks = _dropout_masks(g)
    n_dropout = sum(isinstance(layer, nn.Dropout) for layer in mlp.layers)
    assert len(masks) == n_dropout
    if mode == "train" and n_dropout:
        assert any((m == 0).any() for m in masks)
    tx = _tensor(xv, True)
    ty = _run_torch_layers(layers, tx, masks, train=mode == "train")
    _close(out, ty.detach().numpy(), "output")
    tw.check_grads(s, (ty * _tensor(R)).sum(), extra=[(x, tx)])
    for layer, state in zip(
        [m for m in mlp.layers if isinstance(m, nn.BatchNorm)],
        [t for t in layers if isinstance(t, torch.nn.BatchNorm1d)],
    ):
        _close(_val(g, layer.running_mean), state.running_mean.numpy(), "running mean")
        _close(_val(g, layer.running_var), state.running_var.numpy(), "running var")
    assert mlp.num_parameters() == sum(t.numel() for _, t, _ in tw.pairs)


def test_mlp_dropout_differs_between_train_and_eval():
    g = ot.Graph(seed=0, dtype="float64")
    x = g.input("x", shape=(None, 4))
    mlp = nn.MLP(g, [4, 64, 64, 1], dropout=0.5)
    g.set_value(x, np.random.default_rng(0).normal(size=(16, 4)))
    y = mlp(x)
    train_a = g.forward_node(y).copy()
    g.set_eval_mode()
    eval_a = g.forward_node(y).copy()
    eval_b = g.no_grad_scope(lambda gr: gr.forward_node(y).copy())
    g.set_train_mode()
    train_b = g.forward_node(y).copy()  # a fresh mask after the mode switch
    np.testing.assert_array_equal(eval_a, eval_b)
    assert not np.allclose(train_a, eval_a)
    assert not np.allclose(train_a, train_b)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(sizes=[3]), "at least an input and an output size"),
        (dict(sizes=[3, 2], norm="group"), "MLP norm must be None, 'batch' or 'layer'"),
        (dict(sizes=[3, 4, 2], activation_fn="relu6"), "unknown activation 'relu6'"),
    ],
    ids=["one-size", "bad-norm", "bad-activation"],
)
def test_mlp_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ot.GraphError, match=match):
        nn.MLP(ot.Graph(), **kwargs)


# ================================================================ Dropout module


def test_dropout_module_train_and_eval():
    g = ot.Graph(seed=1, dtype="float64")
    x = g.input("x", shape=(None, 100))
    d = nn.Dropout(g, p=0.25)
    assert d.parameters() == [] and d.num_parameters() == 0
    y = d(x)
    g.set_value(x, np.ones((40, 100)))
    out = g.forward_node(y)
    assert abs((out == 0).mean() - 0.25) < 0.03
    np.testing.assert_allclose(out[out != 0], 1 / 0.75)
    g.set_eval_mode()
    np.testing.assert_array_equal(g.forward_node(y), np.ones((40, 100)))
    with pytest.raises(ot.GraphError, match=r"dropout probability must lie in \[0, 1\]"):
        nn.Dropout(g, p=1.2)


# ================================================================ BatchNorm, LayerNorm, Embedding


def test_batchnorm_module_three_train_steps_then_eval_match_torch():
    rng = np.random.default_rng(4)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 5))
    bn = nn.BatchNorm(g, 5, momentum=0.2)
    tw = Twin(g)
    tbn = torch.nn.BatchNorm1d(5, momentum=0.2).double()
    g.set_value(bn.weight, rng.normal(size=5) + 1)
    g.set_value(bn.bias, rng.normal(size=5))
    tw.add(bn.weight, tbn.weight)
    tw.add(bn.bias, tbn.bias)
    y = bn(x)
    for step, mode in enumerate(["train", "train", "train", "eval", "eval"]):
        train = mode == "train"
        g.set_train_mode() if train else g.set_eval_mode()
        tbn.train(train)
        xv = rng.normal(size=(6, 5)) * (step + 1) + step
        R = rng.normal(size=(6, 5))
        g.set_value(x, xv)
        s = g.sum(g.tanh(y) * R)
        tx = _tensor(xv, True)
        ty = tbn(tx)
        _close(g.forward_node(y), ty.detach().numpy(), f"output at step {step} ({mode})")
        tw.check_grads(s, (torch.tanh(ty) * _tensor(R)).sum(), extra=[(x, tx)])
        _close(_val(g, bn.running_mean), tbn.running_mean.numpy(), f"running mean at step {step}")
        _close(_val(g, bn.running_var), tbn.running_var.numpy(), f"running var at step {step}")
    assert [s.name for s in bn.states()] == ["batch_norm.running_mean", "batch_norm.running_var"]
    assert bn.num_parameters() == 10


@pytest.mark.parametrize(
    ("normalized_shape", "xshape"),
    [(6, (4, 6)), (6, (2, 3, 6)), ((3, 6), (2, 3, 6))],
    ids=["int-2d", "int-3d", "tuple"],
)
def test_layernorm_module_matches_torch(normalized_shape, xshape):
    rng = np.random.default_rng(5)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, *xshape[1:]))
    ln = nn.LayerNorm(g, normalized_shape)
    np.testing.assert_array_equal(_val(g, ln.weight), 1.0)
    np.testing.assert_array_equal(_val(g, ln.bias), 0.0)
    g.set_value(ln.weight, rng.normal(size=ln.weight.shape))
    g.set_value(ln.bias, rng.normal(size=ln.bias.shape))
    tln = torch.nn.LayerNorm(normalized_shape).double()
    tw = Twin(g)
    tw.add(ln.weight, tln.weight)
    tw.add(ln.bias, tln.bias)
    xv, R = rng.normal(size=xshape), rng.normal(size=xshape)
    g.set_value(x, xv)
    y = ln(x)
    tx = _tensor(xv, True)
    ty = tln(tx)
    _close(g.forward_node(y), ty.detach().numpy(), "output")
    tw.check_grads(g.sum(g.tanh(y) * R), (torch.tanh(ty) * _tensor(R)).sum(), extra=[(x, tx)])


def test_embedding_module_matches_torch():
    rng = np.random.default_rng(6)
    g = ot.Graph(dtype="float64")
    idx = g.input("tokens", shape=(None, 4), dtype="int64")
    emb = nn.Embedding(g, 7, 3)
    temb = torch.nn.Embedding(7, 3).double()
    tw = Twin(g)
    tw.add(emb.weight, temb.weight)
    iv = np.array([[1, 1, 6, 0], [6, 1, 2, 2]])
    R = rng.normal(size=(2, 4, 3))
    g.set_value(idx, iv)
    y = emb(idx)
    ty = temb(torch.tensor(iv))
    _close(g.forward_node(y), ty.detach().numpy(), "output")
    tw.check_grads(g.sum(g.sin(y) * R), (torch.sin(ty) * _tensor(R)).sum())
    assert emb.num_parameters() == 21


# ================================================================ Sequential


def test_sequential_matches_torch_and_lists_its_childrens_parameters():
    rng = np.random.default_rng(7)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 4))
    l1, l2 = nn.Linear(g, 4, 6), nn.Linear(g, 6, 2, bias=False)
    seq = nn.Sequential(g, [l1, g.tanh, nn.LayerNorm(g, 6), l2])
    tw = Twin(g)
    t1 = tw.linear(l1)
    tln = torch.nn.LayerNorm(6).double()
    tw.add(seq.layers[2].weight, tln.weight)
    tw.add(seq.layers[2].bias, tln.bias)
    t2 = tw.linear(l2)
    tseq = torch.nn.Sequential(t1, torch.nn.Tanh(), tln, t2)
    assert seq.parameters() == [l1.weight, l1.bias, seq.layers[2].weight, seq.layers[2].bias, l2.weight]
    assert seq.num_parameters() == sum(p.numel() for p in tseq.parameters())
    xv, R = rng.normal(size=(5, 4)), rng.normal(size=(5, 2))
    g.set_value(x, xv)
    y = seq(x)
    tx = _tensor(xv, True)
    ty = tseq(tx)
    _close(g.forward_node(y), ty.detach().numpy(), "output")
    tw.check_grads(g.sum(y * R), (ty * _tensor(R)).sum(), extra=[(x, tx)])


def test_a_module_used_twice_in_a_sequential_is_listed_once_as_in_torch():
    rng = np.random.default_rng(8)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 3))
    lin = nn.Linear(g, 3, 3)
    seq = nn.Sequential(g, [lin, g.tanh, lin])
    tw = Twin(g)
    tlin = tw.linear(lin)
    tseq = torch.nn.Sequential(tlin, torch.nn.Tanh(), tlin)
    assert seq.parameters() == [lin.weight, lin.bias]
    assert seq.num_parameters() == sum(p.numel() for p in tseq.parameters()) == 12
    outer = nn.Sequential(g, [seq, seq])
    assert outer.parameters() == [lin.weight, lin.bias]
    xv, R = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    g.set_value(x, xv)
    y = seq(x)
    ty = tseq(_tensor(xv))
    _close(g.forward_node(y), ty.detach().numpy(), "output")
    tw.check_grads(g.sum(y * R), (ty * _tensor(R)).sum())


# ================================================================ recurrent cells

STEPS, IN, HID = 4, 3, 5


@pytest.mark.parametrize("kind", ["rnn-tanh", "rnn-relu", "gru"])
def test_recurrent_cells_unrolled_over_4_steps_match_torch(kind):
    rng = np.random.default_rng(9)
    g = ot.Graph(dtype="float64")
    xs = g.input("xs", shape=(None, STEPS, IN))
    h0 = g.input("h0", shape=(None, HID))
    if kind == "gru":
        cell = nn.GRUCell(g, IN, HID)
        tcell = torch.nn.GRUCell(IN, HID).double()
    else:
        nl = kind.split("-")[1]
        cell = nn.RNNCell(g, IN, HID, nonlinearity=nl)
        tcell = torch.nn.RNNCell(IN, HID, nonlinearity=nl).double()
    tw = Twin(g)
    tw.add(cell.w_ih, tcell.weight_ih, True)
    tw.add(cell.w_hh, tcell.weight_hh, True)
    tw.add(cell.b_ih, tcell.bias_ih)
    tw.add(cell.b_hh, tcell.bias_hh)
    assert cell.num_parameters() == sum(p.numel() for p in tcell.parameters())
    xv, hv = rng.normal(size=(2, STEPS, IN)), rng.normal(size=(2, HID))
    Rs = rng.normal(size=(STEPS, 2, HID))
    g.set_value(xs, xv)
    g.set_value(h0, hv)
    txs, th = _tensor(xv, True), _tensor(hv, True)
    th0 = th
    h, s, t_loss, outs, t_outs = h0, None, 0.0, [], []
    for t in range(STEPS):
        h = cell(xs[:, t], h)
        th = tcell(txs[:, t], th)
        term = g.sum(h * Rs[t])
        s = term if s is None else s + term
        t_loss = t_loss + (th * _tensor(Rs[t])).sum()
        outs.append(h)
        t_outs.append(th)
    for t, (o, to) in enumerate(zip(g.forward_node(outs), t_outs)):
        _close(o, to.detach().numpy(), f"hidden state at step {t}")
    tw.check_grads(s, t_loss, extra=[(xs, txs), (h0, th0)])


def test_rnn_cell_rejects_an_unknown_nonlinearity():
    with pytest.raises(ot.GraphError, match="nonlinearity must be 'tanh' or 'relu'"):
        nn.RNNCell(ot.Graph(), 2, 3, nonlinearity="sigmoid")


# ================================================================ copy_parameters


def _online_and_target(seed=0):
    g = ot.Graph(seed=seed, dtype="float64")
    x = g.input("x", shape=(None, 3))
    online = nn.MLP(g, [3, 5, 2], name="online")
    target = nn.MLP(g, [3, 5, 2], name="target")
    g.set_value(x, np.random.default_rng(seed).normal(size=(4, 3)))
    return g, x, online, target


def test_copy_parameters_tau_1_is_an_exact_copy_and_refreshes_dependent_values():
    g, x, online, target = _online_and_target()
    y_online, y_target = online(x), target(x)
    before = g.forward_node(y_target).copy()
    assert not np.allclose(before, g.forward_node(y_online))
    nn.copy_parameters(g, online.parameters(), target.parameters())
    for s, d in zip(online.parameters(), target.parameters()):
        np.testing.assert_array_equal(_val(g, d), _val(g, s))
        assert _val(g, d) is not _val(g, s)  # a copy, not an alias
    np.testing.assert_array_equal(g.forward_node(y_target), g.forward_node(y_online))
    # The copy is independent: changing the source afterwards leaves the target alone.
    w = online.parameters()[0]
    g.set_value(w, _val(g, w) + 1.0)
    assert not np.array_equal(_val(g, target.parameters()[0]), _val(g, w))


def test_copy_parameters_polyak_averaging_follows_the_formula():
    g, x, online, target = _online_and_target(1)
    src = [_val(g, p).copy() for p in online.parameters()]
    dst = [_val(g, p).copy() for p in target.parameters()]
    y_target = target(x)
    g.forward_node(y_target)
    nn.copy_parameters(g, online.parameters(), target.parameters(), tau=0.1)
    for s, d, p in zip(src, dst, target.parameters()):
        _close(_val(g, p), 0.1 * s + 0.9 * d, f"polyak update of {p.name}", rtol=1e-14, atol=1e-15)
    for s, p in zip(src, online.parameters()):
        np.testing.assert_array_equal(_val(g, p), s)  # the source is untouched
    g.forward_node(y_target)  # stale after the update: recomputed without complaint
    for _ in range(200):
        nn.copy_parameters(g, online.parameters(), target.parameters(), tau=0.1)
    for s, p in zip(src, target.parameters()):
        _close(_val(g, p), s, "converges to the source", rtol=1e-6, atol=1e-8)


def test_copy_parameters_errors():
    g = ot.Graph()
    a, b = nn.Linear(g, 4, 3, name="a"), nn.Linear(g, 3, 4, name="b")
    with pytest.raises(ot.GraphError, match=r"'a.weight' \(4, 3\) and 'b.weight' \(3, 4\) differ in shape"):
        nn.copy_parameters(g, a.parameters(), b.parameters())
    c = nn.Linear(g, 4, 3, name="c")  # the weights fit, the second pair does not: nothing may be copied
    before = _val(g, c.weight).copy()
    with pytest.raises(ot.GraphError, match=r"'a.bias' \(3,\) and 'b.bias' \(4,\) differ in shape"):
        nn.copy_parameters(g, [a.weight, a.bias], [c.weight, b.bias])
    np.testing.assert_array_equal(_val(g, c.weight), before)
    with pytest.raises(ot.GraphError, match="2 source and 1 destination"):
        nn.copy_parameters(g, a.parameters(), b.parameters()[:1])
    y = g.tanh(a.weight, name="not_a_leaf")
    with pytest.raises(ot.GraphError, match=r"destination node 'not_a_leaf' \(tanh\) is not a parameter or state"):
        nn.copy_parameters(g, [a.weight], [y])
    with pytest.raises(ot.GraphError, match=r"source node 'not_a_leaf' \(tanh\) holds no value"):
        nn.copy_parameters(g, [y], [a.weight])
    for tau in (0.0, 1.5, -0.1):
        with pytest.raises(ot.GraphError, match=r"tau must lie in \(0, 1\]"):
            nn.copy_parameters(g, a.parameters(), a.parameters(), tau=tau)


# ================================================================ naming, uniqueness, counting


def test_parameter_names_are_module_paths_and_unique():
    g = ot.Graph()
    l1, l2 = nn.Linear(g, 2, 3), nn.Linear(g, 3, 1)
    named = nn.Linear(g, 2, 2, name="head")
    m1, m2 = nn.MLP(g, [2, 4, 1], norm="batch"), nn.MLP(g, [2, 4, 1], norm="batch")
    g_mlp = nn.MLP(g, [2, 3, 1], name="G")
    assert [p.name for p in l1.parameters()] == ["linear.weight", "linear.bias"]
    assert [p.name for p in l2.parameters()] == ["linear1.weight", "linear1.bias"]
    assert [p.name for p in named.parameters()] == ["head.weight", "head.bias"]
    assert (m1.name, m2.name, g_mlp.name) == ("mlp", "mlp1", "G")
    assert [p.name for p in m1.parameters()] == [
        "mlp/0.weight",
        "mlp/0.bias",
        "mlp/bn0.weight",
        "mlp/bn0.bias",
        "mlp/1.weight",
        "mlp/1.bias",
    ]
    assert [p.name for p in m2.parameters()] == [n.replace("mlp/", "mlp1/") for n in (p.name for p in m1.parameters())]
    assert [s.name for s in m2.states()] == ["mlp1/bn0.running_mean", "mlp1/bn0.running_var"]
    assert [p.name for p in g_mlp.parameters()] == ["G/0.weight", "G/0.bias", "G/1.weight", "G/1.bias"]
    # A module named like an existing MLP, and a third MLP, get fresh prefixes.
    clash = nn.Linear(g, 2, 2, name="mlp")
    m3 = nn.MLP(g, [2, 2])
    assert clash.name not in ("mlp", "mlp1") and m3.name not in ("mlp", "mlp1", clash.name)
    names = [p.name for p in g.parameters()] + [s.name for s in g.states()]
    assert len(names) == len(set(names))
    owned = [p for m in (l1, l2, named, m1, m2, g_mlp, clash, m3) for p in m.parameters()]
    assert sorted(p.index for p in owned) == sorted(p.index for p in g.parameters())


def test_num_parameters_match_torch_counts():
    g = ot.Graph()
    cases = [
        (nn.Linear(g, 4, 3), torch.nn.Linear(4, 3)),
        (nn.Linear(g, 4, 3, bias=False), torch.nn.Linear(4, 3, bias=False)),
        (nn.BatchNorm(g, 7), torch.nn.BatchNorm1d(7)),
        (nn.LayerNorm(g, (3, 4)), torch.nn.LayerNorm((3, 4))),
        (nn.Embedding(g, 10, 4), torch.nn.Embedding(10, 4)),
        (nn.RNNCell(g, 3, 5), torch.nn.RNNCell(3, 5)),
        (nn.GRUCell(g, 3, 5), torch.nn.GRUCell(3, 5)),
        (
            nn.MLP(g, [4, 8, 2], norm="batch"),
            torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 2)),
        ),
    ]
    for ours, theirs in cases:
        assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters()), type(ours).__name__
    assert cases[-1][0].num_parameters() == 4 * 8 + 8 + 8 + 8 + 8 * 2 + 2


# ================================================================ initialisation and seeding


def test_default_initialisation_follows_torch():
    g = ot.Graph(seed=0, dtype="float64")
    lin = nn.Linear(g, 100, 60)
    bound = 1 / math.sqrt(100)
    for p in (lin.weight, lin.bias):
        v = _val(g, p)
        assert np.abs(v).max() <= bound
        assert np.abs(v).max() > 0.9 * bound  # fills the range
        assert abs(v.std() - bound / math.sqrt(3)) < 0.15 * bound  # U(-b, b) has std b / sqrt(3)
    for cell in (nn.RNNCell(g, 30, 40), nn.GRUCell(g, 30, 40)):
        hb = 1 / math.sqrt(40)  # torch: U(±1/sqrt(hidden)) for every weight and bias
        for p in cell.parameters():
            v = _val(g, p)
            assert np.abs(v).max() <= hb and np.abs(v).max() > 0.9 * hb, p.name
    emb = nn.Embedding(g, 200, 20)
    v = _val(g, emb.weight)
    assert abs(v.mean()) < 0.05 and abs(v.std() - 1.0) < 0.05  # N(0, 1)
    bn = nn.BatchNorm(g, 3)
    for node, want in ((bn.weight, 1), (bn.bias, 0), (bn.running_mean, 0), (bn.running_var, 1)):
        np.testing.assert_array_equal(_val(g, node), want)


def _mlp_values(seed):
    g = ot.Graph(seed=seed)
    m = nn.MLP(g, [4, 16, 16, 2], norm="layer")
    e = nn.Embedding(g, 5, 3)
    return [_val(g, p).copy() for p in m.parameters() + e.parameters()]


def test_same_seed_same_initial_weights_different_seed_different():
    a, b, c = _mlp_values(5), _mlp_values(5), _mlp_values(6)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    random_ones = [i for i, u in enumerate(a) if u.std() > 0]  # layer norm's ones and zeros are fixed
    assert random_ones and all(not np.array_equal(a[i], c[i]) for i in random_ones)


def test_float32_graphs_give_float32_parameters_and_outputs():
    g = ot.Graph(seed=0)
    x = g.input("x", shape=(None, 3))
    mlp = nn.MLP(g, [3, 4, 2], norm="batch", dropout=0.1)
    g.set_value(x, np.ones((5, 3)))
    y = mlp(x)
    assert all(_val(g, p).dtype == np.float32 for p in mlp.parameters())
    assert g.forward_node(y).dtype == np.float32
