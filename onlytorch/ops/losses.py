"""Losses. Each is a composite of registry ops (so its derivatives of every order are theirs),
with one fused primitive where the composite would be numerically unsafe (bce_with_logits).

``reduction`` is "mean" (default), "sum", "none", or for kl_div also "batchmean"."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError
from .registry import defcomposite, defop
from .shapes import elementwise

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
    raise GraphError(f"{op}: reduction must be one of 'mean', 'sum', 'none'{', batchmean' if op == 'kl_div' else ''}; got {reduction!r}")


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


@defcomposite("bce")
def bce(g, prob, target, *, reduction="mean"):
    """Binary cross-entropy on probabilities; each log is clamped at -100 (as torch)."""
    _check_reduction("bce", reduction)
    log_p = g.maximum(g.log(prob), -100.0)
    log_q = g.maximum(g.log(1.0 - prob), -100.0)
    return reduce_loss(g, -(target * log_p + (1.0 - target) * log_q), reduction, "bce")


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


def _labels_column(g, labels):
    return g.index(labels, key=(Ellipsis, None))


@defcomposite("cross_entropy")
def cross_entropy(g, logits, target, *, label_smoothing=0.0, reduction="mean"):
    """Softmax cross-entropy over the last axis. target: integer class labels (shape of logits
    without the last axis) or class probabilities (shape of logits). label_smoothing mixes the
    target with the uniform distribution (as torch)."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise GraphError(f"cross_entropy: label_smoothing must lie in [0, 1], got {label_smoothing}")
    n_classes = logits.shape[-1] if logits.shape else None
    if n_classes is None:
        raise GraphError("cross_entropy: logits need a fixed number of classes on their last axis")
    logp = g.log_softmax(logits, axis=-1)
    if target.dtype.kind in "iu":
        want = tuple(logits.shape[:-1])
        if len(target.shape) != len(want) or any(a != b and None not in (a, b) for a, b in zip(target.shape, want)):
            from ..errors import ShapeError

            raise ShapeError(
                f"integer labels must have the logits' shape without the class axis, {logits.shape[:-1]}, got {target.shape}"
            )
        picked = g.index(g.take_along(logp, _labels_column(g, target), axis=-1), key=(Ellipsis, 0))
        pointwise = -picked
        if label_smoothing:
            pointwise = (1.0 - label_smoothing) * pointwise - (label_smoothing / n_classes) * g.sum(logp, axis=-1)
    else:
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
        raise GraphError(f"nll needs integer labels; {labels.name!r} holds floats (declare the input with dtype='int64')")
    picked = g.index(g.take_along(log_probs, _labels_column(g, labels), axis=-1), key=(Ellipsis, 0))
    return reduce_loss(g, -picked, reduction, "nll")


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
