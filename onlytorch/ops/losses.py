"""Losses. Each is a composite of registry ops (so its derivatives of every order are theirs),
with one fused primitive where the composite would be numerically unsafe (bce_with_logits).

``reduction`` is "mean" (default), "sum", "none", or for kl_div also "batchmean"."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from .registry import defcomposite, defop
from .shapes import elementwise, fmt

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


@defcomposite("mse")
def mse(g, pred, target, *, reduction="mean"):
    """Mean squared error: reduce((pred - target) ** 2)."""
    _check_reduction("mse", reduction)
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


@defop("bce_pointwise", elementwise, public=False)
def bce_pointwise(ctx, p, t):
    """-(t log p + (1 - t) log(1 - p)), each log clamped at -100 (as torch)."""
    outside = (p < 0) | (p > 1)
    if outside.any():
        raise GraphError(
            f"bce: the probabilities {ctx.node.inputs[0].name!r} must lie in [0, 1], got {p[outside].flat[0]}; "
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


@defcomposite("bce")
def bce(g, prob, target, *, reduction="mean"):
    """Binary cross-entropy on probabilities; each log is clamped at -100 and the gradient is
    finite at 0 and 1 (as torch)."""
    _check_reduction("bce", reduction)
    return reduce_loss(g, g.bce_pointwise(prob, target), reduction, "bce")


@defop("bce_logits_pointwise", elementwise, public=False)
def bce_logits_pointwise(x, t):
    """max(x, 0) - x t + log(1 + e ** -|x|): binary cross-entropy of logits, without overflow."""
    return np.maximum(x, 0) - x * t + np.log1p(np.exp(-np.abs(x)))


@bce_logits_pointwise.vjp
def _(ctx, gy):
    g = ctx.g
    x, t = ctx.inputs
    return (gy * (g.sigmoid(x) - t) if ctx.needs[0] else None), (-(gy * x) if ctx.needs[1] else None)


@defcomposite("bce_with_logits")
def bce_with_logits(g, logits, target, *, reduction="mean"):
    """Binary cross-entropy of sigmoid(logits), computed stably from the logits."""
    _check_reduction("bce_with_logits", reduction)
    return reduce_loss(g, g.bce_logits_pointwise(logits, target), reduction, "bce_with_logits")


def _n_classes(op: str, scores) -> int:
    n = scores.shape[-1] if scores.shape else None
    if n is None:
        raise GraphError(
            f"{op}: {scores.name!r} needs a fixed number of classes on its last axis, got shape {fmt(scores.shape)}"
        )
    return n


def _same_shape(a: tuple, b: tuple) -> bool:
    return len(a) == len(b) and all(x == y or None in (x, y) for x, y in zip(a, b))


@defop("class_labels", lambda labels, *, num_classes, loss: (labels, "i"), public=False, keep_dtype=True)
def class_labels(ctx, labels, *, num_classes, loss):
    """The integer labels themselves, after checking that they lie in [0, num_classes)."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise GraphError(
            f"{loss}: labels {ctx.node.inputs[0].name!r} must lie in [0, {num_classes}), got {labels[bad].flat[0]}"
        )
    return labels


def _pick(g, op: str, scores, labels):
    """scores[..., labels] for integer labels shaped like scores without the class axis."""
    if not _same_shape(tuple(labels.shape), tuple(scores.shape[:-1])):
        raise ShapeError(
            f"{op}: integer labels must have the logits' shape without the class axis, "
            f"{fmt(scores.shape[:-1])}, got {fmt(labels.shape)}"
        )
    checked = g.class_labels(labels, num_classes=_n_classes(op, scores), loss=op)
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
    n_classes = _n_classes("cross_entropy", logits)
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
            f"nll needs integer labels; {labels.name!r} holds floats (declare the input with dtype='int64')"
        )
    return reduce_loss(g, -_pick(g, "nll", log_probs, labels), reduction, "nll")


@defcomposite("kl_div")
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
