"""Matrix products: matmul (numpy/torch semantics) and linear (matmul plus bias, fused)."""

from __future__ import annotations

import numpy as np

from .registry import ShapeRuleError, defop
from .shapes import broadcast, fmt, matmul_shape


def _mT(g, x):
    nd = len(x.shape)
    return g.transpose(x, axes=tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _matmul_rule(a, b):
    if (len(a) == 1 and len(b) > 2) or (len(b) == 1 and len(a) > 2):
        raise ShapeRuleError(f"matmul of {fmt(a)} and {fmt(b)}: reshape the vector to 2-D first")
    return matmul_shape(a, b), "f"


@defop("matmul", _matmul_rule)
def matmul(a, b):
    """a @ b (numpy/torch matmul: batched, broadcast over leading axes)."""
    return np.matmul(a, b)


@matmul.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    na, nb = len(a.shape), len(b.shape)
    if na == 1 and nb == 1:  # dot product
        return (gy * b if ctx.needs[0] else None), (gy * a if ctx.needs[1] else None)
    if na == 1:  # (k,) @ (k, m) -> (m,)
        ga = g.matmul(b, gy) if ctx.needs[0] else None
        gb = g.reshape(a, shape=(-1, 1)) @ g.reshape(gy, shape=(1, -1)) if ctx.needs[1] else None
        return ga, gb
    if nb == 1:  # (n, k) @ (k,) -> (n,)
        ga = g.reshape(gy, shape=(-1, 1)) @ g.reshape(b, shape=(1, -1)) if ctx.needs[0] else None
        gb = g.matmul(_mT(g, a), gy) if ctx.needs[1] else None
        return ga, gb
    ga = g.matmul(gy, _mT(g, b)) if ctx.needs[0] else None
    gb = g.matmul(_mT(g, a), gy) if ctx.needs[1] else None
    return ga, gb


def _linear_rule(x, w, b):
    if len(w) != 2:
        raise ShapeRuleError(f"linear weight must be 2-D (in, out), got {fmt(w)}")
    if not x or x[-1] != w[0]:
        raise ShapeRuleError(f"linear: input {fmt(x)} does not end in the weight's input size {w[0]} (weight {fmt(w)})")
    out = x[:-1] + (w[1],)
    if broadcast(out, b) != out:
        raise ShapeRuleError(f"linear: bias {fmt(b)} does not broadcast to the output {fmt(out)}")
    return out, "f"


@defop("linear", _linear_rule)
def linear(x, w, b):
    """x @ w + b, fused (w is (in, out))."""
    out = np.matmul(x, w)
    out += b
    return out


@linear.vjp
def _(ctx, gy):
    g = ctx.g
    x, w, _b = ctx.inputs
    gx = g.matmul(gy, g.transpose(w)) if ctx.needs[0] else None
    gw = None
    if ctx.needs[1]:
        if len(x.shape) == 2:
            gw = g.matmul(g.transpose(x), gy)
        else:
            n_in, n_out = w.shape
            gw = g.matmul(g.transpose(g.reshape(x, shape=(-1, n_in))), g.reshape(gy, shape=(-1, n_out)))
    return gx, gw, (gy if ctx.needs[2] else None)
