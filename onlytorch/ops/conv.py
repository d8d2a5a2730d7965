"""Convolutions in torch's layouts: ``conv1d`` (N, C, L), ``conv2d`` (N, C, H, W) with weights
(out, in/groups, k...), and ``conv_transpose2d`` with weights (in, out/groups, kh, kw).

Three primitive ops carry every convolution and all of their derivatives, so the family is closed
under differentiation (a gradient of a gradient, as WGAN-GP's penalty on a convolutional critic
needs, is just more of the same three ops):

- ``conv2d_core(x, w)``: the convolution over an input padded by ((top, bottom), (left, right));
  a negative pad crops, which the adjoint of a transposed convolution needs;
- ``conv_transpose2d_core(u, w)``: its adjoint in the input (the input gradient of a convolution,
  and the transposed convolution), cropped at (top, left) to a given output size;
- ``conv2d_weight_grad(x, gy)``: the adjoint in the weight.

conv1d is conv2d on a height of 1. The forward takes a strided window view of the padded input
(no copy), then one matrix product per group; the window copy that product needs (about kh*kw
times the input) and the padded input are temporaries of the forward, freed when it returns. The
op declares them (``scratch=``): the graph's peak (``memory_stats``) counts them while it runs.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..export.builder import Builder, MappingError, OnnxNode, onnx_rule
from .registry import ShapeRuleError, defcomposite, defop
from .shapes import fmt

Pads = tuple[tuple[int, int], tuple[int, int]]

# ---------------------------------------------------------------- attributes and geometry


def _ints(value: Any, n: int, what: str, minimum: int) -> tuple[int, ...]:
    """An int or a sequence of n ints (torch accepts both), each at least minimum."""
    vals = (value,) * n if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else value
    if (
        not isinstance(vals, (tuple, list))
        or len(vals) != n
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in vals)
    ):
        raise ValueError(f"{what} must be {_an_integer(n)}, got {value!r}")
    if any(v < minimum for v in vals):
        raise ValueError(f"{what} must be at least {minimum}, got {value!r}")
    return tuple(int(v) for v in vals)


def _an_integer(n: int) -> str:
    return "an integer" if n == 1 else f"an integer or {n} integers"


def _sizes(shape: Sequence[int | None]) -> str:
    return "x".join("N" if d is None else str(d) for d in shape)


def _window_sizes(
    op: str,
    spatial: Sequence[int | None],
    kernel: Sequence[int],
    stride: Sequence[int],
    pads: Sequence[tuple[int, int]],
    dilation: Sequence[int],
) -> tuple[int | None, ...]:
    """The output's spatial sizes; a ShapeRuleError when the (dilated) kernel does not fit the
    padded input."""
    spans = [d * (k - 1) + 1 for k, d in zip(kernel, dilation)]
    padded = [None if n is None else n + a + b for n, (a, b) in zip(spatial, pads)]
    if any(p is not None and p < s for p, s in zip(padded, spans)):
        dil = "" if all(d == 1 for d in dilation) else f" (dilation {_sizes(dilation)} spreads it over {_sizes(spans)})"
        pad = ", ".join(f"{a}+{b}" for a, b in pads)
        raise ShapeRuleError(
            f"{op}: kernel {_sizes(kernel)}{dil} is larger than the padded input {_sizes(padded)} "
            f"(input {_sizes(spatial)}, padding {pad}); use a smaller kernel or more padding"
        )
    return tuple(None if p is None else (p - s) // st + 1 for p, s, st in zip(padded, spans, stride))


def _check_channels(
    op: str, x: Sequence[int | None], w: Sequence[int | None], groups: int, *, transposed: bool
) -> None:
    """Channel counts of input and weight agree, and groups divide them."""
    c, wc, wg = x[1], w[0], w[1]
    assert wc is not None and wg is not None
    if groups < 1:
        raise ShapeRuleError(f"{op}: groups must be at least 1, got {groups}")
    if c is not None and c % groups:
        raise ShapeRuleError(f"{op}: groups={groups} does not divide the input's {c} channels")
    if transposed:
        # weight (in, out/groups, ...): its first axis is the input's channels
        if c != wc:
            raise ShapeRuleError(
                f"{op}: the input has {c} channels but the weight {fmt(tuple(w))} (in, out/groups, ...) takes {wc}"
            )
        return
    if wc % groups:
        raise ShapeRuleError(f"{op}: groups={groups} does not divide the weight's {wc} output channels")
    if c != wg * groups:
        per = f" ({wg} per group x {groups} groups)" if groups > 1 else ""
        raise ShapeRuleError(
            f"{op}: the input has {c} channels but the weight {fmt(tuple(w))} (out, in/groups, ...) "
            f"takes {wg * groups}{per}"
        )


def _check_layout(op: str, x: Sequence[int | None], w: Sequence[int | None], nd: int, *, transposed: bool) -> None:
    names = "(batch, channels, length)" if nd == 1 else "(batch, channels, height, width)"
    if len(x) != nd + 2:
        raise ShapeRuleError(f"{op} takes {names} inputs, got {fmt(tuple(x))}")
    kernel = "length" if nd == 1 else "kh, kw"
    wl = f"(in, out/groups, {kernel})" if transposed else f"(out, in/groups, {kernel})"
    if len(w) != nd + 2 or any(d is None for d in w):
        raise ShapeRuleError(f"{op}: the weight must have the fixed shape {wl}, got {fmt(tuple(w))}")


# ---------------------------------------------------------------- numpy kernels


def _pad(x: np.ndarray, pads: Pads) -> np.ndarray:
    """x padded with zeros on its two last axes (a negative pad crops)."""
    (t, b), (left, r) = pads
    h, w = x.shape[2:]
    x = x[:, :, max(-t, 0) : h - max(-b, 0), max(-left, 0) : w - max(-r, 0)]
    t, b, left, r = max(t, 0), max(b, 0), max(left, 0), max(r, 0)
    if not (t or b or left or r):
        return x
    out = np.zeros(x.shape[:2] + (x.shape[2] + t + b, x.shape[3] + left + r), dtype=x.dtype)
    out[:, :, t : t + x.shape[2], left : left + x.shape[3]] = x
    return out


def _windows(xp: np.ndarray, kernel, out, stride, dilation) -> np.ndarray:
    """The windows of xp (N, C, Hp, Wp): a read-only strided view (N, C, kh, kw, oh, ow), no copy."""
    n, c = xp.shape[:2]
    sn, sc, sh, sw = xp.strides
    shape = (n, c, kernel[0], kernel[1], out[0], out[1])
    strides = (sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1])
    return as_strided(xp, shape, strides, writeable=False)


def _cols(xp: np.ndarray, kernel, out, stride, dilation) -> np.ndarray:
    """The windows of xp (N, C, Hp, Wp) as columns (N, C*kh*kw, oh*ow): the window view, reshaped,
    which copies it once (unless its strides allow a view: a 1x1 kernel at stride 1): the one copy
    the matrix product needs."""
    n, c = xp.shape[:2]
    return _windows(xp, kernel, out, stride, dilation).reshape(n, c * kernel[0] * kernel[1], out[0] * out[1])


@functools.lru_cache(maxsize=256)
def _cols_bytes(shape, strides, dtype, kernel, out, stride, dilation, groups) -> int:
    """The bytes of one group's column copy (_cols) of an array of that shape (N, C, Hp, Wp) and
    strides, or 0 when the reshape is a view. Decided on the strides alone: the window view is
    taken over a one-element buffer and never read (remembered per geometry: a training step
    asks the same few each time)."""
    n, c, hp, wp = shape
    item = np.dtype(dtype).itemsize
    probe = as_strided(np.empty(1, dtype), (n, c // groups, hp, wp), strides, writeable=False)
    size = n * (c // groups) * kernel[0] * kernel[1] * out[0] * out[1]
    try:
        _windows(probe, kernel, out, stride, dilation).reshape((n, -1, out[0] * out[1]), copy=False)
    except ValueError:
        return size * item
    return 0


def _out_hw(padded: Sequence[int], kernel: Sequence[int], stride, dilation) -> tuple[int, int]:
    return tuple((p - d * (k - 1) - 1) // s + 1 for p, k, s, d in zip(padded, kernel, stride, dilation))  # type: ignore[return-value]


def _conv_forward(x, w, stride, pads, dilation, groups):
    xp = _pad(x, pads)
    o, cg, kh, kw = w.shape
    oh, ow = _out_hw(xp.shape[2:], (kh, kw), stride, dilation)
    n, og = x.shape[0], o // groups
    out = np.empty((n, o, oh * ow), dtype=x.dtype)
    for gi in range(groups):
        cols = _cols(xp[:, gi * cg : (gi + 1) * cg], (kh, kw), (oh, ow), stride, dilation)
        # (og, K) @ (N, K, L): the batch of products in one call, written in NCHW order
        np.matmul(w[gi * og : (gi + 1) * og].reshape(og, -1), cols, out=out[:, gi * og : (gi + 1) * og])
        del cols  # before the next group's: one column copy at a time, as _conv_scratch counts
    return out.reshape(n, o, oh, ow)


def _padded(x: np.ndarray, pads: Pads) -> tuple[tuple[int, ...], tuple[int, ...], int]:
    """The shape and strides of what _pad gives x, and its bytes when it is a new array (some pad
    is positive; else it is a view of x, 0)."""
    (t, b), (left, r) = pads
    n, c, h, w = x.shape
    shape = (n, c, h + t + b, w + left + r)
    if not any(p > 0 for p in (t, b, left, r)):
        return shape, x.strides, 0
    item = x.itemsize
    plane = shape[2] * shape[3] * item
    return shape, (c * plane, plane, shape[3] * item, item), n * c * plane


def _window_scratch(x, kernel, out, stride, pads, dilation, groups) -> int:
    """The padded input's bytes (when it is a copy) and one group's column copy's."""
    shape, strides, padded = _padded(x, pads)
    return padded + _cols_bytes(shape, strides, x.dtype, kernel, out, stride, dilation, groups)


def _conv_scratch(x, w, *, stride, pads, dilation, groups) -> int:
    """What _conv_forward holds besides x, w and its result: the padded input and a column copy."""
    shape, _, _ = _padded(x, pads)
    out = _out_hw(shape[2:], w.shape[2:], stride, dilation)
    return _window_scratch(x, w.shape[2:], out, stride, pads, dilation, groups)


def _transpose_forward(u, w, stride, offset, dilation, groups, size):
    n, cu, uh, uw = u.shape
    _, cg, kh, kw = w.shape
    og = cu // groups
    span = [(m - 1) * s + d * (k - 1) + 1 for m, s, d, k in zip((uh, uw), stride, dilation, (kh, kw))]
    full_h, full_w = (max(sp, off + sz) for sp, off, sz in zip(span, offset, size))
    # Channel-major and batch-last (C, H, W, N): one product for the whole batch, and each kernel
    # offset's block adds as runs of uw * N values rather than rows of a few pixels.
    full = np.zeros((cg * groups, full_h, full_w, n), dtype=u.dtype)
    (sh, sw), (dh, dw) = stride, dilation
    rows = u.transpose(1, 2, 3, 0).reshape(cu, uh * uw * n)
    for gi in range(groups):
        cols = w[gi * og : (gi + 1) * og].reshape(og, -1).T @ rows[gi * og : (gi + 1) * og]
        cols = cols.reshape(cg, kh, kw, uh, uw, n)
        target = full[gi * cg : (gi + 1) * cg]
        # the windows overlap, so each kernel offset adds its block in turn
        for i in range(kh):
            for j in range(kw):
                target[:, i * dh : i * dh + (uh - 1) * sh + 1 : sh, j * dw : j * dw + (uw - 1) * sw + 1 : sw] += cols[
                    :, i, j
                ]
        del cols  # before the next group's, as _transpose_scratch counts
    crop = full[:, offset[0] : offset[0] + size[0], offset[1] : offset[1] + size[1]]
    return np.ascontiguousarray(crop.transpose(3, 0, 1, 2))


def _transpose_scratch(u, w, *, stride, offset, dilation, groups, size) -> int:
    """What _transpose_forward holds besides u, w and its result at its height: u in (C, H, W, N)
    order and the full (uncropped) output throughout, then one group's product, which is freed
    before the result is made: the larger of the two counts."""
    n, _, uh, uw = u.shape
    _, cg, kh, kw = w.shape
    span = [(m - 1) * s + d * (k - 1) + 1 for m, s, d, k in zip((uh, uw), stride, dilation, (kh, kw))]
    full_h, full_w = (max(sp, off + sz) for sp, off, sz in zip(span, offset, size))
    rows = u.nbytes if n > 1 else 0  # the transpose of a batch of 1 reshapes as a view
    result = n * cg * groups * size[0] * size[1]
    return rows + (cg * groups * full_h * full_w * n + max(cg * kh * kw * uh * uw * n - result, 0)) * u.itemsize


def _weight_grad_forward(x, gy, stride, pads, dilation, groups, kernel):
    xp = _pad(x, pads)
    n, c = x.shape[:2]
    o, oh, ow = gy.shape[1:]
    cg, og = c // groups, o // groups
    rows = gy.reshape(n, o, oh * ow)
    out = np.empty((o, cg * kernel[0] * kernel[1]), dtype=x.dtype)
    for gi in range(groups):
        cols = _cols(xp[:, gi * cg : (gi + 1) * cg], kernel, (oh, ow), stride, dilation)
        gyg = rows[:, gi * og : (gi + 1) * og]
        if og <= oh * ow:
            # a product per sample, summed: its (N, og, K) partial results are no larger than cols
            out[gi * og : (gi + 1) * og] = np.matmul(gyg, cols.transpose(0, 2, 1)).sum(axis=0)
        else:
            out[gi * og : (gi + 1) * og] = np.tensordot(gyg, cols, axes=([0, 2], [0, 2]))
        del cols  # before the next group's, as _weight_grad_scratch counts
    return out.reshape((o, cg) + tuple(kernel))


def _weight_grad_scratch(x, gy, *, stride, pads, dilation, groups, kernel) -> int:
    """What _weight_grad_forward holds besides x, gy and its result: the padded input, a column
    copy, and the products' operands: the per-sample products (N, og, K) before their sum, or
    tensordot's copies of both operands in (K-major) matrix order."""
    n, c = x.shape[:2]
    o, oh, ow = gy.shape[1:]
    og, k = o // groups, (c // groups) * kernel[0] * kernel[1]
    cols = _window_scratch(x, kernel, (oh, ow), stride, pads, dilation, groups)
    products = n * og * k if og <= oh * ow else n * og * oh * ow + n * k * oh * ow
    return cols + products * x.itemsize


# ---------------------------------------------------------------- ONNX mappings


def _uncropped(b: Builder, x: str, shape: Sequence[int | None], pads: Pads) -> tuple[str, list[int]]:
    """x and its pads as ONNX takes them ([top, left, bottom, right], none negative): a negative
    pad (a crop, only in derivative graphs) becomes a Slice of x."""
    (t, bottom), (left, r) = pads
    if min(t, bottom, left, r) < 0:
        h, w = shape[2:]
        if h is None or w is None:
            raise MappingError(f"a convolution that crops its input needs fixed sizes, got {fmt(tuple(shape))}")
        starts = (max(-t, 0), max(-left, 0))
        ends = (h - max(-bottom, 0), w - max(-r, 0))
        x = b.op("Slice", x, b.ints(starts), b.ints(ends), b.ints((2, 3)))
    return x, [max(t, 0), max(left, 0), max(bottom, 0), max(r, 0)]


@onnx_rule("Conv")
def _conv_onnx(b: Builder, n: OnnxNode) -> str:
    """Conv, after a Slice where the op crops (ONNX pads cannot be negative)."""
    a = n.attrs
    x, pads = _uncropped(b, n.inputs[0], n.input_shapes[0], a["pads"])
    return b.op(
        "Conv",
        x,
        n.inputs[1],
        out=n.out,
        kernel_shape=list(n.input_shapes[1][2:]),
        strides=list(a["stride"]),
        pads=pads,
        dilations=list(a["dilation"]),
        group=int(a["groups"]),
    )


@onnx_rule("Conv (the batch as channels)")
def _weight_grad_onnx(b: Builder, n: OnnxNode) -> str:
    """The weight's gradient correlates the input with the output gradient over the batch: per
    group, a Conv of x as (C, N, H, W) with gy as (O, N, oh, ow) for its kernel, stride and
    dilation swapped, cropped to the kernel and transposed to (O, C/groups, kh, kw)."""
    a = n.attrs
    (c, h, w), (o, oh, ow) = n.input_shapes[0][1:], n.input_shapes[1][1:]
    if None in (c, h, w, o, oh, ow):
        raise MappingError(f"a convolution's weight gradient needs fixed sizes, got {fmt(n.input_shapes[0])}")
    assert c is not None and o is not None  # for mypy: checked above
    x, pads = _uncropped(b, n.inputs[0], n.input_shapes[0], a["pads"])
    xt = b.op("Transpose", x, perm=[1, 0, 2, 3])
    gt = b.op("Transpose", n.inputs[1], perm=[1, 0, 2, 3])
    groups = int(a["groups"])
    cg, og = c // groups, o // groups
    parts = []
    for gi in range(groups):
        xg = xt if groups == 1 else b.op("Slice", xt, b.ints((gi * cg,)), b.ints(((gi + 1) * cg,)), b.ints((0,)))
        gg = gt if groups == 1 else b.op("Slice", gt, b.ints((gi * og,)), b.ints(((gi + 1) * og,)), b.ints((0,)))
        y = b.op(
            "Conv", xg, gg, kernel_shape=[oh, ow], strides=list(a["dilation"]), dilations=list(a["stride"]), pads=pads
        )
        y = b.op("Slice", y, b.ints((0, 0)), b.ints(a["kernel"]), b.ints((2, 3)))
        parts.append(b.op("Transpose", y, perm=[1, 0, 2, 3], **({"out": n.out} if groups == 1 else {})))
    return parts[0] if groups == 1 else b.op("Concat", *parts, out=n.out, axis=0)


@onnx_rule("ConvTranspose")
def _conv_transpose_onnx(b: Builder, n: OnnxNode) -> str:
    """ConvTranspose: the full output's span cropped at offset to size, as begin pads and end
    pads, or output_padding where the size reaches past the span (ONNX pads cannot be negative)."""
    u, w = n.inputs
    a = n.attrs
    kernel, sizes = n.input_shapes[1][2:], n.input_shapes[0][2:]
    if None in sizes:
        raise MappingError(f"a transposed convolution needs fixed spatial sizes, got {fmt(n.input_shapes[0])}")
    spans = [(m - 1) * s + d * (k - 1) + 1 for m, s, d, k in zip(sizes, a["stride"], a["dilation"], kernel)]  # type: ignore[operator]
    ends = [sp - off - sz for sp, off, sz in zip(spans, a["offset"], a["size"])]
    return b.op(
        "ConvTranspose",
        u,
        w,
        out=n.out,
        kernel_shape=list(kernel),
        strides=list(a["stride"]),
        pads=[*a["offset"], *(max(e, 0) for e in ends)],
        output_padding=[max(-e, 0) for e in ends],
        dilations=list(a["dilation"]),
        group=int(a["groups"]),
    )


# ---------------------------------------------------------------- the primitive ops


def _core_shape(x, w, *, stride, pads, dilation, groups):
    _check_layout("conv2d", x, w, 2, transposed=False)
    _check_channels("conv2d", x, w, groups, transposed=False)
    oh, ow = _window_sizes("conv2d", x[2:], w[2:], stride, pads, dilation)
    return (x[0], w[0], oh, ow), "f"


@defop("conv2d_core", _core_shape, public=False, scratch=_conv_scratch, onnx=_conv_onnx)
def conv2d_core(x, w, *, stride, pads, dilation, groups):
    """Convolution (torch's conv2d, no bias) of x padded by pads ((top, bottom), (left, right));
    a negative pad crops."""
    return _conv_forward(x, w, stride, pads, dilation, groups)


def _transpose_pads(u_hw, kernel, stride, dilation, offset, size) -> Pads:
    """The pads of the convolution whose adjoint is this transposed convolution: its input (of
    the transposed convolution's output size) padded to exactly the span the windows cover."""
    spans = [(m - 1) * s + d * (k - 1) + 1 for m, s, d, k in zip(u_hw, stride, dilation, kernel)]
    return tuple((off, sp - off - sz) for sp, off, sz in zip(spans, offset, size))  # type: ignore[return-value]


@conv2d_core.vjp
def _(ctx, gy):
    g, (x, w), a = ctx.g, ctx.inputs, ctx.attrs
    common = {"stride": a["stride"], "dilation": a["dilation"], "groups": a["groups"]}
    gx = gw = None
    if ctx.needs[0]:
        offset = (a["pads"][0][0], a["pads"][1][0])
        gx = g.conv_transpose2d_core(gy, w, offset=offset, size=tuple(x.shape[2:]), **common)
    if ctx.needs[1]:
        gw = g.conv2d_weight_grad(x, gy, pads=a["pads"], kernel=tuple(w.shape[2:]), **common)
    return gx, gw


def _transpose_core_shape(u, w, *, stride, offset, dilation, groups, size):
    _check_layout("conv_transpose2d", u, w, 2, transposed=True)
    _check_channels("conv_transpose2d", u, w, groups, transposed=True)
    if any(s < 1 for s in size) or any(o < 0 for o in offset):
        raise ShapeRuleError(f"conv_transpose2d: output size {_sizes(size)} is not positive")
    return (u[0], w[1] * groups, *size), "f"


@defop(
    "conv_transpose2d_core", _transpose_core_shape, public=False, scratch=_transpose_scratch, onnx=_conv_transpose_onnx
)
def conv_transpose2d_core(u, w, *, stride, offset, dilation, groups, size):
    """Transposed convolution (no bias): the adjoint in the input of a convolution with weight w,
    read from (top, left) = offset at the given output size (the input gradient of conv2d)."""
    return _transpose_forward(u, w, stride, offset, dilation, groups, size)


@conv_transpose2d_core.vjp
def _(ctx, gy):
    g, (u, w), a = ctx.g, ctx.inputs, ctx.attrs
    pads = _transpose_pads(u.shape[2:], w.shape[2:], a["stride"], a["dilation"], a["offset"], a["size"])
    common = {"stride": a["stride"], "dilation": a["dilation"], "groups": a["groups"], "pads": pads}
    gu = g.conv2d_core(gy, w, **common) if ctx.needs[0] else None
    gw = g.conv2d_weight_grad(gy, u, kernel=tuple(w.shape[2:]), **common) if ctx.needs[1] else None
    return gu, gw


def _weight_grad_shape(x, gy, *, stride, pads, dilation, groups, kernel):
    if len(x) != 4 or len(gy) != 4 or gy[1] is None or x[1] is None:
        raise ShapeRuleError(f"conv2d_weight_grad of {fmt(x)} and {fmt(gy)}: 4-D inputs with fixed channels")
    if x[1] % groups or gy[1] % groups:
        raise ShapeRuleError(f"conv2d_weight_grad: groups={groups} does not divide {x[1]} and {gy[1]} channels")
    out = _window_sizes("conv2d_weight_grad", x[2:], kernel, stride, pads, dilation)
    if any(o is not None and d is not None and o < d for o, d in zip(out, gy[2:])):
        raise ShapeRuleError(f"conv2d_weight_grad: {fmt(gy)} has more positions than {fmt(x)} has windows")
    return (gy[1], x[1] // groups, *kernel), "f"


@defop("conv2d_weight_grad", _weight_grad_shape, public=False, scratch=_weight_grad_scratch, onnx=_weight_grad_onnx)
def conv2d_weight_grad(x, gy, *, stride, pads, dilation, groups, kernel):
    """The gradient in the weight of conv2d_core(x, w) with output gradient gy (the adjoint of
    the convolution in its weight)."""
    return _weight_grad_forward(x, gy, stride, pads, dilation, groups, kernel)


@conv2d_weight_grad.vjp
def _(ctx, gw):
    g, (x, gy), a = ctx.g, ctx.inputs, ctx.attrs
    common = {"stride": a["stride"], "dilation": a["dilation"], "groups": a["groups"]}
    gx = ggy = None
    if ctx.needs[0]:
        offset = (a["pads"][0][0], a["pads"][1][0])
        gx = g.conv_transpose2d_core(gy, gw, offset=offset, size=tuple(x.shape[2:]), **common)
    if ctx.needs[1]:
        ggy = g.conv2d_core(x, gw, pads=a["pads"], **common)
    return gx, ggy


# ---------------------------------------------------------------- the public ops


def _conv_attrs(w_shape, nd: int, stride, padding, dilation, groups):
    """torch's stride/padding/dilation/groups for an nd-dimensional convolution, as the
    primitive's (stride, pads, dilation) over nd axes."""
    st = _ints(stride, nd, "stride", 1)
    dil = _ints(dilation, nd, "dilation", 1)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if isinstance(padding, str):
        if padding == "valid":
            return st, ((0, 0),) * nd, dil
        if padding != "same":
            raise ValueError(f"padding must be {_an_integer(nd)}, 'same' or 'valid', got {padding!r}")
        if any(s != 1 for s in st):
            raise ValueError(f"padding='same' needs stride 1 (as torch), got stride {stride!r}")
        # torch puts the odd extra row of 'same' padding at the end
        totals = [d * (k - 1) for d, k in zip(dil, w_shape[2:])]
        return st, tuple((t // 2, t - t // 2) for t in totals), dil
    pad = _ints(padding, nd, "padding", 0)
    return st, tuple((p, p) for p in pad), dil


def _check(op: str, x, w, nd: int, st, pads, dil, groups, *, transposed: bool = False) -> None:
    """The public op's shape checks, on the shapes the user gave (1-D stays 1-D in messages)."""
    from ..errors import ShapeError

    try:
        _check_layout(op, x.shape, w.shape, nd, transposed=transposed)
        _check_channels(op, x.shape, w.shape, groups, transposed=transposed)
        if not transposed:
            _window_sizes(op, x.shape[2:], w.shape[2:], st, pads, dil)
    except ShapeRuleError as e:
        # the composite's error already names the op
        raise ShapeError(str(e).removeprefix(f"{op}: ")) from None


def _add_bias(g, op: str, y, bias, nd: int):
    if bias is None:
        return y
    if not hasattr(bias, "shape"):
        bias = g.constant(np.asarray(bias))
    channels = y.shape[1]
    if tuple(bias.shape) != (channels,):
        from ..errors import ShapeError

        raise ShapeError(f"the bias must have shape ({channels},) (one per output channel), got {fmt(bias.shape)}")
    return y + g.reshape(bias, shape=(1, channels) + (1,) * nd)


@defcomposite("conv2d", summary="2-D convolution as torch.nn.functional.conv2d (stride, padding, dilation, groups).")
def conv2d(g, x, w, *, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """2-D convolution as torch.nn.functional.conv2d: x (N, C, H, W), w (out, C/groups, kh, kw),
    an optional bias (out,); stride, padding (integers, pairs, 'same' with stride 1, or 'valid'),
    dilation and groups."""
    st, pads, dil = _conv_attrs(w.shape, 2, stride, padding, dilation, groups)
    _check("conv2d", x, w, 2, st, pads, dil, groups)
    y = g.conv2d_core(x, w, stride=st, pads=pads, dilation=dil, groups=int(groups))
    return _add_bias(g, "conv2d", y, bias, 2)


@defcomposite("conv1d", summary="1-D convolution as torch.nn.functional.conv1d (stride, padding, dilation, groups).")
def conv1d(g, x, w, *, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """1-D convolution as torch.nn.functional.conv1d: x (N, C, L), w (out, C/groups, k), an
    optional bias (out,); stride, padding (an integer, 'same' with stride 1, or 'valid'),
    dilation and groups."""
    st, pads, dil = _conv_attrs(w.shape, 1, stride, padding, dilation, groups)
    _check("conv1d", x, w, 1, st, pads, dil, groups)
    n, c, length = x.shape
    o, cg, k = w.shape
    x4 = g.reshape(x, shape=(-1 if n is None else n, c, 1, length))
    w4 = g.reshape(w, shape=(o, cg, 1, k))
    y = g.conv2d_core(x4, w4, stride=(1, *st), pads=((0, 0), *pads), dilation=(1, *dil), groups=int(groups))
    y = g.reshape(y, shape=(-1 if n is None else n, o, y.shape[3]))
    return _add_bias(g, "conv1d", y, bias, 1)


@defcomposite(
    "conv_transpose2d",
    summary="Transposed 2-D convolution as torch.nn.functional.conv_transpose2d (the same argument order).",
)
def conv_transpose2d(g, x, w, *, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    """Transposed 2-D convolution as torch.nn.functional.conv_transpose2d (the same argument
    order): x (N, C, H, W), w (C, out/groups, kh, kw), an optional bias (out,); the output is
    (H - 1) * stride - 2 * padding + dilation * (kh - 1) + output_padding + 1 high (and wide)."""
    op = "conv_transpose2d"
    st = _ints(stride, 2, "stride", 1)
    dil = _ints(dilation, 2, "dilation", 1)
    pad = _ints(padding, 2, "padding", 0)
    extra = _ints(output_padding, 2, "output_padding", 0)
    if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
        raise ValueError(f"groups must be a positive integer, got {groups!r}")
    if any(e >= s and e >= d for e, s, d in zip(extra, st, dil)):
        raise ValueError(f"output_padding {extra} must be smaller than the stride {st} or the dilation {dil}")
    _check(op, x, w, 2, st, None, dil, groups, transposed=True)
    size = []
    for m, s, p, d, k, e in zip(x.shape[2:], st, pad, dil, w.shape[2:], extra):
        if m is None:
            raise ValueError(f"the input needs fixed spatial sizes, got {fmt(x.shape)}")
        size.append((m - 1) * s - 2 * p + d * (k - 1) + e + 1)
    if any(n < 1 for n in size):
        from ..errors import ShapeError

        raise ShapeError(
            f"the output would be {_sizes(size)} (input {_sizes(x.shape[2:])}, kernel {_sizes(w.shape[2:])}, "
            f"stride {_sizes(st)}, padding {_sizes(pad)}): use less padding"
        )
    y = g.conv_transpose2d_core(x, w, stride=st, offset=pad, dilation=dil, groups=int(groups), size=tuple(size))
    return _add_bias(g, op, y, bias, 2)
