"""Matrix products: matmul (numpy/torch semantics), linear (matmul plus bias, fused), and the
products with a transposed operand that their derivatives use (one node instead of two)."""

from __future__ import annotations

import numpy as np

from ..export.builder import onnx_rule
from .registry import ShapeRuleError, defop
from .shapes import broadcast, fmt, matmul_shape


def _mT(g, x):
    nd = len(x.shape)
    return g.transpose(x, axes=tuple(range(nd - 2)) + (nd - 1, nd - 2))


def _swap(shape):
    return shape[:-2] + (shape[-1], shape[-2])


@onnx_rule("Gemm (MatMul + Add beyond 2-D inputs)")
def _linear_onnx(b, n):
    x, w, bias = n.inputs
    if len(n.input_shapes[0]) == 2 and len(n.input_shapes[2]) <= 1:
        return b.op("Gemm", x, w, bias, out=n.out)
    return b.op("Add", b.op("MatMul", x, w), bias, out=n.out)


def _transposed_onnx(which):
    @onnx_rule(f"MatMul of a transposed operand ({which})")
    def rule(b, n):
        a, m = n.inputs
        i = 1 if which == "matmul_nt" else 0
        nd = len(n.input_shapes[i])
        perm = [*range(nd - 2), nd - 1, nd - 2]
        t = b.op("Transpose", n.inputs[i], perm=perm)
        return b.op("MatMul", t, m, out=n.out) if i == 0 else b.op("MatMul", a, t, out=n.out)

    return rule


def _matmul_rule(a, b):
    if (len(a) == 1 and len(b) > 2) or (len(b) == 1 and len(a) > 2):
        raise ShapeRuleError(f"matmul of {fmt(a)} and {fmt(b)}: reshape the vector to 2-D first")
    return matmul_shape(a, b), "f"


@defop("matmul", _matmul_rule, onnx="MatMul")
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
    ga = g.matmul_nt(gy, b) if ctx.needs[0] else None
    gb = g.matmul_tn(a, gy) if ctx.needs[1] else None
    return ga, gb


def _transposed_rule(a, b, *, which):
    if len(a) < 2 or len(b) < 2:
        raise ShapeRuleError(f"{which} needs operands of at least 2 dimensions, got {fmt(a)} and {fmt(b)}")
    if which == "matmul_nt":
        return _matmul_rule(a, _swap(b))
    return _matmul_rule(_swap(a), b)


@defop(
    "matmul_nt",
    lambda a, b: _transposed_rule(a, b, which="matmul_nt"),
    public=False,
    onnx=_transposed_onnx("matmul_nt"),
)
def matmul_nt(a, b):
    """a @ b.T over the last two axes."""
    return np.matmul(a, b.mT)


@matmul_nt.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    return (g.matmul(gy, b) if ctx.needs[0] else None), (g.matmul_tn(gy, a) if ctx.needs[1] else None)


@defop(
    "matmul_tn",
    lambda a, b: _transposed_rule(a, b, which="matmul_tn"),
    public=False,
    onnx=_transposed_onnx("matmul_tn"),
)
def matmul_tn(a, b):
    """a.T @ b over the last two axes."""
    return np.matmul(a.mT, b)


@matmul_tn.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    return (g.matmul_nt(b, gy) if ctx.needs[0] else None), (g.matmul(a, gy) if ctx.needs[1] else None)


def _linear_rule(x, w, b):
    if len(w) != 2:
        raise ShapeRuleError(f"linear weight must be 2-D (in, out), got {fmt(w)}")
    if not x or x[-1] != w[0]:
        raise ShapeRuleError(f"linear: input {fmt(x)} does not end in the weight's input size {w[0]} (weight {fmt(w)})")
    out = x[:-1] + (w[1],)
    if broadcast(out, b) != out:
        raise ShapeRuleError(f"linear: bias {fmt(b)} does not broadcast to the output {fmt(out)}")
    return out, "f"


@defop("linear", _linear_rule, onnx=_linear_onnx)
def linear(x, w, b):
    """x @ w + b, fused (w is (in, out))."""
    out = np.matmul(x, w)
    out += b
    return out


@linear.vjp
def _(ctx, gy):
    g = ctx.g
    x, w, b = ctx.inputs
    gx = None
    if ctx.needs[0]:
        gx = g.matmul_nt(gy, w) if len(x.shape) >= 2 else g.matmul(gy, g.transpose(w))
    gw = None
    if ctx.needs[1]:
        if len(x.shape) == 2:
            gw = g.matmul_tn(x, gy)
        else:
            n_in, n_out = w.shape
            gw = g.matmul_tn(g.reshape(x, shape=(-1, n_in)), g.reshape(gy, shape=(-1, n_out)))
    gb = None
    if ctx.needs[2]:
        lead = len(gy.shape) - len(b.shape)
        # The usual bias (the output's trailing shape) sums over the leading axes in one node.
        gb = g.sum(gy, axis=tuple(range(lead))) if lead > 0 and tuple(gy.shape[lead:]) == tuple(b.shape) else gy
    return gx, gw, gb
