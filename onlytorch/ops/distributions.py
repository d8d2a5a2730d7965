"""Categorical distributions over the last axis of logits, and PPO's clipped surrogate: the ops
that policy-gradient losses are written with. Log-probabilities and entropy are composites of
log_softmax (never log(softmax)), so very negative or -inf logits give no log(0), and their
derivatives of every order are those of the ops they are made of. Sampling is a random,
non-differentiable op drawn from the graph's runtime RNG (seeded by ``Graph(seed=...)``)."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError, ShapeError
from ..export.builder import onnx_rule
from .registry import ShapeRuleError, defcomposite, defop
from .shapes import class_count, fmt


def _sample_shape(logits):
    if not logits:
        raise ShapeRuleError("categorical_sample needs logits with a class axis (the last), got a scalar")
    if logits[-1] == 0:
        raise ShapeRuleError(f"categorical_sample needs at least one class on the last axis, got {fmt(logits)}")
    return logits[:-1], "i"


@defop(
    "categorical_sample",
    _sample_shape,
    nondiff=(0,),
    random=True,
    summary="One class index per row, drawn from softmax(logits) over the last axis (no gradient).",
)
def categorical_sample(ctx, logits):
    """One class index per row, drawn from softmax(logits) over the last axis (int64, shaped like
    logits without that axis; no gradient). Gumbel-max: argmax(logits + Gumbel noise) from the
    graph's seeded RNG, exact and free of exp overflow; -inf logits are never drawn. A new draw
    whenever logits change."""
    # One reduction finds every bad row (the rollout calls this once per environment step): a
    # row's max is NaN if it holds a NaN, +inf if it holds +inf, -inf if it is all -inf.
    top = np.max(logits, axis=-1)
    if not np.isfinite(top).all():
        name = ctx.node.inputs[0].label()
        if np.isnan(top).any() or np.isposinf(top).any():
            raise GraphError(f"categorical_sample: logits {name} hold NaN or +inf")
        raise GraphError(f"categorical_sample: a row of logits {name} is all -inf (no class can be drawn)")
    noise = ctx.rng.gumbel(size=logits.shape).astype(logits.dtype, copy=False)
    return np.argmax(logits + noise, axis=-1)


@onnx_rule("its input (Identity; the range check does not export)")
def _actions_onnx(b, n):
    return n.inputs[0]


@defop(
    "categorical_actions",
    lambda actions, *, num_classes: (actions, "i"),
    public=False,
    keep_dtype=True,
    onnx=_actions_onnx,
)
def categorical_actions(ctx, actions, *, num_classes):
    """The integer actions themselves, after checking that they lie in [0, num_classes)."""
    bad = (actions < 0) | (actions >= num_classes)
    if bad.any():
        raise GraphError(
            f"categorical_log_prob: actions {ctx.node.inputs[0].label()} must lie in [0, {num_classes}) "
            f"(the classes on the logits' last axis), got {actions[bad].flat[0]}"
        )
    return actions


@defcomposite(
    "categorical_log_prob",
    summary="The log-probability of each integer action under its row's categorical softmax(logits).",
)
def categorical_log_prob(g, logits, actions):
    """log softmax(logits)[actions] over the last axis: the log-probability of each integer action
    (shaped like logits without the class axis) under the categorical distribution of its row.
    Differentiable in logits to every order, never in actions."""
    op = "categorical_log_prob"
    if actions.dtype.kind not in "iu":
        raise GraphError(
            f"{op} needs integer actions; {actions.label()} holds floats (declare the input with dtype='int64')"
        )
    n = class_count(op, logits)
    batch = tuple(logits.shape[:-1])
    shape = tuple(actions.shape)
    if len(shape) != len(batch) or any(a != b and None not in (a, b) for a, b in zip(shape, batch)):
        raise ShapeError(
            f"{op}: actions {actions.label()} must have the logits' shape without the class axis, "
            f"{fmt(batch)}, got {fmt(shape)}"
        )
    checked = g.categorical_actions(actions, num_classes=n)
    column = g.index(checked, key=(Ellipsis, None))
    return g.index(g.take_along(g.log_softmax(logits, axis=-1), column, axis=-1), key=(Ellipsis, 0))


@defcomposite(
    "categorical_entropy",
    summary="The entropy of each row's categorical distribution softmax(logits) over the last axis.",
)
def categorical_entropy(g, logits):
    """-sum(softmax(logits) * log_softmax(logits)) over the last axis: the entropy of each row's
    categorical distribution. Finite for very negative and -inf logits (a class of probability 0
    contributes 0, and no gradient)."""
    if not logits.shape:
        raise ShapeError("categorical_entropy needs logits with a class axis (the last), got a scalar")
    logp = g.log_softmax(logits, axis=-1)
    p = g.exp(logp)
    # 0 * log 0 = 0: an impossible class (p underflows to 0, logp may be -inf) contributes nothing.
    return -g.sum(p * g.where(g.greater(p, 0.0), logp, 0.0), axis=-1)


@defcomposite(
    "ppo_clip", summary="PPO's clipped surrogate objective per sample (the loss to minimise is its negated mean)."
)
def ppo_clip(g, ratio, advantage, *, clip=0.2):
    """PPO's clipped surrogate per sample: minimum(ratio * advantage, clip(ratio, 1 - clip,
    1 + clip) * advantage), with clip in (0, 1). The loss to minimise is its negated mean:
    -mean(ppo_clip(exp(logp - old_logp), advantage))."""
    if isinstance(clip, bool) or not isinstance(clip, (int, float, np.integer, np.floating)) or not 0 < clip < 1:
        raise GraphError(f"ppo_clip: clip must be a number in (0, 1), e.g. 0.2; got {clip!r}")
    clip = float(clip)
    clipped = g.clip(ratio, 1.0 - clip, 1.0 + clip)
    return g.minimum(ratio * advantage, clipped * advantage)
