"""Pooling and resampling over (batch, channels, height, width) images, as torch: max_pool2d,
avg_pool2d, adaptive_avg_pool2d, upsample_nearest2d, and flatten.

Every forward works on strided views of the (padded) input, one numpy pass per kernel offset:
there is no Python loop over output positions. Each backward is a linear op of its own (max
pooling's is a scatter through the window argmax, whose derivative is the matching gather), so
derivatives of derivatives are ordinary graph ops.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ..errors import ShapeError
from ..export.builder import Builder, MappingError, OnnxNode, onnx_rule
from .registry import Shape, ShapeRuleError, defcomposite, defop
from .shapes import fmt, norm_axis

Pair = tuple[int, int]
Geometry = tuple[Pair, Pair, Pair, tuple[int | None, int | None]]

# ---------------------------------------------------------------- window geometry


def _is_int(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _pair(op: str, what: str, v: object, low: int) -> Pair:
    """An int or a pair of ints (height, width), each at least low."""
    vals = (v, v) if _is_int(v) else tuple(v) if isinstance(v, (list, tuple)) else ()
    if len(vals) != 2 or not all(_is_int(d) and d >= low for d in vals):
        kind = "a positive integer" if low > 0 else "a non-negative integer"
        raise ShapeRuleError(f"{op}: {what} must be {kind} or a pair of them (height, width), got {v!r}")
    return int(vals[0]), int(vals[1])


def _image(op: str, x: Shape) -> None:
    if len(x) != 4:
        raise ShapeRuleError(f"{op} takes (batch, channels, height, width) inputs, got {fmt(x)}")


def _geometry(op: str, x: Shape, kernel: object, stride: object, padding: object) -> Geometry:
    """kernel, stride (the kernel by default, as torch), padding and the output (height, width)."""
    _image(op, x)
    k = _pair(op, "kernel", kernel, 1)
    s = k if stride is None else _pair(op, "stride", stride, 1)
    p = _pair(op, "padding", padding, 0)
    if any(2 * p[d] > k[d] for d in (0, 1)):
        # torch refuses it too: a window could then hold nothing but padding
        raise ShapeRuleError(f"{op}: padding {p} must be at most half the kernel {k}")
    out: list[int | None] = []
    for d, n in enumerate(x[2:]):
        if n is None:
            out.append(None)
            continue
        if n + 2 * p[d] < k[d]:
            h, w = (m if m is None else m + 2 * q for m, q in zip(x[2:], p))
            raise ShapeRuleError(
                f"{op}: kernel {k} is larger than the padded input {fmt((h, w))} (input {fmt(x)}, padding {p})"
            )
        out.append((n + 2 * p[d] - k[d]) // s[d] + 1)
    return k, s, p, (out[0], out[1])


def _runtime(
    op: str, shape: tuple[int, ...], kernel: object, stride: object, padding: object
) -> tuple[Pair, Pair, Pair, Pair]:
    k, s, p, (oh, ow) = _geometry(op, shape, kernel, stride, padding)
    assert oh is not None and ow is not None
    return k, s, p, (oh, ow)


def _offsets(k: Pair, s: Pair, out: Pair) -> Iterator[tuple[int, tuple[slice, ...]]]:
    """Per kernel offset (numbered row-major, as torch's window argmax): the elements of the padded
    input that offset reads for every output position, as a strided slice."""
    for i in range(k[0]):
        for j in range(k[1]):
            rows = slice(i, i + s[0] * (out[0] - 1) + 1, s[0])
            cols = slice(j, j + s[1] * (out[1] - 1) + 1, s[1])
            yield i * k[1] + j, (slice(None), slice(None), rows, cols)


def _pad(x: np.ndarray, p: Pair, value: float) -> np.ndarray:
    if p == (0, 0):
        return x
    return np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=value)


def _padded_zeros(like: tuple[int, ...], p: Pair, dtype: np.dtype) -> np.ndarray:
    n, c, h, w = like
    return np.zeros((n, c, h + 2 * p[0], w + 2 * p[1]), dtype=dtype)


def _crop(xp: np.ndarray, p: Pair) -> np.ndarray:
    if p == (0, 0):
        return xp
    return np.ascontiguousarray(xp[:, :, p[0] : xp.shape[2] - p[0], p[1] : xp.shape[3] - p[1]])


def _pool_shape(op: str):  # type: ignore[no-untyped-def]
    def rule(x, *, kernel, stride=None, padding=0, **_):  # type: ignore[no-untyped-def]
        _, _, _, out = _geometry(op, x, kernel, stride, padding)
        return (x[0], x[1], *out), "f"

    return rule


# ---------------------------------------------------------------- ONNX mappings


def _pool_onnx(onnx_op: str, op: str):  # type: ignore[no-untyped-def]
    """The rule of a window pooling: kernel, strides and symmetric pads as ONNX takes them (MaxPool
    ignores padded positions, as the -inf borders here; AveragePool counts them as zeros when
    count_include_pad is set, as here)."""

    @onnx_rule(onnx_op)
    def rule(b: Builder, n: OnnxNode) -> str:
        k, s, p, _ = _geometry(op, n.input_shapes[0], n.attrs["kernel"], n.attrs.get("stride"), n.attrs["padding"])
        extra = {"count_include_pad": int(bool(n.attrs["count_include_pad"]))} if "count_include_pad" in n.attrs else {}
        return b.op(onnx_op, n.inputs[0], out=n.out, kernel_shape=list(k), strides=list(s), pads=[*p, *p], **extra)

    return rule


@onnx_rule("GlobalAveragePool, AveragePool or MatMul")
def _adaptive_onnx(b: Builder, n: OnnxNode) -> str:
    """Global pooling for one bin; AveragePool where the bins tile the input (the output size
    divides it); else torch's overlapping bins as two products with averaging matrices."""
    shape = n.input_shapes[0]
    out = _adaptive_size(shape, n.attrs["output_size"])
    if out == (1, 1):
        return b.op("GlobalAveragePool", n.inputs[0], out=n.out)
    h, w = shape[2:]
    if h is None or w is None or out[0] is None or out[1] is None:
        raise MappingError(f"adaptive_avg_pool2d needs fixed spatial sizes, got {fmt(shape)}")
    if h % out[0] == 0 and w % out[1] == 0:
        k = [h // out[0], w // out[1]]
        return b.op("AveragePool", n.inputs[0], out=n.out, kernel_shape=k, strides=k)
    rows = b.const(_bins(h, out[0], b.float_dtype), "adaptive_rows")
    cols = b.const(_bins(w, out[1], b.float_dtype).T, "adaptive_cols")
    return b.op("MatMul", b.op("MatMul", rows, n.inputs[0]), cols, out=n.out)


@onnx_rule("Resize (nearest)")
def _upsample_onnx(b: Builder, n: OnnxNode) -> str:
    """Resize with integer scales: 'asymmetric' coordinates and 'floor' rounding give output pixel
    i the input pixel floor(i / scale), each pixel repeated scale times as here."""
    sh, sw = _pair("upsample_nearest2d", "scale_factor", n.attrs["scale_factor"], 1)
    scales = b.const(np.asarray([1.0, 1.0, sh, sw], dtype=np.float32), "scales", dtype=np.float32)
    return b.op(
        "Resize",
        n.inputs[0],
        "",
        scales,
        out=n.out,
        mode="nearest",
        coordinate_transformation_mode="asymmetric",
        nearest_mode="floor",
    )


@onnx_rule("ConvTranspose with a constant kernel")
def _avg_grad_onnx(b: Builder, n: OnnxNode) -> str:
    """avg_pool2d's transpose: each output's share spread over its window is a transposed
    convolution of the shares with a kernel of ones per channel (group = channels), cropped to the
    input by the padding."""
    like = n.input_shapes[1]
    k, s, p, out = _geometry("avg_pool2d", like, n.attrs["kernel"], n.attrs.get("stride"), n.attrs["padding"])
    c, h, w = like[1:]
    oh, ow = out
    if c is None or h is None or w is None or oh is None or ow is None:
        raise MappingError(f"avg_pool2d's derivative needs fixed channel and spatial sizes, got {fmt(like)}")
    divisor = _divisor((0, c, h, w), k, s, p, (oh, ow), n.attrs["count_include_pad"], b.float_dtype)
    share = b.op("Div", n.inputs[0], b.const(divisor, "divisor"))
    ones = b.const(np.ones((c, 1, *k), dtype=b.float_dtype), "window")
    ends = [(o - 1) * st + kk - pp - size for o, st, kk, pp, size in zip((oh, ow), s, k, p, (h, w))]
    return b.op(
        "ConvTranspose",
        share,
        ones,
        out=n.out,
        kernel_shape=list(k),
        strides=list(s),
        group=c,
        pads=[*p, *(max(e, 0) for e in ends)],
        output_padding=[max(-e, 0) for e in ends],
    )


@onnx_rule("MatMul (transposed bins)")
def _adaptive_grad_onnx(b: Builder, n: OnnxNode) -> str:
    """adaptive_avg_pool2d's transpose: the averaging matrices' transposes on either side."""
    like = n.input_shapes[1]
    oh, ow = _adaptive_size(like, n.attrs["output_size"])
    h, w = like[2:]
    if h is None or w is None or oh is None or ow is None:
        raise MappingError(f"adaptive_avg_pool2d's derivative needs fixed spatial sizes, got {fmt(like)}")
    rows = b.const(_bins(h, oh, b.float_dtype).T, "adaptive_rows_t")
    cols = b.const(_bins(w, ow, b.float_dtype), "adaptive_cols_t")
    return b.op("MatMul", b.op("MatMul", rows, n.inputs[0]), cols, out=n.out)


@onnx_rule("Reshape + ReduceSum")
def _upsample_grad_onnx(b: Builder, n: OnnxNode) -> str:
    """The sum of each scale_factor block: the blocks as axes of their own, summed away."""
    sh, sw = _pair("upsample_nearest2d", "scale_factor", n.attrs["scale_factor"], 1)
    c, h, w = n.input_shapes[0][1:]
    if c is None or h is None or w is None:
        raise MappingError(f"upsample_nearest2d's derivative needs fixed sizes, got {fmt(n.input_shapes[0])}")
    blocks = b.op("Reshape", n.inputs[0], b.ints((-1, c, h // sh, sh, w // sw, sw)))
    return b.op("ReduceSum", blocks, b.ints((3, 5)), out=n.out, keepdims=0)


# ---------------------------------------------------------------- max pooling


@defop(
    "max_pool2d",
    _pool_shape("max_pool2d"),
    onnx=_pool_onnx("MaxPool", "max_pool2d"),
    summary="The largest value of each kernel window, as torch's max_pool2d.",
)
def max_pool2d(x, *, kernel, stride=None, padding=0):
    """The largest value of each kernel window (stride: the kernel by default; padding: -inf
    borders, at most half the kernel), as torch's max_pool2d. Its derivative goes to the first
    largest value of each window (row-major), as torch."""
    k, s, p, out = _runtime("max_pool2d", x.shape, kernel, stride, padding)
    xp = _pad(x, p, -np.inf)
    best: np.ndarray | None = None
    for _, sl in _offsets(k, s, out):
        if best is None:
            best = xp[sl].copy()
        else:
            np.maximum(best, xp[sl], out=best)
    assert best is not None
    return best


@max_pool2d.vjp
def _(ctx, gy):
    g, attrs = ctx.g, ctx.attrs
    (x,) = ctx.inputs
    return (g.max_pool2d_scatter(gy, x, g.max_pool2d_argmax(x, ctx.out, **attrs), **attrs),)


def _argmax_shape(x, y, *, kernel, stride=None, padding=0):  # type: ignore[no-untyped-def]
    return _pool_shape("max_pool2d")(x, kernel=kernel, stride=stride, padding=padding)[0], "i"


@defop("max_pool2d_argmax", _argmax_shape, nondiff=(0, 1), public=False)
def max_pool2d_argmax(x, y, *, kernel, stride=None, padding=0):
    """The kernel offset (row-major) of the first element of each window that equals its maximum y
    (max_pool2d's output): torch's rule for ties. A window holding NaN gives offset 0."""
    k, s, p, out = _runtime("max_pool2d", x.shape, kernel, stride, padding)
    xp = _pad(x, p, -np.inf)
    idx = np.zeros(y.shape, dtype=np.int64)
    hit = np.empty(y.shape, dtype=bool)
    # last offset first, so that an earlier offset overwrites a later one it ties with
    for o, sl in reversed(list(_offsets(k, s, out))):
        np.equal(xp[sl], y, out=hit)
        np.copyto(idx, o, where=hit)
    return idx


def _overlapping(k: Pair, s: Pair) -> bool:
    """Whether windows share elements: then one pass over flat positions beats a pass per offset."""
    return s[0] < k[0] or s[1] < k[1]


def _flat_positions(idx: np.ndarray, like: tuple[int, ...], k: Pair, s: Pair, p: Pair) -> np.ndarray:
    """The position in the flattened padded input of each window's argmax (idx: kernel offsets)."""
    n, c, h, w = like
    hp, wp = h + 2 * p[0], w + 2 * p[1]
    oh, ow = idx.shape[2:]
    corner = (np.arange(oh) * (s[0] * wp))[:, None] + np.arange(ow) * s[1]
    planes = (np.arange(n * c) * (hp * wp)).reshape(n, c, 1, 1)
    row, col = np.divmod(idx, k[1])
    return (planes + corner + row * wp + col).reshape(-1)


def _scatter_shape(v, like, idx, *, kernel, stride=None, padding=0):  # type: ignore[no-untyped-def]
    _geometry("max_pool2d", like, kernel, stride, padding)
    return like, "f"


@defop("max_pool2d_scatter", _scatter_shape, shape_only=(1,), nondiff=(2,), public=False)
def max_pool2d_scatter(v, like_shape, idx, *, kernel, stride=None, padding=0):
    """Zeros shaped like the pooled input, with v added at each window's argmax idx."""
    k, s, p, out = _runtime("max_pool2d", like_shape, kernel, stride, padding)
    if _overlapping(k, s):
        n, c, h, w = like_shape
        size = n * c * (h + 2 * p[0]) * (w + 2 * p[1])
        sums = np.bincount(_flat_positions(idx, like_shape, k, s, p), weights=v.reshape(-1), minlength=size)
        xp = sums.astype(v.dtype, copy=False).reshape(n, c, h + 2 * p[0], w + 2 * p[1])
        return _crop(xp, p)
    xp = _padded_zeros(like_shape, p, v.dtype)
    hit = np.empty(idx.shape, dtype=bool)
    for o, sl in _offsets(k, s, out):
        np.equal(idx, o, out=hit)
        xp[sl] += v * hit
    return _crop(xp, p)


@max_pool2d_scatter.vjp
def _(ctx, gy):
    _, _, idx = ctx.inputs
    return ctx.g.max_pool2d_gather(gy, idx, **ctx.attrs), None, None


def _gather_shape(v, idx, *, kernel, stride=None, padding=0):  # type: ignore[no-untyped-def]
    (shape, _) = _pool_shape("max_pool2d")(v, kernel=kernel, stride=stride, padding=padding)
    return shape, "f"


@defop("max_pool2d_gather", _gather_shape, nondiff=(1,), public=False)
def max_pool2d_gather(v, idx, *, kernel, stride=None, padding=0):
    """The value of v at each window's argmax idx (v shaped like the pooled input)."""
    k, s, p, out = _runtime("max_pool2d", v.shape, kernel, stride, padding)
    vp = _pad(v, p, 0.0)
    if _overlapping(k, s):
        return vp.reshape(-1)[_flat_positions(idx, v.shape, k, s, p)].reshape(idx.shape)
    res = np.zeros(idx.shape, dtype=v.dtype)
    hit = np.empty(idx.shape, dtype=bool)
    for o, sl in _offsets(k, s, out):
        np.equal(idx, o, out=hit)
        np.copyto(res, vp[sl], where=hit)
    return res


@max_pool2d_gather.vjp
def _(ctx, gy):
    v, idx = ctx.inputs
    return ctx.g.max_pool2d_scatter(gy, v, idx, **ctx.attrs), None


# ---------------------------------------------------------------- average pooling


def _divisor(shape: tuple[int, ...], k: Pair, s: Pair, p: Pair, out: Pair, count_include_pad: bool, dtype):  # type: ignore[no-untyped-def]
    """What each window's sum is divided by: the kernel's area, or (count_include_pad=False) the
    number of input elements (not padding) in the window."""
    if count_include_pad or p == (0, 0):
        return dtype.type(k[0] * k[1])
    counts = []
    for d in (0, 1):
        start = np.arange(out[d]) * s[d]
        counts.append(np.minimum(start + k[d], p[d] + shape[2 + d]) - np.maximum(start, p[d]))
    return np.outer(counts[0], counts[1]).astype(dtype)


@defop(
    "avg_pool2d",
    _pool_shape("avg_pool2d"),
    onnx=_pool_onnx("AveragePool", "avg_pool2d"),
    summary="The mean of each kernel window, as torch's avg_pool2d.",
)
def avg_pool2d(x, *, kernel, stride=None, padding=0, count_include_pad=True):
    """The mean of each kernel window (stride: the kernel by default; padding: zero borders, at
    most half the kernel, counted in the mean unless count_include_pad=False), as torch."""
    k, s, p, out = _runtime("avg_pool2d", x.shape, kernel, stride, padding)
    xp = _pad(x, p, 0.0)
    acc: np.ndarray | None = None
    for _, sl in _offsets(k, s, out):
        if acc is None:
            acc = xp[sl].copy()
        else:
            acc += xp[sl]
    assert acc is not None
    acc /= _divisor(x.shape, k, s, p, out, count_include_pad, x.dtype)
    return acc


@avg_pool2d.vjp
def _(ctx, gy):
    return (ctx.g.avg_pool2d_grad(gy, ctx.inputs[0], **ctx.attrs),)


def _avg_grad_shape(v, like, *, kernel, stride=None, padding=0, count_include_pad=True):  # type: ignore[no-untyped-def]
    _geometry("avg_pool2d", like, kernel, stride, padding)
    return like, "f"


@defop("avg_pool2d_grad", _avg_grad_shape, shape_only=(1,), public=False, onnx=_avg_grad_onnx)
def avg_pool2d_grad(v, like_shape, *, kernel, stride=None, padding=0, count_include_pad=True):
    """Each output's share (v over its divisor) spread back over its window (avg_pool2d's
    transpose)."""
    k, s, p, out = _runtime("avg_pool2d", like_shape, kernel, stride, padding)
    share = v / _divisor(like_shape, k, s, p, out, count_include_pad, v.dtype)
    xp = _padded_zeros(like_shape, p, v.dtype)
    for _, sl in _offsets(k, s, out):
        xp[sl] += share
    return _crop(xp, p)


@avg_pool2d_grad.vjp
def _(ctx, gy):
    return ctx.g.avg_pool2d(gy, **ctx.attrs), None


# ---------------------------------------------------------------- adaptive average pooling


def _adaptive_size(x: Shape, output_size: object) -> tuple[int | None, int | None]:
    _image("adaptive_avg_pool2d", x)
    vals = (output_size, output_size) if _is_int(output_size) else output_size
    if (
        not isinstance(vals, (list, tuple))
        or len(vals) != 2
        or not all(v is None or (_is_int(v) and v >= 1) for v in vals)
    ):
        raise ShapeRuleError(
            "adaptive_avg_pool2d: output_size must be a positive integer or a pair (height, width) of them "
            f"(None keeps the input's size), got {output_size!r}"
        )
    size = tuple(n if o is None else int(o) for o, n in zip(vals, x[2:]))
    return size[0], size[1]


def _bins(n: int, m: int, dtype) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The (m, n) averaging matrix of torch's adaptive bins: output i averages the inputs
    floor(i n / m) .. ceil((i + 1) n / m) - 1 (bins overlap when m does not divide n)."""
    i = np.arange(m)
    start = (i * n) // m
    end = -((-(i + 1) * n) // m)
    cols = np.arange(n)
    inside = (cols >= start[:, None]) & (cols < end[:, None])
    return (inside / (end - start)[:, None]).astype(dtype)


def _adaptive_shape(x, *, output_size=1):  # type: ignore[no-untyped-def]
    return (x[0], x[1], *_adaptive_size(x, output_size)), "f"


@defop(
    "adaptive_avg_pool2d",
    _adaptive_shape,
    onnx=_adaptive_onnx,
    summary="The mean over torch's adaptive bins, giving output_size (height, width) whatever the input size.",
)
def adaptive_avg_pool2d(x, *, output_size=1):
    """The mean over torch's adaptive bins, giving output_size (height, width) whatever the input
    size; output_size=1 is global average pooling to (batch, channels, 1, 1)."""
    oh, ow = _adaptive_size(x.shape, output_size)
    assert oh is not None and ow is not None
    if (oh, ow) == (1, 1):
        return x.mean(axis=(2, 3), keepdims=True)
    return _bins(x.shape[2], oh, x.dtype) @ x @ _bins(x.shape[3], ow, x.dtype).T


@adaptive_avg_pool2d.vjp
def _(ctx, gy):
    return (ctx.g.adaptive_avg_pool2d_grad(gy, ctx.inputs[0], **ctx.attrs),)


def _adaptive_grad_shape(v, like, *, output_size=1):  # type: ignore[no-untyped-def]
    _adaptive_size(like, output_size)
    return like, "f"


@defop("adaptive_avg_pool2d_grad", _adaptive_grad_shape, shape_only=(1,), public=False, onnx=_adaptive_grad_onnx)
def adaptive_avg_pool2d_grad(v, like_shape, *, output_size=1):
    """adaptive_avg_pool2d's transpose: each output spread back over its bin, over the bin's size."""
    oh, ow = _adaptive_size(like_shape, output_size)
    assert oh is not None and ow is not None
    h, w = like_shape[2:]
    if (oh, ow) == (1, 1):
        out = np.empty(like_shape, dtype=v.dtype)
        out[...] = v / v.dtype.type(h * w)
        return out
    return _bins(h, oh, v.dtype).T @ v @ _bins(w, ow, v.dtype)


@adaptive_avg_pool2d_grad.vjp
def _(ctx, gy):
    return ctx.g.adaptive_avg_pool2d(gy, **ctx.attrs), None


# ---------------------------------------------------------------- nearest upsampling


def _upsample_shape(x, *, scale_factor):  # type: ignore[no-untyped-def]
    _image("upsample_nearest2d", x)
    s = _pair("upsample_nearest2d", "scale_factor", scale_factor, 1)
    return (x[0], x[1], *(n if n is None else n * f for n, f in zip(x[2:], s))), "f"


@defop(
    "upsample_nearest2d",
    _upsample_shape,
    onnx=_upsample_onnx,
    summary="Each pixel repeated scale_factor times along height and width, as torch's nearest interpolation.",
)
def upsample_nearest2d(x, *, scale_factor):
    """Each pixel repeated scale_factor times along height and width (an integer or a pair), as
    torch's interpolate(mode='nearest')."""
    sh, sw = _pair("upsample_nearest2d", "scale_factor", scale_factor, 1)
    n, c, h, w = x.shape
    return np.broadcast_to(x[:, :, :, None, :, None], (n, c, h, sh, w, sw)).reshape(n, c, h * sh, w * sw)


@upsample_nearest2d.vjp
def _(ctx, gy):
    return (ctx.g.upsample_nearest2d_grad(gy, **ctx.attrs),)


def _upsample_grad_shape(v, *, scale_factor):  # type: ignore[no-untyped-def]
    _image("upsample_nearest2d", v)
    s = _pair("upsample_nearest2d", "scale_factor", scale_factor, 1)
    for n, f in zip(v[2:], s):
        if n is not None and n % f:
            raise ShapeRuleError(f"upsample_nearest2d: size {n} is not a multiple of the scale factor {f}")
    return (v[0], v[1], *(n if n is None else n // f for n, f in zip(v[2:], s))), "f"


@defop("upsample_nearest2d_grad", _upsample_grad_shape, public=False, onnx=_upsample_grad_onnx)
def upsample_nearest2d_grad(v, *, scale_factor):
    """The sum of each scale_factor block (upsample_nearest2d's transpose)."""
    sh, sw = _pair("upsample_nearest2d", "scale_factor", scale_factor, 1)
    n, c, h, w = v.shape
    blocks = v.reshape(n, c, h // sh, sh, w // sw, sw)
    # one add per position in the block: numpy's sum over the two small strided axes is far slower
    out = blocks[:, :, :, 0, :, 0].copy()
    for i in range(sh):
        for j in range(sw):
            if i or j:
                out += blocks[:, :, :, i, :, j]
    return out


@upsample_nearest2d_grad.vjp
def _(ctx, gy):
    return (ctx.g.upsample_nearest2d(gy, **ctx.attrs),)


# ---------------------------------------------------------------- flatten


@defcomposite(
    "flatten", summary="x with the dimensions start_dim..end_dim merged into one (by default all but the batch)."
)
def flatten(g, x, *, start_dim=1, end_dim=-1):
    """x with the dimensions start_dim..end_dim merged into one (torch.flatten(x, 1) by default:
    everything but the batch)."""
    shape = x.shape
    try:
        a, b = norm_axis(start_dim, len(shape)), norm_axis(end_dim, len(shape))
    except ShapeRuleError as e:
        raise ShapeError(f"flatten: {e}") from None
    if a > b:
        raise ShapeError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim} for {fmt(shape)}")
    merged = shape[a : b + 1]
    size = -1 if None in merged else int(np.prod(merged, dtype=np.int64))
    new = [-1 if d is None else d for d in shape[:a]] + [size] + [-1 if d is None else d for d in shape[b + 1 :]]
    if new.count(-1) > 1:
        raise ShapeError(f"flatten: {fmt(shape)} has more than one unknown size")
    return g.reshape(x, shape=tuple(new))
