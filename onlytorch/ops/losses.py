"""Losses. Each is a composite of registry ops (so its derivatives of every order are theirs),
with one fused primitive where the composite would be numerically unsafe (bce_with_logits).
mse, bce_with_logits and cross_entropy of integer labels (without label smoothing), reduced by
mean or sum, are single fused nodes whose derivative is one
fused node too (a training step's loss costs two numpy passes, not a chain of small nodes); those
derivative nodes have derivative rules written with graph ops, so higher orders still work.

``reduction`` is "mean" (default), "sum", "none", or for kl_div also "batchmean"."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import GraphError, ShapeError
from ..export.builder import onnx_rule
from ..export.rules import alias, cast_to
from .elementwise import sigmoid
from .reduce import log_softmax
from .reduce import mean_all as _mean_all
from .registry import ShapeRuleError, defcomposite, defop
from .shapes import broadcast, class_count, elementwise, fmt

REDUCTIONS = ("mean", "sum", "none", "batchmean")


def reduce_loss(g, pointwise, reduction: str, op: str):
    if reduction == "mean":
        return g.mean(pointwise)
    if reduction == "sum":
        return g.sum(pointwise)
    if reduction == "none":
        return pointwise
    if reduction == "batchmean":
        nd = len(pointwise.shape)
        per_sample = g.sum(pointwise, axis=tuple(range(1, nd))) if nd > 1 else pointwise
        return g.mean(per_sample, axis=0)
    choices = "'mean', 'sum', 'none'" + (", 'batchmean'" if op == "kl_div" else "")
    raise GraphError(f"{op}: reduction must be one of {choices}; got {reduction!r}")


def _check_reduction(op: str, reduction: str) -> None:
    if reduction == "batchmean" and op != "kl_div":
        raise GraphError(f"{op}: reduction 'batchmean' is only for kl_div; use 'mean', 'sum' or 'none'")


# ---------------------------------------------------------------- ONNX mappings (onnx=)
# The losses' forwards (a loss node can be exported: --node LOSS); their derivative ops do not map.


def _onnx_reduced(b, n, pointwise):
    """The mean or sum of every element (no axes: ReduceSum's axes input and ReduceMean's
    attribute both mean all)."""
    return b.op("ReduceMean" if n.attrs["reduction"] == "mean" else "ReduceSum", pointwise, out=n.out, keepdims=0)


def _onnx_floats(b, n):
    return [cast_to(b, v, d, n.dtype) for v, d in zip(n.inputs, n.input_dtypes)]


def _onnx_bce_logits(b, x, t):
    """max(x, 0) - x t + log(1 + e ** -|x|)"""
    soft = b.op("Log", b.op("Add", b.scalar(1.0), b.op("Exp", b.op("Neg", b.op("Abs", x)))))
    return b.op("Add", b.op("Sub", b.op("Relu", x), b.op("Mul", x, t)), soft)


@onnx_rule("ReduceMean/ReduceSum of the squared difference")
def _mse_loss_onnx(b, n):
    pred, target = _onnx_floats(b, n)
    d = b.op("Sub", pred, target)
    return _onnx_reduced(b, n, b.op("Mul", d, d))


@onnx_rule("-(t log p + (1 - t) log(1 - p)), logs clamped at -100")
def _bce_pointwise_onnx(b, n):
    p, t = _onnx_floats(b, n)
    floor = b.scalar(-100.0)
    log_p = b.op("Max", b.op("Log", p), floor)
    log_q = b.op("Max", b.op("Log", b.op("Sub", b.scalar(1.0), p)), floor)
    total = b.op("Add", b.op("Mul", t, log_p), b.op("Mul", b.op("Sub", b.scalar(1.0), t), log_q))
    return b.op("Neg", total, out=n.out)


@onnx_rule("max(x, 0) - x t + log(1 + e ** -|x|)")
def _bce_logits_pointwise_onnx(b, n):
    return b.finish(_onnx_bce_logits(b, *_onnx_floats(b, n)), n.out)


@onnx_rule("ReduceMean/ReduceSum of max(x, 0) - x t + log(1 + e ** -|x|)")
def _bce_logits_loss_onnx(b, n):
    return _onnx_reduced(b, n, _onnx_bce_logits(b, *_onnx_floats(b, n)))


@onnx_rule("LogSoftmax, GatherElements at the labels, ReduceMean/ReduceSum")
def _softmax_ce_onnx(b, n):
    logits = cast_to(b, n.inputs[0], n.input_dtypes[0], n.dtype)
    labels = b.op("Unsqueeze", cast_to(b, n.inputs[1], n.input_dtypes[1], np.int64), b.ints([-1]))
    picked = b.op("GatherElements", b.op("LogSoftmax", logits, axis=-1), labels, axis=-1)
    return _onnx_reduced(b, n, b.op("Neg", picked))


def _reduced_pair(a, b, *, reduction):
    broadcast(a, b)
    if reduction not in ("mean", "sum"):
        raise ShapeRuleError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    return (), "f"


def _scale_like(ctx, gy, like):
    """gy (the loss's gradient) spread over like's shape, divided by its size for a mean."""
    return ctx.g.expand(gy, like, axis=None, keepdims=False, mean=ctx.attrs["mean"])


def _reduce_all(ctx, x):
    return ctx.g.mean(x) if ctx.attrs["mean"] else ctx.g.sum(x)


def _spread(gy, size: int, mean: bool, factor: int = 1):
    """What the mean's (or sum's) derivative spreads over each element: gy / size, or gy (times
    factor). Memoised on gy's bytes: a loss's backward sees the same gy (the seed 1) every step,
    and two numpy scalar operations cost more than the multiply they feed."""
    key = (gy.tobytes(), gy.dtype, size, mean, factor) if type(gy) is np.ndarray and gy.ndim == 0 else None
    if key is not None:
        value = _SPREAD.get(key)
        if value is not None:
            return value
    value = gy / size if mean else gy
    if factor != 1:
        value = value * factor
    if key is not None:
        if len(_SPREAD) >= 64:
            _SPREAD.clear()
        _SPREAD[key] = value
    return value


_SPREAD: dict[tuple, Any] = {}


def _own(d):
    """d as the output buffer of the next ufunc (it is a fresh array), or None for a 0-d scalar."""
    return d if isinstance(d, np.ndarray) else None


def _difference(a, b):
    """a - b in a's float type (as the sub node of the composite form would hold it)."""
    d = np.subtract(a, b)
    return d.astype(a.dtype) if d.dtype != a.dtype and a.dtype.kind == "f" else d


@defop("mse_loss", _reduced_pair, public=False, onnx=_mse_loss_onnx)
def mse_loss(pred, target, *, reduction):
    """(pred - target) ** 2, reduced by mean or sum."""
    sq = np.square(_difference(pred, target))
    return _mean_all(sq) if reduction == "mean" else np.sum(sq)


@mse_loss.vjp
def _(ctx, gy):
    pred, target = ctx.inputs
    gp = ctx.g.mse_grad(pred, target, gy, mean=ctx.attrs["reduction"] == "mean")
    return (gp if ctx.needs[0] else None), (-gp if ctx.needs[1] else None)


@defop("mse_grad", elementwise, public=False)
def mse_grad(pred, target, gy, *, mean):
    """The derivative of mse_loss with respect to pred: gy (/ size) * 2 * (pred - target)."""
    d = _difference(pred, target)
    return np.multiply(_spread(gy, d.size, mean, 2), d, out=_own(d))


@mse_grad.vjp
def _(ctx, gz):
    pred, target, gy = ctx.inputs
    gd = None
    if ctx.needs[0] or ctx.needs[1]:
        gd = gz * (_scale_like(ctx, gy, ctx.out) * 2)
    g_gy = _reduce_all(ctx, gz * 2 * (pred - target)) if ctx.needs[2] else None
    return (gd if ctx.needs[0] else None), (-gd if ctx.needs[1] and gd is not None else None), g_gy


@defcomposite("mse")
def mse(g, pred, target, *, reduction="mean"):
    """Mean squared error: reduce((pred - target) ** 2)."""
    _check_reduction("mse", reduction)
    if reduction in ("mean", "sum"):
        return g.mse_loss(pred, target, reduction=reduction)
    return reduce_loss(g, g.square(pred - target), reduction, "mse")


@defcomposite("l1")
def l1(g, pred, target, *, reduction="mean"):
    """Mean absolute error: reduce(|pred - target|)."""
    _check_reduction("l1", reduction)
    return reduce_loss(g, g.abs(pred - target), reduction, "l1")


@defcomposite("huber")
def huber(g, pred, target, *, delta=1.0, reduction="mean"):
    """0.5 d**2 where |d| < delta, else delta (|d| - delta/2), with d = pred - target (torch huber_loss)."""
    _check_reduction("huber", reduction)
    if delta <= 0:
        raise GraphError(f"huber: delta must be positive, got {delta}")
    d = pred - target
    a = g.abs(d)
    pointwise = g.where(g.less(a, delta), 0.5 * g.square(d), delta * (a - 0.5 * delta))
    return reduce_loss(g, pointwise, reduction, "huber")


@defop("bce_pointwise", elementwise, public=False, onnx=_bce_pointwise_onnx)
def bce_pointwise(ctx, p, t):
    """-(t log p + (1 - t) log(1 - p)), each log clamped at -100 (as torch)."""
    outside = (p < 0) | (p > 1)
    if outside.any():
        raise GraphError(
            f"bce: the probabilities {ctx.node.inputs[0].label()} must lie in [0, 1], got {p[outside].flat[0]}; "
            "for logits use bce_with_logits"
        )
    log_p = np.maximum(np.log(p), -100.0)
    log_q = np.maximum(np.log1p(-p), -100.0)
    return -(t * log_p + (1.0 - t) * log_q)


@bce_pointwise.vjp
def _(ctx, gy):
    # torch's rule: (p - t) / max(p (1 - p), 1e-12), finite also at p = 0 and p = 1.
    g = ctx.g
    p, t = ctx.inputs
    gp = gy * (p - t) / g.maximum(p * (1.0 - p), 1e-12) if ctx.needs[0] else None
    gt = None
    if ctx.needs[1]:
        gt = gy * (g.maximum(g.log(1.0 - p), -100.0) - g.maximum(g.log(p), -100.0))
    return gp, gt


@defcomposite("bce", summary="Binary cross-entropy on probabilities, each log clamped at -100 (as torch).")
def bce(g, prob, target, *, reduction="mean"):
    """Binary cross-entropy on probabilities; each log is clamped at -100 and the gradient is
    finite at 0 and 1 (as torch)."""
    _check_reduction("bce", reduction)
    return reduce_loss(g, g.bce_pointwise(prob, target), reduction, "bce")


@defop("bce_logits_pointwise", elementwise, public=False, onnx=_bce_logits_pointwise_onnx)
def bce_logits_pointwise(x, t):
    """max(x, 0) - x t + log(1 + e ** -|x|): binary cross-entropy of logits, without overflow."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


@bce_logits_pointwise.vjp
def _(ctx, gy):
    g = ctx.g
    x, t = ctx.inputs
    return (gy * (g.sigmoid(x) - t) if ctx.needs[0] else None), (-(gy * x) if ctx.needs[1] else None)


@defop("bce_logits_loss", _reduced_pair, public=False, onnx=_bce_logits_loss_onnx)
def bce_logits_loss(x, t, *, reduction):
    """bce_logits_pointwise(x, t), reduced by mean or sum."""
    pointwise = bce_logits_pointwise.forward(x, t)
    return _mean_all(pointwise) if reduction == "mean" else np.sum(pointwise)


@bce_logits_loss.vjp
def _(ctx, gy):
    g = ctx.g
    x, t = ctx.inputs
    mean = ctx.attrs["reduction"] == "mean"
    gx = g.bce_logits_grad(x, t, gy, mean=mean) if ctx.needs[0] else None
    gt = None
    if ctx.needs[1]:
        like = x if tuple(x.shape) == broadcast(x.shape, t.shape) else x + t
        gt = -(g.expand(gy, like, axis=None, keepdims=False, mean=mean) * x)
    return gx, gt


@defop("bce_logits_grad", elementwise, public=False)
def bce_logits_grad(x, t, gy, *, mean):
    """The derivative of bce_logits_loss with respect to x: gy (/ size) * (sigmoid(x) - t)."""
    d = _difference(sigmoid.forward(x), t)
    return np.multiply(_spread(gy, d.size, mean), d, out=_own(d))


@bce_logits_grad.vjp
def _(ctx, gz):
    g = ctx.g
    x, t, gy = ctx.inputs
    scaled = gz * _scale_like(ctx, gy, ctx.out)
    gx = g.sigmoid_grad(scaled, g.sigmoid(x)) if ctx.needs[0] else None
    g_gy = _reduce_all(ctx, gz * (g.sigmoid(x) - t)) if ctx.needs[2] else None
    return gx, (-scaled if ctx.needs[1] else None), g_gy


@defcomposite("bce_with_logits")
def bce_with_logits(g, logits, target, *, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits), computed stably from the logits."""
    _check_reduction("bce_with_logits", reduction)
    if reduction in ("mean", "sum"):
        return g.bce_logits_loss(logits, target, reduction=reduction)
    return reduce_loss(g, g.bce_logits_pointwise(logits, target), reduction, "bce_with_logits")


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x == y or None in (x, y) for x, y in zip(a, b))


@defop(
    "class_labels",
    lambda labels, *, num_classes, loss: (labels, "i"),
    public=False,
    keep_dtype=True,
    passes_input=True,
    onnx=alias,
)
def class_labels(ctx, labels, *, num_classes, loss):
    """The integer labels themselves, after checking that they lie in [0, num_classes)."""
    _check_labels(loss, ctx.node.inputs[0].label(), labels, num_classes)
    return labels


def _check_labels(loss: str, name: str, labels, num_classes: int) -> None:
    """Out-of-range labels would index another row's logits or wrap around (numpy takes -1 as the
    last class): refuse them, naming the first bad value and where it is."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        n = int(np.count_nonzero(bad))
        at = f" at index {where[0] if len(where) == 1 else where}" if where else ""
        more = f" ({n} of the {labels.size} labels are out of range)" if n > 1 else ""
        raise GraphError(
            f"{loss}: labels {name} must lie in [0, {num_classes}) (the classes on the logits' last axis), "
            f"got {labels[bad].flat[0]}{at}{more}"
        )


def _label_column(labels):
    return labels[..., None].astype(np.intp, copy=False)


@defop(
    "softmax_ce",
    lambda logits, labels, *, num_classes, reduction: _reduced_pair((), (), reduction=reduction),
    nondiff=(1,),
    public=False,
    onnx=_softmax_ce_onnx,
)
def softmax_ce(ctx, logits, labels, *, num_classes, reduction):
    """Softmax cross-entropy of integer labels over the last axis, reduced by mean or sum."""
    _check_labels("cross_entropy", ctx.node.inputs[1].label(), labels, num_classes)
    logp = log_softmax.forward(logits, axis=-1)
    pointwise = -np.take_along_axis(logp, _label_column(labels), axis=-1)[..., 0]
    return _mean_all(pointwise) if reduction == "mean" else np.sum(pointwise)


@softmax_ce.vjp
def _(ctx, gy):
    logits, labels = ctx.inputs
    mean = ctx.attrs["reduction"] == "mean"
    return ctx.g.softmax_ce_grad(logits, labels, gy, num_classes=ctx.attrs["num_classes"], mean=mean), None


@defop("softmax_ce_grad", lambda logits, labels, gy, **attrs: (logits, "f"), nondiff=(1,), public=False)
def softmax_ce_grad(logits, labels, gy, *, num_classes, mean):
    """The derivative of softmax_ce with respect to the logits: s * softmax(logits), less s at each
    label, with s = gy (/ number of rows)."""
    s = _spread(gy, labels.size, mean)
    out = np.exp(log_softmax.forward(logits, axis=-1))
    out *= s
    column = _label_column(labels)
    np.put_along_axis(out, column, np.take_along_axis(out, column, axis=-1) - s, axis=-1)
    return out


@softmax_ce_grad.vjp
def _(ctx, gz):
    g = ctx.g
    logits, labels, gy = ctx.inputs
    mean = ctx.attrs["mean"]
    p = g.softmax(logits, axis=-1)
    g_logits = None
    if ctx.needs[0]:
        per_row = g.index(g.expand(gy, labels, axis=None, keepdims=False, mean=mean), key=(Ellipsis, None))
        g_logits = per_row * (p * (gz - g.sum(gz * p, axis=-1, keepdims=True)))
    g_gy = None
    if ctx.needs[2]:
        rows = g.sum(gz * (p - g.one_hot(labels, num_classes=ctx.attrs["num_classes"])), axis=-1)
        g_gy = g.mean(rows) if mean else g.sum(rows)
    return g_logits, None, g_gy


def _check_label_shape(op: str, scores, labels) -> None:
    if not _same_shape(tuple(labels.shape), tuple(scores.shape[:-1])):
        raise ShapeError(
            f"{op}: integer labels must have the logits' shape without the class axis, "
            f"{fmt(scores.shape[:-1])}, got {fmt(labels.shape)}"
        )


def _pick(g, op: str, scores, labels):
    """scores[..., labels] for integer labels shaped like scores without the class axis."""
    _check_label_shape(op, scores, labels)
    checked = g.class_labels(labels, num_classes=class_count(op, scores), loss=op)
    column = g.index(checked, key=(Ellipsis, None))
    return g.index(g.take_along(scores, column, axis=-1), key=(Ellipsis, 0))


@defcomposite("cross_entropy")
def cross_entropy(g, logits, target, *, label_smoothing=0.0, reduction="mean"):
    """Softmax cross-entropy over the last axis. target: integer class labels (shape of logits
    without the last axis) or class probabilities (shape of logits). label_smoothing mixes the
    target with the uniform distribution (as torch)."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise GraphError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    n_classes = class_count("cross_entropy", logits)
    if target.dtype.kind in "iu" and not label_smoothing and reduction in ("mean", "sum"):
        _check_label_shape("cross_entropy", logits, target)
        return g.softmax_ce(logits, target, num_classes=n_classes, reduction=reduction)
    logp = g.log_softmax(logits, axis=-1)
    if target.dtype.kind in "iu":
        pointwise = -_pick(g, "cross_entropy", logp, target)
        if label_smoothing:
            pointwise = (1.0 - label_smoothing) * pointwise - (label_smoothing / n_classes) * g.sum(logp, axis=-1)
    else:
        if not _same_shape(tuple(target.shape), tuple(logits.shape)):
            raise ShapeError(
                f"cross_entropy: class probabilities must have the logits' shape {fmt(logits.shape)}, got "
                f"{fmt(target.shape)} (for class labels, declare the input with dtype='int64')"
            )
        q = target
        if label_smoothing:
            q = (1.0 - label_smoothing) * target + label_smoothing / n_classes
        pointwise = -g.sum(q * logp, axis=-1)
    return reduce_loss(g, pointwise, reduction, "cross_entropy")


@defcomposite("nll")
def nll(g, log_probs, labels, *, reduction="mean"):
    """Negative log-likelihood of integer labels under log-probabilities (last axis = classes)."""
    _check_reduction("nll", reduction)
    if labels.dtype.kind not in "iu":
        raise GraphError(
            f"nll needs integer labels; {labels.label()} holds floats (declare the input with dtype='int64')"
        )
    return reduce_loss(g, -_pick(g, "nll", log_probs, labels), reduction, "nll")


@defcomposite(
    "kl_div",
    summary="KL divergence of target from exp(log_input), as torch's kl_div (the input holds log-probabilities).",
)
def kl_div(g, log_input, target, *, reduction="mean", log_target=False):
    """KL divergence of target from exp(log_input), pointwise target (log target - log_input)
    (torch's kl_div: the input holds log-probabilities; 0 where target is 0)."""
    if log_target:
        pointwise = g.exp(target) * (target - log_input)
    else:
        positive = g.greater(target, 0.0)
        safe_log = g.log(g.where(positive, target, 1.0))
        pointwise = g.where(positive, target * (safe_log - log_input), 0.0)
    return reduce_loss(g, pointwise, reduction, "kl_div")
