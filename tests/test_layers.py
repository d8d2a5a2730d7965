"""The layer ops (g.dropout, g.batch_norm, g.layer_norm, g.embedding) against torch in float64:
values, first and second derivatives, train/eval behaviour, running statistics, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onlytorch as ot

RTOL, ATOL = 1e-9, 1e-11


def _second_order(g, s, wrt, rng):
    """First gradients of scalar s and the gradients of sum(grad_i * V_i) (numpy), plus the V_i."""
    g.forward_node(s)
    first = g.grad(s, wrt, create_graph=True)
    Vs = [rng.normal(size=tuple(d for d in g.forward_node(f).shape)) for f in first]
    firsts = [np.array(v) for v in g.forward_node(list(first))]
    h = g.sum(first[0] * Vs[0])
    for f, v in zip(first[1:], Vs[1:]):
        h = h + g.sum(f * v)
    g.forward_node(h)
    second = g.grad(h, wrt, allow_unused=True)
    return firsts, Vs, [np.zeros_like(a) if b is None else b for a, b in zip(firsts, second)]


def _torch_second_order(s, wrt, Vs):
    first = torch.autograd.grad(s, wrt, create_graph=True)
    h = sum((f * torch.tensor(v)).sum() for f, v in zip(first, Vs))
    second = torch.autograd.grad(h, wrt, allow_unused=True)
    return (
        [f.detach().numpy() for f in first],
        [np.zeros(w.shape) if s2 is None else s2.detach().numpy() for w, s2 in zip(wrt, second)],
    )


def _close(a, b, what, rtol=RTOL, atol=ATOL):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=what)


# ================================================================ dropout


def _dropout_graph(p, shape=(200, 50), seed=0, dtype="float64"):
    g = ot.Graph(seed=seed, dtype=dtype)
    x = g.input("x", shape=(None, shape[1]))
    g.set_value(x, np.ones(shape))
    return g, x, g.dropout(x, p=p)


@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_dropout_train_zeros_about_p_and_scales_survivors(p):
    g, _, y = _dropout_graph(p)
    out = g.forward_node(y)
    zero = out == 0
    n = out.size
    assert abs(zero.mean() - p) < 4 * np.sqrt(p * (1 - p) / n)
    np.testing.assert_allclose(out[~zero], 1.0 / (1.0 - p), rtol=1e-12)


@pytest.mark.parametrize("p", [0.3, 0.5])
def test_dropout_gradient_is_the_forward_mask_over_1_minus_p(p):
    rng = np.random.default_rng(0)
    g, x, y = _dropout_graph(p, shape=(20, 50))
    g.set_value(x, rng.normal(size=(20, 50)))
    R = rng.normal(size=(20, 50))
    s = g.sum(y * R)
    out = g.forward_node(y).copy()
    g.forward_node(s)
    x_val = g.get_node_value(x)
    mask = out / x_val  # 0 or 1/(1-p): the mask this forward used
    assert set(np.round(np.unique(mask), 9)) <= {0.0, round(1 / (1 - p), 9)}
    (gx,) = g.grad(s, [x], retain_graph=True)
    _close(gx, R * mask, "gradient = R * mask / (1-p)")
    # The same mask also in a second backward, and the forward value does not change.
    (gx2,) = g.grad(s, [x])
    np.testing.assert_array_equal(gx, gx2)
    np.testing.assert_array_equal(g.forward_node(y), out)


def test_dropout_mask_is_kept_until_the_input_changes_then_redrawn():
    g, x, y = _dropout_graph(0.5, shape=(10, 40))
    a = g.forward_node(y).copy()
    np.testing.assert_array_equal(g.forward_node(y), a)  # nothing changed: same mask
    g.set_value(x, np.ones((10, 40)))  # a new value (even an equal one) draws a new mask
    b = g.forward_node(y).copy()
    assert not np.array_equal(a, b)


def test_dropout_in_eval_mode_is_the_identity_with_identity_gradient():
    rng = np.random.default_rng(1)
    g, x, y = _dropout_graph(0.7, shape=(6, 50))
    xv = rng.normal(size=(6, 50))
    g.set_value(x, xv)
    g.set_eval_mode()
    s = g.sum(y * 3.0)
    np.testing.assert_array_equal(g.forward_node(y), xv)
    g.forward_node(s)
    (gx,) = g.grad(s, [x])
    np.testing.assert_array_equal(gx, np.full_like(xv, 3.0))
    g.set_train_mode()
    assert (g.forward_node(y) == 0).any()  # back to dropping


def test_dropout_under_no_grad_scope_is_the_identity():
    g, _, y = _dropout_graph(0.5, shape=(4, 50))
    out = g.no_grad_scope(lambda gr: gr.forward_node(y).copy())
    np.testing.assert_array_equal(out, np.ones((4, 50)))
    assert g.is_train_mode() and g.is_grad_enabled()


def test_dropout_p0_is_the_identity_and_p1_gives_zeros_with_zero_gradient():
    rng = np.random.default_rng(2)
    xv = rng.normal(size=(5, 50))
    for p, want_out, want_grad in ((0.0, xv, np.ones_like(xv)), (1.0, np.zeros_like(xv), np.zeros_like(xv))):
        g, x, y = _dropout_graph(p, shape=(5, 50))
        g.set_value(x, xv)
        s = g.sum(y)
        out = g.forward_node(y)
        g.forward_node(s)
        (gx,) = g.grad(s, [x])
        np.testing.assert_array_equal(out, want_out)
        np.testing.assert_array_equal(gx, want_grad)
        assert np.isfinite(gx).all()


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_probability_outside_0_1_is_rejected(p):
    g = ot.Graph()
    x = g.input("x", shape=(None, 3))
    with pytest.raises(ot.GraphError, match=r"dropout probability must lie in \[0, 1\]"):
        g.dropout(x, p=p)


def test_dropout_masks_are_reproducible_from_the_seed():
    def masks(seed):
        g, x, y = _dropout_graph(0.5, shape=(8, 30), seed=seed)
        out = [g.forward_node(y).copy()]
        g.set_value(x, np.ones((8, 30)))
        out.append(g.forward_node(y).copy())
        return out

    a, b, c = masks(7), masks(7), masks(8)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[0], c[0])


def test_dropout_keeps_float32():
    g, _, y = _dropout_graph(0.5, shape=(4, 10), dtype="float32")
    assert g.forward_node(y).dtype == np.float32


# ================================================================ batch norm


F_ = 4  # features


class BN:
    """Our g.batch_norm with its parameters and states, next to a torch twin."""

    def __init__(self, rng, momentum=0.1, eps=1e-5, dtype="float64"):
        self.g = g = ot.Graph(dtype=dtype)
        self.momentum, self.eps = momentum, eps
        gamma0, beta0 = rng.normal(size=F_) + 1.0, rng.normal(size=F_)
        self.x = g.input("x", shape=(None, F_))
        self.gamma = g.parameter("gamma", value=gamma0)
        self.beta = g.parameter("beta", value=beta0)
        self.rm = g.state("running_mean", shape=(F_,), init="zeros")
        self.rv = g.state("running_var", shape=(F_,), init="ones")
        self.y = g.batch_norm(self.x, self.gamma, self.beta, self.rm, self.rv, momentum=momentum, eps=eps, name="bn")
        self.t_gamma = torch.tensor(gamma0, requires_grad=True)
        self.t_beta = torch.tensor(beta0, requires_grad=True)
        self.t_rm = torch.zeros(F_, dtype=torch.float64)
        self.t_rv = torch.ones(F_, dtype=torch.float64)

    def torch_forward(self, x, training):
        return F.batch_norm(
            x, self.t_rm, self.t_rv, self.t_gamma, self.t_beta, training=training, momentum=self.momentum, eps=self.eps
        )


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_batch_norm_output_and_derivatives_match_torch(mode):
    rng = np.random.default_rng(3)
    bn = BN(rng)
    g = bn.g
    train = mode == "train"
    if not train:  # give the running statistics something to say
        g.set_value(bn.rm, rng.normal(size=F_))
        g.set_value(bn.rv, rng.uniform(0.5, 2.0, F_))
        bn.t_rm.copy_(torch.tensor(g.get_node_value(bn.rm)))
        bn.t_rv.copy_(torch.tensor(g.get_node_value(bn.rv)))
        g.set_eval_mode()
    xv = rng.normal(size=(6, F_)) * 2 + 1
    g.set_value(bn.x, xv)
    R = rng.normal(size=(6, F_))
    s = g.sum(g.tanh(bn.y) * R)  # non-linear so that second derivatives are not trivially zero
    out = g.forward_node(bn.y).copy()
    firsts, Vs, second = _second_order(g, s, [bn.x, bn.gamma, bn.beta], rng)

    tx = torch.tensor(xv, requires_grad=True)
    ty = bn.torch_forward(tx, training=train)
    ts = (torch.tanh(ty) * torch.tensor(R)).sum()
    t_first, t_second = _torch_second_order(ts, [tx, bn.t_gamma, bn.t_beta], Vs)
    _close(out, ty.detach().numpy(), "output")
    for name, a, b in zip(("x", "gamma", "beta"), firsts, t_first):
        _close(a, b, f"gradient wrt {name}")
    for name, a, b in zip(("x", "gamma", "beta"), second, t_second):
        _close(a, b, f"second derivative wrt {name}", rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("momentum", [0.1, 0.5])
def test_batch_norm_running_statistics_follow_torch_over_several_steps(momentum):
    rng = np.random.default_rng(4)
    bn = BN(rng, momentum=momentum)
    g = bn.g
    for step in range(4):
        xv = rng.normal(size=(5 + step, F_)) * (step + 1) + step
        g.set_value(bn.x, xv)
        out = g.forward_node(bn.y)
        ty = bn.torch_forward(torch.tensor(xv), training=True)
        _close(out, ty.detach().numpy(), f"output at step {step}")
        _close(g.get_node_value(bn.rm), bn.t_rm.numpy(), f"running mean after step {step}")
        _close(g.get_node_value(bn.rv), bn.t_rv.numpy(), f"running var (unbiased) after step {step}")
    # A second forward without new data does not move the statistics again.
    before = g.get_node_value(bn.rm).copy()
    g.forward_node(bn.y)
    np.testing.assert_array_equal(g.get_node_value(bn.rm), before)
    # Eval mode then uses them.
    g.set_eval_mode()
    xv = rng.normal(size=(3, F_))
    g.set_value(bn.x, xv)
    _close(g.forward_node(bn.y), bn.torch_forward(torch.tensor(xv), training=False).detach().numpy(), "eval output")
    _close(g.get_node_value(bn.rm), bn.t_rm.numpy(), "eval leaves the running mean alone")


def test_batch_norm_batch_of_one_in_train_mode_is_a_graph_error_naming_the_node():
    bn = BN(np.random.default_rng(5))
    bn.g.set_value(bn.x, np.ones((1, F_)))
    with pytest.raises(ot.GraphError, match=r"'bn'.*more than one sample"):
        bn.g.forward_node(bn.y)
    np.testing.assert_array_equal(bn.g.get_node_value(bn.rm), np.zeros(F_))  # not moved
    bn.g.set_eval_mode()  # fine in eval mode
    assert bn.g.forward_node(bn.y).shape == (1, F_)


def test_batch_norm_under_no_grad_scope_uses_and_keeps_the_running_statistics():
    rng = np.random.default_rng(6)
    bn = BN(rng)
    g = bn.g
    g.set_value(bn.x, rng.normal(size=(8, F_)))
    g.forward_node(bn.y)  # one train step moves the statistics
    rm, rv = g.get_node_value(bn.rm).copy(), g.get_node_value(bn.rv).copy()
    xv = rng.normal(size=(3, F_))
    g.set_value(bn.x, xv)
    out = g.no_grad_scope(lambda gr: gr.forward_node(bn.y).copy())
    gamma, beta = g.get_node_value(bn.gamma), g.get_node_value(bn.beta)
    _close(out, (xv - rm) / np.sqrt(rv + 1e-5) * gamma + beta, "no_grad output uses the running statistics")
    np.testing.assert_array_equal(g.get_node_value(bn.rm), rm)
    np.testing.assert_array_equal(g.get_node_value(bn.rv), rv)
    assert g.is_train_mode()


def test_batch_norm_switching_modes_recomputes_without_a_new_input():
    rng = np.random.default_rng(7)
    bn = BN(rng)
    g = bn.g
    g.set_value(bn.x, rng.normal(size=(6, F_)))
    train_out = g.forward_node(bn.y).copy()
    g.set_eval_mode()
    eval_out = g.forward_node(bn.y).copy()
    assert not np.allclose(train_out, eval_out)
    g.set_train_mode()
    _close(g.forward_node(bn.y), bn.torch_forward(torch.tensor(g.get_node_value(bn.x)), True).detach().numpy(), "")


def test_batch_norm_keeps_float32_and_rejects_bad_shapes():
    rng = np.random.default_rng(8)
    bn = BN(rng, dtype="float32")
    bn.g.set_value(bn.x, rng.normal(size=(4, F_)))
    assert bn.g.forward_node(bn.y).dtype == np.float32
    assert bn.g.get_node_value(bn.rm).dtype == np.float32
    g = ot.Graph()
    x = g.input("x", shape=(None, 3))
    gamma = g.parameter("gamma", shape=(4,), init="ones")
    beta = g.parameter("beta", shape=(3,), init="zeros")
    rm, rv = g.state("rm", shape=(3,)), g.state("rv", shape=(3,), init="ones")
    with pytest.raises(ot.ShapeError, match=r"gamma must have shape \(3,\)"):
        g.batch_norm(x, gamma, beta, rm, rv)
    # (N, C, L) and (N, C, H, W) are batch norm's too since issue 13 (tests/ops/test_norm_nd.py);
    # a single axis has no features to normalise
    x1 = g.input("x1", shape=(3,))
    with pytest.raises(ot.ShapeError, match=r"batch_norm takes \(batch, features\)"):
        g.batch_norm(x1, beta, beta, rm, rv)


# ================================================================ layer norm


@pytest.mark.parametrize(
    ("shape", "axis"),
    [((6, 5), -1), ((4, 3, 5), -1), ((4, 3, 5), (-2, -1)), ((2, 3, 4, 5), (1, 2, 3))],
    ids=["2d-last", "3d-last", "3d-last-two", "4d-last-three"],
)
def test_layer_norm_matches_torch_with_second_derivatives(shape, axis):
    rng = np.random.default_rng(9)
    axes = (axis,) if isinstance(axis, int) else axis
    norm_shape = tuple(shape[a] for a in axes)
    xv = rng.normal(size=shape) * 3 + 1
    gv, bv = rng.normal(size=norm_shape) + 1, rng.normal(size=norm_shape)
    R = rng.normal(size=shape)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, *shape[1:]))
    gamma = g.parameter("gamma", value=gv)
    beta = g.parameter("beta", value=bv)
    g.set_value(x, xv)
    y = g.layer_norm(x, gamma, beta, axis=axis, eps=1e-5)
    s = g.sum(g.tanh(y) * R)
    out = g.forward_node(y).copy()
    firsts, Vs, second = _second_order(g, s, [x, gamma, beta], rng)

    tx, tg, tb = (torch.tensor(a, requires_grad=True) for a in (xv, gv, bv))
    ty = F.layer_norm(tx, norm_shape, tg, tb, eps=1e-5)
    t_first, t_second = _torch_second_order((torch.tanh(ty) * torch.tensor(R)).sum(), [tx, tg, tb], Vs)
    _close(out, ty.detach().numpy(), "output")
    for name, a, b in zip(("x", "gamma", "beta"), firsts, t_first):
        _close(a, b, f"gradient wrt {name}")
    for name, a, b in zip(("x", "gamma", "beta"), second, t_second):
        _close(a, b, f"second derivative wrt {name}", rtol=1e-8, atol=1e-10)


def test_layer_norm_is_the_same_in_train_and_eval_mode_and_rejects_bad_gamma():
    rng = np.random.default_rng(10)
    g = ot.Graph(dtype="float64")
    x = g.input("x", shape=(None, 5))
    gamma = g.parameter("gamma", value=rng.normal(size=5))
    beta = g.parameter("beta", value=rng.normal(size=5))
    g.set_value(x, rng.normal(size=(3, 5)))
    y = g.layer_norm(x, gamma, beta)
    a = g.forward_node(y).copy()
    g.set_eval_mode()
    np.testing.assert_array_equal(g.forward_node(y), a)
    bad = g.parameter("bad", shape=(4,), init="ones")
    with pytest.raises(ot.ShapeError):
        g.layer_norm(x, bad, beta)


# ================================================================ embedding


def _embedding(idx_shape=(None, 3), rows=6, dim=4, seed=11):
    rng = np.random.default_rng(seed)
    g = ot.Graph(dtype="float64")
    w0 = rng.normal(size=(rows, dim))
    idx = g.input("tokens", shape=idx_shape, dtype="int64")
    w = g.parameter("table", value=w0)
    return g, idx, w, w0, rng


@pytest.mark.parametrize(
    "idx_value",
    [np.array([3, 1, 3, 3, 0]), np.array([[0, 5, 2], [5, 5, 1]]), np.array([[[2, 2], [2, 2]]])],
    ids=["1d-repeats", "2d", "3d-all-same"],
)
def test_embedding_forward_and_gradient_with_repeated_indices_match_torch(idx_value):
    g, idx, w, w0, rng = _embedding(idx_shape=(None, *idx_value.shape[1:]))
    g.set_value(idx, idx_value)
    y = g.embedding(idx, w)
    R = rng.normal(size=(*idx_value.shape, 4))
    s = g.sum(g.sin(y) * R)
    out = g.forward_node(y).copy()
    firsts, Vs, second = _second_order(g, s, [w], rng)
    tw = torch.tensor(w0, requires_grad=True)
    ty = F.embedding(torch.tensor(idx_value), tw)
    t_first, t_second = _torch_second_order((torch.sin(ty) * torch.tensor(R)).sum(), [tw], Vs)
    np.testing.assert_array_equal(out, w0[idx_value])
    _close(out, ty.detach().numpy(), "output")
    _close(firsts[0], t_first[0], "gradient wrt the table (repeats accumulate)")
    _close(second[0], t_second[0], "second derivative wrt the table")
    untouched = np.setdiff1d(np.arange(6), idx_value)
    np.testing.assert_array_equal(firsts[0][untouched], 0.0)


@pytest.mark.parametrize("bad", [6, -1], ids=["too-large", "negative"])
def test_embedding_index_out_of_range_is_a_graph_error_naming_the_node(bad):
    g, idx, w, *_ = _embedding()
    g.set_value(idx, np.array([[0, 1, bad]]))
    y = g.embedding(idx, w, name="lookup")
    with pytest.raises(ot.GraphError, match=r"'lookup'.*\[0, 6\)"):
        g.forward_node(y)


def test_embedding_rejects_a_table_that_is_not_2d():
    g = ot.Graph()
    idx = g.input("i", shape=(None,), dtype="int64")
    w = g.parameter("w", shape=(3, 4, 5))
    with pytest.raises(ot.ShapeError, match=r"embedding weight must be \(num_embeddings, dim\)"):
        g.embedding(idx, w)


def test_a_shared_batch_norm_moves_its_statistics_once_per_new_batch():
    rng = np.random.default_rng(12)
    bn = BN(rng)
    g = bn.g
    x2 = g.input("x2", shape=(None, F_))
    y2 = g.batch_norm(x2, bn.gamma, bn.beta, bn.rm, bn.rv, momentum=0.1, eps=1e-5)
    loss = g.sum(bn.y) + g.sum(y2)
    g.set_value(bn.x, rng.normal(size=(4, F_)))
    g.set_value(x2, rng.normal(size=(4, F_)))
    g.forward_node(loss)
    after_one = g.get_node_value(bn.rm).copy()
    g.forward_node(loss)  # nothing changed: nothing to recompute
    np.testing.assert_array_equal(g.get_node_value(bn.rm), after_one)
    # The statistics the second call wrote do not make the first call's value stale.
    g.backward_nodes([bn.gamma], loss)
    assert g.get_node_grad(bn.gamma) is not None


def test_layer_norm_and_embedding_keep_float32():
    rng = np.random.default_rng(13)
    g = ot.Graph()
    x = g.input("x", shape=(None, 5))
    idx = g.input("i", shape=(None,), dtype="int64")
    table = g.parameter("table", shape=(4, 5), init="normal")
    gamma, beta = g.parameter("gamma", shape=(5,), init="ones"), g.parameter("beta", shape=(5,), init="zeros")
    g.set_value(x, rng.normal(size=(3, 5)))
    g.set_value(idx, np.array([0, 3, 3]))
    y = g.layer_norm(x, gamma, beta) + g.embedding(idx, table)
    loss = g.sum(y * y)
    assert g.forward_node(y).dtype == np.float32
    g.forward_node(loss)
    g.backward_nodes([x, gamma, table], loss)
    assert all(g.get_node_grad(n).dtype == np.float32 for n in (x, gamma, table))
