"""Every loss against torch.nn.functional in float64: value, first derivatives (prediction and,
where torch has one, target) and second derivatives (gradient of sum(grad * V)), for every
reduction; target broadcasting, dtype preservation, bad arguments, finite-difference checks."""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import onlytorch as ot

N, T, C = 5, 3, 4
RTOL, ATOL = 1e-9, 1e-11


# ---------------------------------------------------------------- data


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _log_softmax(z: np.ndarray) -> np.ndarray:
    return np.log(_softmax(z))


def _huber_pair(delta: float):
    """Differences on both sides of delta (never within 1e-3 of the kink or of 0)."""

    def make(rng):
        mag = np.concatenate([rng.uniform(0.05, delta - 0.01, 10), rng.uniform(delta + 0.01, 3 * delta, 10)])
        d = mag * rng.choice([-1.0, 1.0], size=mag.shape)
        target = rng.normal(size=d.shape)
        return (target + d).reshape(4, 5), target.reshape(4, 5)

    return make


def _prob_targets_with_zeros(rng):
    q = _softmax(rng.normal(size=(N, C)))
    q[0, 1] = q[2, 0] = q[3, 3] = 0.0
    q[4] = 0.0
    return _log_softmax(rng.normal(size=(N, C))), q


# ---------------------------------------------------------------- cases


@dataclass
class Case:
    id: str
    ours: Callable  # (g, pred, target, reduction) -> NodeId
    theirs: Callable  # (pred, target, reduction) -> torch.Tensor
    make: Callable  # rng -> (pred, target)
    target_grad: bool = True  # torch gives a gradient wrt the target (a float target)
    reductions: tuple[str, ...] = ("mean", "sum", "none")


def _ce(ls: float = 0.0):
    def ours(g, p, t, r):
        return g.cross_entropy(p, t, label_smoothing=ls, reduction=r)

    def theirs(p, t, r):
        if p.ndim == 3:  # ours: classes on the last axis; torch: on axis 1
            p = p.permute(0, 2, 1)
            t = t.permute(0, 2, 1) if t.is_floating_point() else t
        return F.cross_entropy(p, t, label_smoothing=ls, reduction=r)

    return ours, theirs


def _nll():
    def theirs(p, t, r):
        return F.nll_loss(p.permute(0, 2, 1) if p.ndim == 3 else p, t, reduction=r)

    return (lambda g, p, t, r: g.nll(p, t, reduction=r)), theirs


def _kl(log_target: bool):
    return (
        lambda g, p, t, r: g.kl_div(p, t, reduction=r, log_target=log_target),
        lambda p, t, r: F.kl_div(p, t, reduction=r, log_target=log_target),
    )


KL_REDUCTIONS = ("mean", "sum", "none", "batchmean")

CASES = [
    Case(
        "mse",
        lambda g, p, t, r: g.mse(p, t, reduction=r),
        lambda p, t, r: F.mse_loss(p, t, reduction=r),
        lambda rng: (rng.normal(size=(N, C)), rng.normal(size=(N, C))),
    ),
    Case(
        "l1",
        lambda g, p, t, r: g.l1(p, t, reduction=r),
        lambda p, t, r: F.l1_loss(p, t, reduction=r),
        lambda rng: (rng.normal(size=(N, C)), rng.normal(size=(N, C))),
    ),
    *[
        Case(
            f"huber-delta{d}",
            lambda g, p, t, r, d=d: g.huber(p, t, delta=d, reduction=r),
            lambda p, t, r, d=d: F.huber_loss(p, t, delta=d, reduction=r),
            _huber_pair(d),
        )
        for d in (0.5, 1.0, 2.5)
    ],
    Case(
        "bce",
        lambda g, p, t, r: g.bce(p, t, reduction=r),
        lambda p, t, r: F.binary_cross_entropy(p, t, reduction=r),
        lambda rng: (rng.uniform(0.05, 0.95, (N, C)), rng.uniform(0, 1, (N, C))),
    ),
    Case(
        "bce-hard-labels",
        lambda g, p, t, r: g.bce(p, t, reduction=r),
        lambda p, t, r: F.binary_cross_entropy(p, t, reduction=r),
        lambda rng: (rng.uniform(0.05, 0.95, (N, 1)), rng.integers(0, 2, (N, 1)).astype(float)),
    ),
    Case(
        "bce_with_logits",
        lambda g, p, t, r: g.bce_with_logits(p, t, reduction=r),
        lambda p, t, r: F.binary_cross_entropy_with_logits(p, t, reduction=r),
        lambda rng: (3 * rng.normal(size=(N, C)), rng.uniform(0, 1, (N, C))),
    ),
    Case(
        "bce_with_logits-extreme",
        lambda g, p, t, r: g.bce_with_logits(p, t, reduction=r),
        lambda p, t, r: F.binary_cross_entropy_with_logits(p, t, reduction=r),
        lambda rng: (np.array([[-50.0, 50.0, -50.0, 50.0, 0.0, -30.0]]), np.array([[0.0, 1.0, 1.0, 0.0, 0.5, 0.3]])),
    ),
    Case("ce-labels", *_ce(), lambda rng: (rng.normal(size=(N, C)), rng.integers(0, C, N)), target_grad=False),
    Case(
        "ce-labels-3d", *_ce(), lambda rng: (rng.normal(size=(N, T, C)), rng.integers(0, C, (N, T))), target_grad=False
    ),
    Case("ce-probs", *_ce(), lambda rng: (rng.normal(size=(N, C)), _softmax(rng.normal(size=(N, C))))),
    Case("ce-probs-3d", *_ce(), lambda rng: (rng.normal(size=(N, T, C)), _softmax(rng.normal(size=(N, T, C))))),
    Case(
        "ce-labels-smooth0.1",
        *_ce(0.1),
        lambda rng: (rng.normal(size=(N, C)), rng.integers(0, C, N)),
        target_grad=False,
    ),
    Case(
        "ce-labels-3d-smooth0.3",
        *_ce(0.3),
        lambda rng: (rng.normal(size=(N, T, C)), rng.integers(0, C, (N, T))),
        target_grad=False,
    ),
    Case("ce-probs-smooth0.2", *_ce(0.2), lambda rng: (rng.normal(size=(N, C)), _softmax(rng.normal(size=(N, C))))),
    Case(
        "ce-probs-3d-smooth1.0",
        *_ce(1.0),
        lambda rng: (rng.normal(size=(N, T, C)), _softmax(rng.normal(size=(N, T, C)))),
    ),
    Case("nll", *_nll(), lambda rng: (_log_softmax(rng.normal(size=(N, C))), rng.integers(0, C, N)), target_grad=False),
    Case(
        "nll-3d",
        *_nll(),
        lambda rng: (_log_softmax(rng.normal(size=(N, T, C))), rng.integers(0, C, (N, T))),
        target_grad=False,
    ),
    Case(
        "kl_div",
        *_kl(False),
        lambda rng: (_log_softmax(rng.normal(size=(N, C))), _softmax(rng.normal(size=(N, C)))),
        reductions=KL_REDUCTIONS,
    ),
    Case(
        "kl_div-3d",
        *_kl(False),
        lambda rng: (_log_softmax(rng.normal(size=(N, T, C))), _softmax(rng.normal(size=(N, T, C)))),
        reductions=KL_REDUCTIONS,
    ),
    # torch's gradient wrt a target of exactly 0 is NaN (xlogy); ours is 0. Compare the input's.
    Case("kl_div-target-zeros", *_kl(False), _prob_targets_with_zeros, target_grad=False, reductions=KL_REDUCTIONS),
    Case(
        "kl_div-1d",
        *_kl(False),
        lambda rng: (_log_softmax(rng.normal(size=(1, 7)))[0], _softmax(rng.normal(size=(1, 7)))[0]),
        reductions=KL_REDUCTIONS,
    ),
    Case(
        "kl_div-log_target",
        *_kl(True),
        lambda rng: (_log_softmax(rng.normal(size=(N, C))), _log_softmax(rng.normal(size=(N, C)))),
        reductions=KL_REDUCTIONS,
    ),
]


# ---------------------------------------------------------------- the two sides


def _ours(case: Case, pred: np.ndarray, target: np.ndarray, reduction: str, rng, dtype="float64"):
    """Value, first derivatives (numpy path and create_graph path) and second derivatives."""
    g = ot.Graph(dtype=dtype)
    p = g.input("pred", shape=(None, *pred.shape[1:]))
    is_int = target.dtype.kind in "iu"
    t = g.input("target", shape=(None, *target.shape[1:]), dtype="int64" if is_int else None)
    g.set_value(p, pred)
    g.set_value(t, target)
    loss = case.ours(g, p, t, reduction)
    value = g.forward_node(loss)
    R = rng.normal(size=value.shape)
    s = g.sum(loss * R)
    g.forward_node(s)
    wrt = [p, t] if case.target_grad else [p]
    first_np = g.grad(s, wrt, retain_graph=True)
    g.forward_node(s)
    first = g.grad(s, wrt, create_graph=True)
    Vs = [rng.normal(size=a.shape) for a in first_np]
    h = g.sum(first[0] * Vs[0])
    for gi, v in zip(first[1:], Vs[1:]):
        h = h + g.sum(gi * v)
    first_graph = [np.array(v) for v in g.forward_node(list(first))]
    g.forward_node(h)
    second = g.grad(h, wrt, allow_unused=True)
    second = [np.zeros_like(a) if b is None else b for a, b in zip(first_np, second)]
    return value, R, first_np, first_graph, Vs, second


def _theirs(case: Case, pred, target, reduction: str, R, Vs):
    tp = torch.tensor(pred, requires_grad=True)
    tt = torch.tensor(target, requires_grad=case.target_grad)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning
        loss = case.theirs(tp, tt, reduction)
    s = (loss * torch.tensor(R)).sum()
    wrt = [tp, tt] if case.target_grad else [tp]
    first = torch.autograd.grad(s, wrt, create_graph=True, allow_unused=True)
    h = sum((f * torch.tensor(v)).sum() for f, v in zip(first, Vs) if f is not None)
    second = torch.autograd.grad(h, wrt, allow_unused=True) if torch.is_tensor(h) and h.requires_grad else None
    second = [torch.zeros_like(w) if second is None or s2 is None else s2 for w, s2 in zip(wrt, second or wrt)]
    np_ = [np.zeros(w.shape) if f is None else f.detach().numpy() for w, f in zip(wrt, first)]
    return loss.detach().numpy(), np_, [s2.detach().numpy(force=True) for s2 in second]


def _params():
    for case in CASES:
        for r in case.reductions:
            yield pytest.param(case, r, id=f"{case.id}-{r}")


@pytest.mark.parametrize(("case", "reduction"), list(_params()))
def test_loss_value_and_derivatives_match_torch(case: Case, reduction: str):
    rng = np.random.default_rng(zlib.crc32(case.id.encode()))
    pred, target = case.make(rng)
    value, R, first_np, first_nodes, Vs, second = _ours(case, pred, target, reduction, rng)
    t_value, t_first, t_second = _theirs(case, pred, target, reduction, R, Vs)
    np.testing.assert_allclose(value, t_value, rtol=RTOL, atol=ATOL, err_msg="forward value")
    assert value.shape == t_value.shape
    names = ["prediction", "target"]
    for name, a, b, c in zip(names, first_np, first_nodes, t_first):
        np.testing.assert_allclose(a, c, rtol=RTOL, atol=ATOL, err_msg=f"gradient wrt {name}")
        np.testing.assert_allclose(b, c, rtol=RTOL, atol=ATOL, err_msg=f"create_graph gradient wrt {name}")
    for name, a, c in zip(names, second, t_second):
        np.testing.assert_allclose(a, c, rtol=1e-8, atol=1e-10, err_msg=f"second derivative wrt {name}")
    for arr in (value, *first_np, *second):
        assert np.isfinite(arr).all()


# ---------------------------------------------------------------- targets that broadcast


@pytest.mark.parametrize("value", [1.0, 0.0], ids=["real-1", "fake-0"])
def test_bce_with_logits_against_a_number_like_a_gan(value):
    rng = np.random.default_rng(1)
    d = rng.normal(size=(6, 1)) * 4
    g = ot.Graph(dtype="float64")
    x = g.input("d_real", shape=(None, 1))
    g.set_value(x, d)
    loss = g.bce_with_logits(x, value)
    g.forward_node(loss)
    (gx,) = g.grad(loss, [x])
    tx = torch.tensor(d, requires_grad=True)
    tl = F.binary_cross_entropy_with_logits(tx, torch.full_like(tx, value))
    tl.backward()
    np.testing.assert_allclose(g.get_node_value(loss), tl.item(), rtol=RTOL)
    np.testing.assert_allclose(gx, tx.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize(
    ("name", "tfn"),
    [
        ("mse", lambda p, t: F.mse_loss(p, t.expand_as(p))),
        ("l1", lambda p, t: F.l1_loss(p, t.expand_as(p))),
        ("huber", lambda p, t: F.huber_loss(p, t.expand_as(p))),
        ("bce_with_logits", lambda p, t: F.binary_cross_entropy_with_logits(p, t.expand_as(p))),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
@pytest.mark.parametrize("tshape", [(), (1, C), (C,)], ids=["scalar", "row-1xC", "row-C"])
def test_a_broadcast_target_gets_the_summed_gradient(name, tfn, tshape):
    rng = np.random.default_rng(2)
    pred = rng.normal(size=(N, C))
    target = rng.uniform(0.1, 0.9, size=tshape)
    g = ot.Graph(dtype="float64")
    p = g.input("p", shape=(None, C))
    t = g.input("t", shape=tshape)
    g.set_value(p, pred)
    g.set_value(t, target)
    loss = getattr(g, name)(p, t)
    assert loss.shape == ()
    g.forward_node(loss)
    gp, gt = g.grad(loss, [p, t])
    tp = torch.tensor(pred, requires_grad=True)
    tt = torch.tensor(target, requires_grad=True)
    tl = tfn(tp, tt)
    tl.backward()
    np.testing.assert_allclose(g.get_node_value(loss), tl.item(), rtol=RTOL)
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=RTOL, atol=ATOL)
    assert gt.shape == tshape
    np.testing.assert_allclose(gt, tt.grad.numpy(), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- numerical edges


def test_bce_with_logits_of_plus_minus_50_is_finite_in_float32_and_float64():
    for dtype in ("float32", "float64"):
        g = ot.Graph(dtype=dtype)
        x = g.input("x", shape=(None,))
        x_val = np.array([-50.0, 50.0, -50.0, 50.0, -1000.0, 1000.0])
        t_val = np.array([0.0, 1.0, 1.0, 0.0, 0.0, 1.0])
        g.set_value(x, x_val)
        loss = g.bce_with_logits(x, t_val, reduction="none")
        total = g.sum(loss)
        value, _ = g.forward_node([loss, total])
        (gx,) = g.grad(total, [x])
        assert np.isfinite(value).all() and np.isfinite(gx).all()
        np.testing.assert_allclose(value, [0, 0, 50, 50, 0, 0], atol=1e-6)
        np.testing.assert_allclose(gx, [0, 0, -1, 1, 0, 0], atol=1e-6)


def test_bce_at_probabilities_exactly_0_and_1_has_finite_gradients_as_torch():
    """torch clamps each log at -100 and divides the gradient by max(p (1 - p), 1e-12)."""
    p_val = np.array([0.0, 1.0, 0.0, 1.0, 0.3])
    t_val = np.array([1.0, 0.0, 0.0, 1.0, 0.5])
    g = ot.Graph(dtype="float64")
    p = g.input("p", shape=(None,))
    g.set_value(p, p_val)
    loss = g.bce(p, t_val, reduction="sum")
    g.forward_node(loss)
    (gp,) = g.grad(loss, [p])
    tp = torch.tensor(p_val, requires_grad=True)
    tl = F.binary_cross_entropy(tp, torch.tensor(t_val), reduction="sum")
    tl.backward()
    np.testing.assert_allclose(g.get_node_value(loss), tl.item(), rtol=RTOL)
    assert np.isfinite(gp).all()
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=1e-8)  # torch's 1e-12 is a float32 constant


@pytest.mark.parametrize(
    ("name", "tfn"),
    [
        ("l1", lambda p, t: F.l1_loss(p, t, reduction="sum")),
        ("huber", lambda p, t: F.huber_loss(p, t, delta=0.5, reduction="sum")),
    ],
    ids=["l1", "huber"],
)
def test_gradients_at_the_kinks_match_torch(name, tfn):
    """d = 0 for l1 (gradient 0, as torch's sign) and |d| = delta for huber."""
    target = np.array([0.3, -1.0, 2.0, 0.0, 1.0])
    pred = target + np.array([0.0, 0.5, -0.5, 0.0, 2.0])
    g = ot.Graph(dtype="float64")
    p = g.input("p", shape=(None,))
    g.set_value(p, pred)
    loss = g.l1(p, target, reduction="sum") if name == "l1" else g.huber(p, target, delta=0.5, reduction="sum")
    g.forward_node(loss)
    (gp,) = g.grad(loss, [p])
    tp = torch.tensor(pred, requires_grad=True)
    tl = tfn(tp, torch.tensor(target))
    tl.backward()
    np.testing.assert_allclose(g.get_node_value(loss), tl.item(), rtol=RTOL)
    np.testing.assert_allclose(gp, tp.grad.numpy(), rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("bad", [1.3, -0.2])
def test_bce_rejects_probabilities_outside_0_1_naming_them(bad):
    g = ot.Graph(dtype="float64")
    p = g.input("probs", shape=(None,))
    g.set_value(p, np.array([0.5, bad]))
    loss = g.bce(p, 1.0)
    with pytest.raises(ot.GraphError, match=r"bce: the probabilities 'probs' must lie in \[0, 1\].*bce_with_logits"):
        g.forward_node(loss)


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, -1000.0, 0.0], [-500.0, 500.0, 499.0]])
    labels = np.array([1, 2])
    g = ot.Graph(dtype="float64")
    z = g.input("z", shape=(None, 3))
    y = g.input("y", shape=(None,), dtype="int64")
    g.set_value(z, logits)
    g.set_value(y, labels)
    loss = g.cross_entropy(z, y)
    g.forward_node(loss)
    (gz,) = g.grad(loss, [z])
    tz = torch.tensor(logits, requires_grad=True)
    tl = F.cross_entropy(tz, torch.tensor(labels))
    tl.backward()
    np.testing.assert_allclose(g.get_node_value(loss), tl.item(), rtol=RTOL)
    np.testing.assert_allclose(gz, tz.grad.numpy(), rtol=RTOL, atol=ATOL)


# ---------------------------------------------------------------- dtype


LOSS_BUILDERS = {
    "mse": lambda g, p, y, q: g.mse(p, q),
    "l1": lambda g, p, y, q: g.l1(p, q),
    "huber": lambda g, p, y, q: g.huber(p, q, delta=0.5),
    "bce": lambda g, p, y, q: g.bce(g.sigmoid(p), q),
    "bce_with_logits": lambda g, p, y, q: g.bce_with_logits(p, q),
    "cross_entropy-labels": lambda g, p, y, q: g.cross_entropy(p, y, label_smoothing=0.1),
    "cross_entropy-probs": lambda g, p, y, q: g.cross_entropy(p, q),
    "nll": lambda g, p, y, q: g.nll(g.log_softmax(p), y),
    "kl_div": lambda g, p, y, q: g.kl_div(g.log_softmax(p), q, reduction="batchmean"),
}


@pytest.mark.parametrize("name", list(LOSS_BUILDERS))
def test_float32_graphs_keep_float32(name):
    rng = np.random.default_rng(3)
    g = ot.Graph(dtype="float32")
    p = g.input("p", shape=(None, C))
    y = g.input("y", shape=(None,), dtype="int64")
    q = g.input("q", shape=(None, C))
    g.set_value(p, rng.normal(size=(N, C)))
    g.set_value(y, rng.integers(0, C, N))
    g.set_value(q, _softmax(rng.normal(size=(N, C))))
    loss = LOSS_BUILDERS[name](g, p, y, q)
    value = g.forward_node(loss)
    assert loss.dtype == np.float32 and value.dtype == np.float32
    g.backward_nodes([p], loss)
    assert g.get_node_grad(p).dtype == np.float32
    assert np.isfinite(g.get_node_grad(p)).all()


# ---------------------------------------------------------------- bad arguments


def _graph_with_inputs():
    g = ot.Graph(dtype="float64")
    p = g.input("p", shape=(None, C))
    q = g.input("q", shape=(None, C))
    y = g.input("y", shape=(None,), dtype="int64")
    yf = g.input("yf", shape=(None,))
    return g, p, q, y, yf


ALL_LOSSES = {
    "mse": lambda g, p, q, y, **kw: g.mse(p, q, **kw),
    "l1": lambda g, p, q, y, **kw: g.l1(p, q, **kw),
    "huber": lambda g, p, q, y, **kw: g.huber(p, q, **kw),
    "bce": lambda g, p, q, y, **kw: g.bce(p, q, **kw),
    "bce_with_logits": lambda g, p, q, y, **kw: g.bce_with_logits(p, q, **kw),
    "cross_entropy": lambda g, p, q, y, **kw: g.cross_entropy(p, y, **kw),
    "nll": lambda g, p, q, y, **kw: g.nll(p, y, **kw),
    "kl_div": lambda g, p, q, y, **kw: g.kl_div(p, q, **kw),
}


@pytest.mark.parametrize("name", list(ALL_LOSSES))
def test_unknown_reduction_is_a_graph_error_listing_the_choices(name):
    g, p, q, y, _ = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match=rf"{name}: reduction must be one of 'mean', 'sum', 'none'.*'avg'"):
        ALL_LOSSES[name](g, p, q, y, reduction="avg")


def test_kl_div_lists_batchmean_among_its_reductions():
    g, p, q, *_ = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match=r"'mean', 'sum', 'none', 'batchmean'; got 'avg'"):
        g.kl_div(p, q, reduction="avg")


@pytest.mark.parametrize("name", [n for n in ALL_LOSSES if n != "kl_div"])
def test_batchmean_is_only_for_kl_div(name):
    g, p, q, y, _ = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match=rf"{name}: reduction 'batchmean' is only for kl_div"):
        ALL_LOSSES[name](g, p, q, y, reduction="batchmean")


@pytest.mark.parametrize("ls", [-0.1, 1.5], ids=["negative", "above-1"])
@pytest.mark.parametrize("target", ["labels", "probs"])
def test_label_smoothing_outside_0_1_is_rejected(ls, target):
    g, p, q, y, _ = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match=r"label_smoothing must lie in \[0, 1\]"):
        g.cross_entropy(p, y if target == "labels" else q, label_smoothing=ls)


@pytest.mark.parametrize("delta", [0.0, -1.0])
def test_huber_needs_a_positive_delta(delta):
    g, p, q, *_ = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match="delta must be positive"):
        g.huber(p, q, delta=delta)


def test_nll_rejects_float_labels_naming_them():
    g, p, _, _, yf = _graph_with_inputs()
    with pytest.raises(ot.GraphError, match=r"nll needs integer labels; 'yf' holds floats"):
        g.nll(p, yf)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
@pytest.mark.parametrize(
    ("label_shape", "logit_shape"),
    [((None, 1), (None, C)), ((None, T), (None, C)), ((None,), (None, T, C)), ((5,), (4, C))],
    ids=["column", "extra-axis", "missing-axis", "other-batch"],
)
def test_labels_of_the_wrong_shape_are_a_shape_error(loss, label_shape, logit_shape):
    g = ot.Graph(dtype="float64")
    z = g.input("z", shape=logit_shape)
    y = g.input("y", shape=label_shape, dtype="int64")
    with pytest.raises(ot.ShapeError, match=r"labels must have the logits' shape without the class axis"):
        getattr(g, loss)(z, y)


@pytest.mark.parametrize("tshape", [(None,), (None, C + 1), (None, T, C)], ids=["labels-as-floats", "wider", "deeper"])
def test_probability_targets_of_the_wrong_shape_are_a_shape_error(tshape):
    g = ot.Graph(dtype="float64")
    z = g.input("z", shape=(None, C))
    q = g.input("q", shape=tshape)
    with pytest.raises(ot.ShapeError, match=r"probabilities must have the logits' shape"):
        g.cross_entropy(z, q)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll"])
@pytest.mark.parametrize("bad", [-1, C], ids=["negative", "too-large"])
def test_labels_out_of_range_raise_a_graph_error_naming_the_labels(loss, bad):
    g = ot.Graph(dtype="float64")
    z = g.input("z", shape=(None, C))
    y = g.input("labels", shape=(None,), dtype="int64")
    g.set_value(z, np.zeros((3, C)))
    g.set_value(y, np.array([0, bad, 1]))
    out = getattr(g, loss)(z, y)
    with pytest.raises(ot.GraphError, match=rf"'labels'.*\[0, {C}\)"):
        g.forward_node(out)


# ---------------------------------------------------------------- finite differences


GRADCHECK = {
    "huber": lambda g, p, q, y: g.huber(p, q, delta=0.7, reduction="sum"),
    "bce": lambda g, p, q, y: g.bce(g.sigmoid(p), g.sigmoid(q)),
    "bce_with_logits": lambda g, p, q, y: g.bce_with_logits(p, g.sigmoid(q), reduction="sum"),
    "cross_entropy-labels-smoothed": lambda g, p, q, y: g.cross_entropy(p, y, label_smoothing=0.2),
    "cross_entropy-probs": lambda g, p, q, y: g.cross_entropy(p, g.softmax(q)),
    "kl_div-batchmean": lambda g, p, q, y: g.kl_div(g.log_softmax(p), g.softmax(q), reduction="batchmean"),
    "kl_div-log_target": lambda g, p, q, y: g.kl_div(g.log_softmax(p), g.log_softmax(q), log_target=True),
}


@pytest.mark.parametrize("name", list(GRADCHECK))
def test_gradcheck_and_gradgradcheck(name):
    rng = np.random.default_rng(4)
    g = ot.Graph(dtype="float64")
    p = g.parameter("p", value=rng.normal(size=(3, C)))
    q = g.parameter("q", value=rng.normal(size=(3, C)))
    y = g.constant(rng.integers(0, C, 3))
    loss = GRADCHECK[name](g, p, q, y)
    assert ot.gradcheck(g, loss, [p, q])
    assert ot.gradgradcheck(g, loss, [p, q])
