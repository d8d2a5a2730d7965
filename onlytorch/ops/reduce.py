"""Reductions (sum, mean, max, min, logsumexp, norm), softmax, and the internal ops that move
gradients between a reduced shape and the full one (expand, sum_to, broadcast_like)."""

from __future__ import annotations

import numpy as np

from ..export.builder import onnx_rule
from ..export.rules import axes_of, cast_to, with_attrs
from .registry import ShapeRuleError, defop
from .shapes import axes_tuple, broadcast, fmt, reduction


def _reduce_onnx(op_type):
    """A reduction over the op's axis (None: all) with its keepdims; opset 17's ReduceSum takes
    the axes as an input, the others as an attribute."""

    @onnx_rule(op_type)
    def rule(b, n):
        x = cast_to(b, n.inputs[0], n.input_dtypes[0], n.dtype)
        axes = axes_of(n.attrs["axis"], len(n.input_shapes[0]))
        if axes == [] or not n.input_shapes[0]:  # nothing to reduce
            return b.op("Identity", x, out=n.out)
        keep = int(bool(n.attrs["keepdims"]))
        if op_type == "ReduceSum":
            return b.op(op_type, x, *([b.ints(axes)] if axes is not None else []), out=n.out, keepdims=keep)
        return b.op(op_type, x, out=n.out, keepdims=keep, **({"axes": axes} if axes is not None else {}))

    return rule


@onnx_rule("Unsqueeze and Expand to the input's shape (divided by the count for a mean)")
def _expand_onnx(b, n):
    v, like = n.inputs
    ndim = len(n.input_shapes[1])
    axes = list(axes_tuple(_np_axis(n.attrs["axis"]), ndim))
    if not n.attrs["keepdims"] and axes:
        v = b.op("Unsqueeze", v, b.ints(axes))
    shape = b.op("Shape", like)
    out = b.op("Expand", cast_to(b, v, n.input_dtypes[0], n.dtype), shape)
    if n.attrs["mean"] and axes:
        count = b.op("ReduceProd", b.op("Gather", shape, b.ints(axes), axis=0), keepdims=0)
        out = b.op("Div", out, b.cast(count, n.dtype))
    return b.finish(out, n.out)


@onnx_rule("ReduceSum over the broadcast axes (static shapes)")
def _sum_to_onnx(b, n):
    v, _ = n.inputs
    have, want = n.input_shapes
    lead = len(have) - len(want)
    axes = [i + lead for i, d in enumerate(want) if d == 1 and have[i + lead] != 1]
    if axes:
        v = b.op("ReduceSum", v, b.ints(axes), keepdims=1)
    if lead:
        v = b.op("ReduceSum", v, b.ints(range(lead)), keepdims=0)
    return b.finish(v, n.out) if v != n.inputs[0] else b.op("Identity", v, out=n.out)


@onnx_rule("Expand to the broadcast shape")
def _broadcast_like_onnx(b, n):
    v, like = n.inputs
    return b.op("Expand", cast_to(b, v, n.input_dtypes[0], n.dtype), b.op("Shape", like), out=n.out)


def _np_axis(axis):
    return tuple(axis) if isinstance(axis, list) else axis


def _expand(ctx, v, *, mean: bool = False):
    """v (the reduced shape of this op's output) broadcast back to the shape of input 0."""
    return ctx.g.expand(v, ctx.inputs[0], axis=ctx.attrs["axis"], keepdims=ctx.attrs["keepdims"], mean=mean)


@defop("sum", reduction, onnx=_reduce_onnx("ReduceSum"))
def sum_(x, *, axis=None, keepdims=False):
    """Sum over axis (all axes when None)."""
    # np.sum's own reduction, without its Python wrapper (it is a gradient's hot path).
    return np.add.reduce(x, axis=axis if type(axis) is not list else tuple(axis), keepdims=keepdims)


@sum_.vjp
def _(ctx, gy):
    return (_expand(ctx, gy),)


def mean_all(x):
    """np.mean(x) for a float32 or float64 array, without its Python wrapper (the same sum, and
    the same division by the count as an intp)."""
    if x.dtype.kind != "f" or x.dtype.itemsize < 4:
        return np.mean(x)  # float16 accumulates in float32 there
    total = np.add.reduce(x, axis=None)
    if x.size == 0 or x.dtype.itemsize > 8:  # a NaN where Python would raise; long double
        return total.dtype.type(total / np.intp(x.size))
    # For float32 and float64 numpy divides in float64: done as a Python float division, the same
    # IEEE double operation on the same operands (the count is exact), without the cost of
    # numpy scalar arithmetic.
    return total.dtype.type(float(total) / x.size)


_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


@defop("mean", reduction, onnx=_reduce_onnx("ReduceMean"))
def mean(x, *, axis=None, keepdims=False):
    """Mean over axis (all axes when None)."""
    if axis is None and not keepdims and type(x) is np.ndarray:
        # np.mean's value at a sum's cost (a train metric's usual last node): mean_all's division,
        # rounded to the dtype straight into the 0-d array the graph keeps
        dt = x.dtype
        if (dt is _FLOATS[0] or dt is _FLOATS[1]) and x.size:
            return np.array(float(np.add.reduce(x, None)) / x.size, dtype=dt)
        return mean_all(x)
    return np.mean(x, axis=_np_axis(axis), keepdims=keepdims)


@mean.vjp
def _(ctx, gy):
    return (_expand(ctx, gy, mean=True),)


def _extreme_vjp(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    hit = g.equal(x, _expand(ctx, ctx.out))
    count = g.sum(hit, axis=ctx.attrs["axis"], keepdims=True)
    # Ties share the gradient equally (torch's amax/amin and full max/min).
    return (_expand(ctx, gy) * hit / count,)


@defop("max", reduction, onnx=_reduce_onnx("ReduceMax"))
def max_(x, *, axis=None, keepdims=False):
    """Maximum over axis (all axes when None)."""
    return np.max(x, axis=_np_axis(axis), keepdims=keepdims)


max_.vjp(_extreme_vjp)


@defop("min", reduction, onnx=_reduce_onnx("ReduceMin"))
def min_(x, *, axis=None, keepdims=False):
    """Minimum over axis (all axes when None)."""
    return np.min(x, axis=_np_axis(axis), keepdims=keepdims)


min_.vjp(_extreme_vjp)


@defop("logsumexp", reduction, onnx=_reduce_onnx("ReduceLogSumExp"))
def logsumexp(x, *, axis=None, keepdims=False):
    """log(sum(exp(x))) over axis, computed without overflow."""
    ax = _np_axis(axis)
    m = np.max(x, axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    out = np.log(np.sum(np.exp(x - m), axis=ax, keepdims=True)) + m
    return out if keepdims else np.squeeze(out, axis=ax)


@logsumexp.vjp
def _(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    return (_expand(ctx, gy) * g.exp(x - _expand(ctx, ctx.out)),)


@defop("norm", reduction, onnx=_reduce_onnx("ReduceL2"))
def norm(x, *, axis=None, keepdims=False):
    """Euclidean (2-) norm over axis (all axes when None); its gradient at 0 is 0."""
    return np.sqrt(np.sum(x * x, axis=_np_axis(axis), keepdims=keepdims))


@norm.vjp
def _(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    n = _expand(ctx, ctx.out)
    zero = g.equal(n, 0)
    return (_expand(ctx, gy) * g.where(zero, 0.0, x / g.where(zero, 1.0, n)),)


def _softmax_shape(x, *, axis=-1):
    axes_tuple(axis, len(x))
    return x, "f"


@defop("softmax", _softmax_shape, onnx=with_attrs("Softmax", {"axis": "axis"}, cast={"axis": int}))
def softmax(x, *, axis=-1):
    """exp(x) / sum(exp(x)) along axis, computed without overflow."""
    e = np.exp(x - np.max(x, axis=axis, keepdims=True))
    return e / np.sum(e, axis=axis, keepdims=True)


@softmax.vjp
def _(ctx, gy):
    y = ctx.out
    return (y * (gy - ctx.g.sum(gy * y, axis=ctx.attrs["axis"], keepdims=True)),)


@defop("log_softmax", _softmax_shape, onnx=with_attrs("LogSoftmax", {"axis": "axis"}, cast={"axis": int}))
def log_softmax(x, *, axis=-1):
    """x - logsumexp(x) along axis."""
    m = np.max(x, axis=axis, keepdims=True)
    z = x - m
    return z - np.log(np.sum(np.exp(z), axis=axis, keepdims=True))


@log_softmax.vjp
def _(ctx, gy):
    g = ctx.g
    return (gy - g.exp(ctx.out) * g.sum(gy, axis=ctx.attrs["axis"], keepdims=True),)


# ---------------------------------------------------------------- gradient plumbing (internal)


def _like_shape(x, like, **attrs):
    return like, "f"


@defop("expand", _like_shape, shape_only=(1,), public=False, onnx=_expand_onnx)
def expand(v, like_shape, *, axis=None, keepdims=False, mean=False):
    """v, reduced over axis of a tensor shaped like_shape, broadcast back to like_shape
    (divided by the number of reduced elements when mean)."""
    axes = axes_tuple(_np_axis(axis), len(like_shape))
    if not keepdims:
        v = np.expand_dims(v, axes) if axes else v
    out = np.broadcast_to(v, like_shape)
    if mean:
        count = int(np.prod([like_shape[a] for a in axes])) if axes else 1
        out = out / count
    return out


@expand.vjp
def _(ctx, gy):
    reduce = ctx.g.mean if ctx.attrs["mean"] else ctx.g.sum
    return reduce(gy, axis=ctx.attrs["axis"], keepdims=ctx.attrs["keepdims"]), None


def sum_to_shape(v: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a broadcast result back down to shape (the unbroadcast step)."""
    if v.shape == shape:
        return v
    lead = v.ndim - len(shape)
    if lead:
        v = v.sum(axis=tuple(range(lead)))
    axes = tuple(i for i, d in enumerate(shape) if d == 1 and v.shape[i] != 1)
    if axes:
        v = v.sum(axis=axes, keepdims=True)
    return v


@defop("sum_to", _like_shape, shape_only=(1,), public=False, passes_input=True, onnx=_sum_to_onnx)
def sum_to(v, like_shape):
    """v summed over the axes along which it was broadcast from like_shape."""
    return sum_to_shape(v, tuple(like_shape))


@sum_to.vjp
def _(ctx, gy):
    return ctx.g.broadcast_like(gy, ctx.inputs[0]), None


def _broadcast_like_shape(x, like, **attrs):
    try:
        return broadcast(x, like), "f"
    except ShapeRuleError:
        raise ShapeRuleError(f"cannot broadcast {fmt(x)} to {fmt(like)}") from None


@defop("broadcast_like", _broadcast_like_shape, shape_only=(1,), public=False, onnx=_broadcast_like_onnx)
def broadcast_like(v, like_shape):
    """v broadcast to like_shape."""
    return np.broadcast_to(v, np.broadcast_shapes(v.shape, tuple(like_shape)))


@broadcast_like.vjp
def _(ctx, gy):
    return ctx.g.sum_to(gy, ctx.inputs[0]), None
