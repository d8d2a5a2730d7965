"""Ops that move elements without arithmetic: reshape, transpose, concat, stack, index/slice,
take_along (gather), one_hot, argmax, and their internal gradient twins."""

from __future__ import annotations

import numpy as np

from ..export.builder import onnx_rule
from ..export.rules import cast_to
from .registry import ShapeRuleError, defop
from .shapes import fmt, norm_axis

# ---------------------------------------------------------------- ONNX mappings (onnx=)

_INT64_MAX, _INT64_MIN = np.iinfo(np.int64).max, np.iinfo(np.int64).min


@onnx_rule("Reshape")
def _reshape_onnx(b, n):
    return b.op("Reshape", n.inputs[0], b.ints(n.attrs["shape"]), out=n.out)


@onnx_rule("Transpose")
def _transpose_onnx(b, n):
    return b.op("Transpose", n.inputs[0], out=n.out, perm=list(_perm(n.attrs["axes"], len(n.input_shapes[0]))))


@onnx_rule("Concat")
def _concat_onnx(b, n):
    xs = [cast_to(b, x, d, n.dtype) for x, d in zip(n.inputs, n.input_dtypes)]
    return b.op("Concat", *xs, out=n.out, axis=norm_axis(n.attrs["axis"], len(n.shape)))


@onnx_rule("Unsqueeze and Concat")
def _stack_onnx(b, n):
    axis = b.ints([norm_axis(n.attrs["axis"], len(n.shape))])
    xs = [b.op("Unsqueeze", cast_to(b, x, d, n.dtype), axis) for x, d in zip(n.inputs, n.input_dtypes)]
    return b.op("Concat", *xs, out=n.out, axis=norm_axis(n.attrs["axis"], len(n.shape)))


def _index_chain(b, x, key, ndim):
    """x[key] as ONNX nodes: one Slice for the slices and integers, Squeeze for the integers,
    Unsqueeze for None, Gather for an index list (kept in place, as the op does)."""
    split = _list_split(key, ndim)
    key = _key_tuple(key) if split is None else split[0]
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    full = []
    for k in key:
        full += [slice(None)] * (ndim - n_real) if k is Ellipsis else [k]
    full += [slice(None)] * (ndim - sum(1 for k in full if k is not None))
    starts, ends, axes, steps, squeeze, unsqueeze = [], [], [], [], [], []
    d = o = 0
    for k in full:
        if k is None:
            unsqueeze.append(o)
            o += 1
            continue
        if isinstance(k, (int, np.integer)):
            k = int(k)
            starts.append(k), ends.append(_INT64_MAX if k == -1 else k + 1), axes.append(d), steps.append(1)
            squeeze.append(d)
        elif k != slice(None):
            step = 1 if k.step is None else int(k.step)
            starts.append(k.start if k.start is not None else (0 if step > 0 else _INT64_MAX))
            ends.append(k.stop if k.stop is not None else (_INT64_MAX if step > 0 else _INT64_MIN))
            axes.append(d), steps.append(step)
            o += 1
        else:
            o += 1
        d += 1
    if axes:
        x = b.op("Slice", x, b.ints(starts), b.ints(ends), b.ints(axes), b.ints(steps))
    if squeeze:
        x = b.op("Squeeze", x, b.ints(squeeze))
    if unsqueeze:
        x = b.op("Unsqueeze", x, b.ints(unsqueeze))
    if split is not None:
        x = b.op("Gather", x, b.const(np.asarray(split[1], dtype=np.int64)), axis=int(split[2]))
    return x


@onnx_rule("Slice, Squeeze, Unsqueeze (and Gather for an index list)")
def _index_onnx(b, n):
    x = _index_chain(b, n.inputs[0], n.attrs["key"], len(n.input_shapes[0]))
    return b.op("Identity", x, out=n.out) if x == n.inputs[0] else b.finish(x, n.out)


def _zeros(b, like, dtype):
    return b.op("ConstantOfShape", b.op("Shape", like), value=np.zeros((1,), dtype=dtype))


@onnx_rule("ScatterElements (add) of v at x[key]'s positions into zeros")
def _index_grad_onnx(b, n):
    v, like = n.inputs
    shape = b.op("Shape", like)
    count = b.op("ReduceProd", shape, keepdims=0)
    positions = b.op("Reshape", b.op("Range", b.const(np.asarray(0)), count, b.const(np.asarray(1))), shape)
    picked = b.op("Reshape", _index_chain(b, positions, n.attrs["key"], len(n.input_shapes[1])), b.ints([-1]))
    flat = b.op("Reshape", _zeros(b, like, n.dtype), b.ints([-1]))
    values = b.op("Reshape", cast_to(b, v, n.input_dtypes[0], n.dtype), b.ints([-1]))
    out = b.op("ScatterElements", flat, picked, values, axis=0, reduction="add")
    return b.op("Reshape", out, shape, out=n.out)


@onnx_rule("ScatterElements (add) into zeros")
def _put_along_onnx(b, n):
    v, like, idx = n.inputs
    axis = norm_axis(n.attrs["axis"], len(n.input_shapes[1]))
    zeros = _zeros(b, like, n.dtype)
    idx = cast_to(b, idx, n.input_dtypes[2], np.int64)
    v = cast_to(b, v, n.input_dtypes[0], n.dtype)
    return b.op("ScatterElements", zeros, idx, v, out=n.out, axis=axis, reduction="add")


@onnx_rule("ConstantOfShape")
def _zeros_like_onnx(b, n):
    return b.finish(_zeros(b, n.inputs[0], n.dtype), n.out)


@onnx_rule("Reshape to the input's shape")
def _reshape_like_onnx(b, n):
    return b.op("Reshape", n.inputs[0], b.op("Shape", n.inputs[1]), out=n.out)


@onnx_rule("Slice between the blocks' sizes")
def _slice_like_onnx(b, n):
    v, *likes = n.inputs
    ax = norm_axis(n.attrs["axis"], len(n.input_shapes[0]))
    part = int(n.attrs["part"])
    sizes = [b.op("Gather", b.op("Shape", like), b.ints([ax]), axis=0) for like in likes[: part + 1]]
    start = b.ints([0])
    for size in sizes[:-1]:
        start = b.op("Add", start, size)
    end = b.op("Add", start, sizes[-1])
    return b.op("Slice", v, start, end, b.ints([ax]), out=n.out)


@onnx_rule("GatherElements")
def _take_along_onnx(b, n):
    x, idx = n.inputs
    xs, ids = n.input_shapes
    axis = norm_axis(n.attrs["axis"], len(xs))
    # as the op (torch.gather): off the axis, idx may be shorter than x and reads its leading part
    cut = [d for d in range(len(xs)) if d != axis and xs[d] is not None and ids[d] is not None and ids[d] < xs[d]]
    if cut:
        x = b.op("Slice", x, b.ints([0] * len(cut)), b.ints([ids[d] for d in cut]), b.ints(cut))
    return b.op("GatherElements", x, cast_to(b, idx, n.input_dtypes[1], np.int64), out=n.out, axis=axis)


@onnx_rule("OneHot")
def _one_hot_onnx(b, n):
    idx = cast_to(b, n.inputs[0], n.input_dtypes[0], np.int64)
    depth = b.const(np.asarray(int(n.attrs["num_classes"]), dtype=np.int64), "depth")
    values = b.const(np.asarray([0.0, 1.0], dtype=n.dtype), "off_on")
    return b.op("OneHot", idx, depth, values, out=n.out, axis=-1)


@onnx_rule("ArgMax")
def _argmax_onnx(b, n):
    x = n.inputs[0]
    axis = norm_axis(n.attrs["axis"], len(n.input_shapes[0]))
    return b.op("ArgMax", x, out=n.out, axis=axis, keepdims=0, select_last_index=0)


# ---------------------------------------------------------------- reshape / transpose


def _reshape_shape(x, *, shape):
    shape = tuple(shape)
    if sum(1 for d in shape if d == -1) > 1:
        raise ShapeRuleError(f"reshape to {shape}: at most one -1")
    if any(d is None or (d < 0 and d != -1) for d in shape):
        raise ShapeRuleError(f"reshape to {shape}: sizes must be positive or -1")
    if None in x:
        return tuple(None if d == -1 else d for d in shape), "f"
    total = int(np.prod(x)) if x else 1
    known = int(np.prod([d for d in shape if d != -1])) if shape else 1
    if -1 in shape:
        if known == 0 or total % known:
            raise ShapeRuleError(f"cannot reshape {fmt(x)} to {shape}")
        return tuple(total // known if d == -1 else d for d in shape), "f"
    if known != total:
        raise ShapeRuleError(f"cannot reshape {fmt(x)} ({total} elements) to {fmt(shape)} ({known})")
    return shape, "f"


@defop("reshape", _reshape_shape, keep_dtype=True, onnx=_reshape_onnx)
def reshape(x, *, shape):
    """x with a new shape (one size may be -1)."""
    return np.reshape(x, shape)


@reshape.vjp
def _(ctx, gy):
    return (ctx.g.reshape_like(gy, ctx.inputs[0]),)


@defop("reshape_like", lambda x, like: (like, "f"), shape_only=(1,), public=False, onnx=_reshape_like_onnx)
def reshape_like(v, like_shape):
    """v reshaped to like_shape."""
    return np.reshape(v, like_shape)


@reshape_like.vjp
def _(ctx, gy):
    return ctx.g.reshape_like(gy, ctx.inputs[0]), None


def _perm(axes, ndim):
    if axes is None:
        return tuple(reversed(range(ndim)))
    axes = tuple(norm_axis(a, ndim) for a in axes)
    if sorted(axes) != list(range(ndim)):
        raise ShapeRuleError(f"transpose axes {axes} are not a permutation of {ndim} dimensions")
    return axes


def _transpose_shape(x, *, axes=None):
    return tuple(x[a] for a in _perm(axes, len(x))), "f"


@defop("transpose", _transpose_shape, keep_dtype=True, onnx=_transpose_onnx)
def transpose(x, *, axes=None):
    """x with its axes permuted (reversed when axes is None)."""
    return np.transpose(x, axes)


@transpose.vjp
def _(ctx, gy):
    perm = _perm(ctx.attrs["axes"], len(ctx.inputs[0].shape))
    return (ctx.g.transpose(gy, axes=tuple(int(i) for i in np.argsort(perm))),)


# ---------------------------------------------------------------- concat / stack


def _concat_shape(*shapes, axis=0):
    if not shapes:
        raise ShapeRuleError("concat needs at least one input")
    first = shapes[0]
    ax = norm_axis(axis, len(first))
    for s in shapes[1:]:
        if len(s) != len(first) or any(a != b for i, (a, b) in enumerate(zip(s, first)) if i != ax):
            raise ShapeRuleError(
                f"concat along axis {axis}: shapes {', '.join(fmt(s) for s in shapes)} differ off that axis"
            )
    sizes = [s[ax] for s in shapes]
    total = None if None in sizes else sum(sizes)  # type: ignore[arg-type]
    return first[:ax] + (total,) + first[ax + 1 :], "f"


@defop("concat", _concat_shape, aliases=("concatenate",), onnx=_concat_onnx)
def concat(*xs, axis=0):
    """The inputs joined along axis."""
    return np.concatenate(xs, axis=axis)


@concat.vjp
def _(ctx, gy):
    g = ctx.g
    axis = ctx.attrs["axis"]
    return tuple(g.slice_like(gy, *ctx.inputs, part=i, axis=axis) if need else None for i, need in enumerate(ctx.needs))


def _slice_like_shape(v, *likes, part, axis):
    return likes[part], "f"


@defop("slice_like", _slice_like_shape, shape_only="rest", public=False, onnx=_slice_like_onnx)
def slice_like(v, *like_shapes, part, axis):
    """The part-th block of v along axis, where v is the concatenation of blocks shaped like_shapes."""
    ax = axis % v.ndim
    start = sum(s[ax] for s in like_shapes[:part])
    index = [slice(None)] * v.ndim
    index[ax] = slice(start, start + like_shapes[part][ax])
    return v[tuple(index)]


@slice_like.vjp
def _(ctx, gy):
    g = ctx.g
    axis, part = ctx.attrs["axis"], ctx.attrs["part"]
    likes = ctx.inputs[1:]
    blocks = [gy if i == part else g.zeros_like(like) for i, like in enumerate(likes)]
    return (g.concat(*blocks, axis=axis),) + (None,) * len(likes)


@defop("zeros_like", lambda like: (like, "f"), shape_only=(0,), public=False, onnx=_zeros_like_onnx)
def zeros_like(like_shape):
    """Zeros shaped like the input."""
    return np.zeros(like_shape)


def _stack_shape(*shapes, axis=0):
    if not shapes:
        raise ShapeRuleError("stack needs at least one input")
    for s in shapes[1:]:
        if s != shapes[0]:
            raise ShapeRuleError(f"stack: shapes {', '.join(fmt(s) for s in shapes)} differ")
    ax = norm_axis(axis, len(shapes[0]) + 1)
    return shapes[0][:ax] + (len(shapes),) + shapes[0][ax:], "f"


@defop("stack", _stack_shape, onnx=_stack_onnx)
def stack(*xs, axis=0):
    """The inputs stacked along a new axis."""
    return np.stack(xs, axis=axis)


@stack.vjp
def _(ctx, gy):
    g = ctx.g
    ndim = len(ctx.out.shape)
    ax = norm_axis(ctx.attrs["axis"], ndim)
    return tuple(g.index(gy, key=(slice(None),) * ax + (i,)) if need else None for i, need in enumerate(ctx.needs))


# ---------------------------------------------------------------- indexing


def _key_tuple(key):
    return key if isinstance(key, tuple) else (key,)


def _is_advanced(k):
    return isinstance(k, (list, np.ndarray))


def _fmt_slice(k: slice) -> str:
    parts = ["" if v is None else str(v) for v in (k.start, k.stop, k.step)]
    return ":".join(parts)


def index_shape(x, key):
    key = _key_tuple(key)
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    if n_real > len(x):
        raise ShapeRuleError(f"index {key!r} has {n_real} entries for {len(x)} dimensions")
    if sum(1 for k in key if k is Ellipsis) > 1:
        raise ShapeRuleError("an index can have only one ...")
    if any(k is Ellipsis for k in key):
        i = next(j for j, k in enumerate(key) if k is Ellipsis)
        key = key[:i] + (slice(None),) * (len(x) - n_real) + key[i + 1 :]
    else:
        key = key + (slice(None),) * (len(x) - n_real)
    out: list[int | None] = []
    dims = iter(x)
    advanced_done = False
    for k in key:
        if k is None:
            out.append(1)
            continue
        d = next(dims)
        if isinstance(k, (int, np.integer)):
            if d is not None and not -d <= k < d:
                raise ShapeRuleError(f"index {k} is out of range for a dimension of size {d}")
        elif isinstance(k, slice):
            # checked here, not left to numpy: on the batch axis (d is None) numpy would only
            # refuse it at run time
            if k.step == 0:
                raise ShapeRuleError(f"slice {_fmt_slice(k)} has step 0; a step must be a non-zero integer")
            out.append(None if d is None else len(range(*k.indices(d))))
        elif _is_advanced(k):
            arr = np.asarray(k)
            if arr.ndim != 1 or arr.dtype.kind not in "iu":
                raise ShapeRuleError("an index list must be a flat list of integers")
            if advanced_done:
                raise ShapeRuleError("only one index list per index")
            if d is not None and len(arr) and (arr.max() >= d or arr.min() < -d):
                raise ShapeRuleError(f"index list {arr.tolist()} is out of range for a dimension of size {d}")
            advanced_done = True
            out.append(len(arr))
        else:
            raise ShapeRuleError(f"unsupported index {k!r}: use integers, slices, lists of integers, None or ...")
    return tuple(out)


@defop(
    "index",
    lambda x, *, key: (index_shape(x, key), "f"),
    aliases=("slice",),
    keep_dtype=True,
    onnx=_index_onnx,
    summary="x[key] with numpy's basic indexing and one integer list (whose axis stays in place).",
)
def index(x, *, key):
    """x[key] with numpy's basic indexing (integers, slices, None, ...) and one integer list
    (whose axis stays in place, as in torch)."""
    split = _list_split(key, x.ndim)
    if split is None:
        return x[_key_tuple(key)]
    basic, arr, axis = split
    return np.take(x[basic], arr, axis=axis)


def _list_split(key, ndim):
    """A key holding an index list as (the key with the list replaced by ``:``, the list, the axis
    of x[that key] the list then indexes), or None without a list. Indexing in these two steps
    keeps the list's axis in place, as the shape rule and torch do; numpy moves it to the front
    when an integer index stands apart from it (x[0, :, [1, 2]])."""
    key = _key_tuple(key)
    at = next((i for i, k in enumerate(key) if _is_advanced(k)), None)
    if at is None:
        return None
    n_real = sum(1 for k in key if k is not None and k is not Ellipsis)
    axis = 0
    for k in key[:at]:
        if k is Ellipsis:
            axis += ndim - n_real
        elif k is None or isinstance(k, slice):
            axis += 1
    return key[:at] + (slice(None),) + key[at + 1 :], np.asarray(key[at]), axis


@index.vjp
def _(ctx, gy):
    return (ctx.g.index_grad(gy, ctx.inputs[0], key=ctx.attrs["key"]),)


@defop("index_grad", lambda v, like, *, key: (like, "f"), shape_only=(1,), public=False, onnx=_index_grad_onnx)
def index_grad(v, like_shape, *, key):
    """Zeros shaped like_shape with v added at key (the gradient of index)."""
    out = np.zeros(like_shape, dtype=v.dtype)
    split = _list_split(key, len(like_shape))
    if split is None:
        out[_key_tuple(key)] = v
    else:
        basic, arr, axis = split
        np.add.at(out[basic], (slice(None),) * axis + (arr,), v)  # out[basic] is a view of out
    return out


@index_grad.vjp
def _(ctx, gy):
    return ctx.g.index(gy, key=ctx.attrs["key"]), None


def _take_along_shape(x, idx, *, axis=-1):
    if len(x) != len(idx):
        raise ShapeRuleError(f"take_along: indices {fmt(idx)} need as many dimensions as the values {fmt(x)}")
    ax = norm_axis(axis, len(x))
    for d, (n_x, n_idx) in enumerate(zip(x, idx)):
        if d != ax and n_x is not None and n_idx is not None and n_idx > n_x:
            raise ShapeRuleError(f"take_along: indices {fmt(idx)} are larger than the values {fmt(x)} off axis {axis}")
    return idx, "f"


@defop("take_along", _take_along_shape, nondiff=(1,), aliases=("gather",), onnx=_take_along_onnx)
def take_along(x, idx, *, axis=-1):
    """Values of x at the integer positions idx along axis (numpy take_along_axis, torch gather)."""
    # As torch.gather (and the shape rule): off the axis, idx may be shorter than x and reads its
    # leading part; numpy would broadcast a size-1 idx dimension instead.
    if idx.dtype.kind not in "iu":
        raise ValueError(f"take_along needs integer indices, got {idx.dtype} (declare the input with dtype='int64')")
    ax = axis % x.ndim
    x = x[tuple(slice(None) if d == ax else slice(0, n) for d, n in enumerate(idx.shape))]
    return np.take_along_axis(x, idx.astype(np.intp, copy=False), axis=axis)


@take_along.vjp
def _(ctx, gy):
    x, idx = ctx.inputs
    return ctx.g.put_along(gy, x, idx, axis=ctx.attrs["axis"]), None


@defop(
    "put_along",
    lambda v, like, idx, *, axis: (like, "f"),
    shape_only=(1,),
    nondiff=(2,),
    public=False,
    onnx=_put_along_onnx,
)
def put_along(v, like_shape, idx, *, axis):
    """Zeros shaped like_shape with v added at the positions idx along axis."""
    out = np.zeros(like_shape, dtype=v.dtype)
    full = list(np.indices(idx.shape, sparse=True))
    full[axis] = idx.astype(np.intp, copy=False)
    np.add.at(out, tuple(full), v)
    return out


@put_along.vjp
def _(ctx, gy):
    return ctx.g.take_along(gy, ctx.inputs[2], axis=ctx.attrs["axis"]), None, None


def _one_hot_shape(idx, *, num_classes):
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ShapeRuleError(f"one_hot: num_classes must be a positive integer, got {num_classes!r}")
    return idx + (int(num_classes),), "f"


@defop("one_hot", _one_hot_shape, nondiff=(0,), onnx=_one_hot_onnx)
def one_hot(idx, *, num_classes):
    """1.0 at each integer label's position along a new last axis of size num_classes."""
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        if not np.all(np.mod(idx, 1) == 0):
            raise ValueError("one_hot needs integer labels")
        idx = idx.astype(np.int64)
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"one_hot: labels must lie in [0, {num_classes}), got {idx.min()}..{idx.max()}")
    # (len(idx), num_classes) filled directly: np.eye(num_classes)[idx] costs num_classes**2
    out = np.zeros((*idx.shape, num_classes))
    np.put_along_axis(out, idx[..., None].astype(np.intp, copy=False), 1.0, axis=-1)
    return out


def _argmax_shape(x, *, axis=-1):
    ax = norm_axis(axis, len(x))
    return x[:ax] + x[ax + 1 :], "i"


@defop("argmax", _argmax_shape, nondiff=(0,), onnx=_argmax_onnx)
def argmax(x, *, axis=-1):
    """Integer position of the largest value along axis (no gradient)."""
    return x.argmax(axis=axis)  # np.argmax's result without its wrapper's cost (half of it here)
