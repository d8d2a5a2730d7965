"""Attention and the small helpers a transformer block needs: ``attention`` (torch's
``scaled_dot_product_attention``), ``tril`` / ``triu`` (masks and their derivatives) and ``arange``
(positions).

``attention`` is a composite of matmul, where and softmax, so its derivatives of any order are
those of the ops it is made of (a gradient penalty through an attention critic works as through a
linear one)."""

from __future__ import annotations

import math
from numbers import Real

import numpy as np

from ..errors import ShapeError
from ..export.builder import Builder, OnnxNode, onnx_rule
from .registry import ShapeRuleError, defcomposite, defop
from .shapes import broadcast, fmt


@defcomposite("attention", summary="Scaled dot-product attention as torch.nn.functional.scaled_dot_product_attention.")
def attention(g, q, k, v, *, mask=None, bias=None, causal=False, scale=None):
    """Scaled dot-product attention as torch.nn.functional.scaled_dot_product_attention: q (..., L,
    E), k (..., S, E), v (..., S, Ev) (e.g. (N, heads, L, E) or (N, L, E)) give (..., L, Ev) =
    softmax(q k^T * scale + bias) v. mask: a node broadcasting to (..., L, S), non-zero where a query
    may attend (torch's boolean attn_mask); bias: one added to the scores (torch's float attn_mask);
    causal: query i attends to keys 0..i (is_causal, with mask an extra restriction); scale: default
    1/sqrt(E). A query with no key to attend to gets zeros (its output and gradient), as in torch. A spec passes the mask and
    bias by position: attention(q, k, v, m), attention(q, k, v, 1, b) (a mask of 1 keeps all)."""
    if len(q.shape) < 2 or len(k.shape) < 2 or len(v.shape) < 2:
        raise ShapeError(
            f"attention needs q, k, v of at least 2 dimensions (..., length, width), got "
            f"{fmt(q.shape)}, {fmt(k.shape)}, {fmt(v.shape)}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ShapeError(f"q and k must have the same width (last axis), got {fmt(q.shape)} and {fmt(k.shape)}")
    if k.shape[-2] != v.shape[-2]:
        raise ShapeError(f"k and v must have the same length (axis -2), got {fmt(k.shape)} and {fmt(v.shape)}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be True or False, got {causal!r}")
    if scale is None:
        width = q.shape[-1]
        if width is None:
            raise ShapeError(f"attention needs a fixed width to scale by 1/sqrt(E), got q {fmt(q.shape)}")
        factor = 1.0 / math.sqrt(width)
    elif isinstance(scale, Real) and not isinstance(scale, bool):
        factor = float(scale)
    else:
        raise ValueError(f"scale must be a number, got {scale!r}")
    scores = g.matmul_nt(q, k) * factor
    keep = None
    if causal:
        length, source = q.shape[-2], k.shape[-2]
        if length is None or source is None:
            raise ShapeError(f"causal attention needs fixed lengths, got q {fmt(q.shape)} and k {fmt(k.shape)}")
        keep = g.constant(np.tril(np.ones((length, source))))
    if mask is not None:
        _check_broadcasts("mask", mask.shape, scores.shape)
        keep = mask if keep is None else g.where(mask, keep, 0.0)
    if bias is not None:
        _check_broadcasts("bias", bias.shape, scores.shape)
        scores = scores + bias
    if keep is None:
        return g.matmul(g.softmax(scores, axis=-1), v)
    # A finite fill rather than torch's -inf: every value stays finite (anomaly detection raises
    # on an infinity); exp(_FILL - max) is 0 all the same. The second where zeroes the weights of
    # a query with no key to attend to, as torch's safe softmax does (its output and gradient 0).
    weights = g.softmax(g.where(keep, scores, _FILL), axis=-1)
    return g.matmul(g.where(keep, weights, 0.0), v)


_FILL = -1e30


def _check_broadcasts(what, shape, scores):
    try:
        ok = broadcast(shape, scores) == tuple(scores)
    except ShapeRuleError:
        ok = False
    if not ok:
        raise ShapeError(f"the {what} {fmt(shape)} does not broadcast to the scores' shape {fmt(scores)} (..., L, S)")


def _triangle_shape(x, *, diagonal=0):
    if len(x) < 2:
        raise ShapeRuleError(f"needs at least 2 dimensions (a matrix or a batch of them), got {fmt(x)}")
    if not isinstance(diagonal, (int, np.integer)) or isinstance(diagonal, bool):
        raise ShapeRuleError(f"diagonal must be an integer, got {diagonal!r}")
    return x, "f"


def _trilu_onnx(upper: bool):  # type: ignore[no-untyped-def]
    @onnx_rule("Trilu")
    def rule(b: Builder, n: OnnxNode) -> str:
        k = b.const(np.int64(n.attrs["diagonal"]), "diagonal")
        return b.op("Trilu", n.inputs[0], k, out=n.out, upper=int(upper))

    return rule


@defop(
    "tril",
    _triangle_shape,
    keep_dtype=True,
    onnx=_trilu_onnx(False),
    summary="The lower triangle of x's last two axes, the rest zero (as torch.tril).",
)
def tril(x, *, diagonal=0):
    """The lower triangle of x's last two axes (the rest zero), as torch.tril: diagonal=0 keeps the
    main diagonal, 1 one more above it, -1 one fewer."""
    return np.tril(x, int(diagonal))


@tril.vjp
def _(ctx, gy):
    return (ctx.g.tril(gy, diagonal=ctx.attrs["diagonal"]),)


@defop(
    "triu",
    _triangle_shape,
    keep_dtype=True,
    onnx=_trilu_onnx(True),
    summary="The upper triangle of x's last two axes, the rest zero (as torch.triu).",
)
def triu(x, *, diagonal=0):
    """The upper triangle of x's last two axes (the rest zero), as torch.triu: diagonal=0 keeps the
    main diagonal, 1 starts one above it (a causal mask's forbidden part), -1 one below."""
    return np.triu(x, int(diagonal))


@triu.vjp
def _(ctx, gy):
    return (ctx.g.triu(gy, diagonal=ctx.attrs["diagonal"]),)


@defcomposite("arange", summary="The numbers start, start + step, ... below end, as torch.arange.")
def arange(g, *, start=0, end=None, step=1):
    """The numbers start, start + step, ... below end, as torch.arange: arange(n) is 0 .. n - 1,
    arange(a, b) and arange(a, b, step) as in torch; integers give int64 (positions to look up),
    any float the graph's float type."""
    given = (start, end, step)
    if any(not isinstance(n, Real) or isinstance(n, bool) for n in given if n is not None):
        raise ValueError(f"arange takes numbers, got start={start!r}, end={end!r}, step={step!r}")
    lo, hi = (0, start) if end is None else (start, end)
    if step == 0:
        raise ValueError("arange needs a non-zero step")
    return g.constant(np.arange(lo, hi, step))
