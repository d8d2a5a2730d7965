"""Layer ops: dropout (train mode only), batch norm (batch statistics and running statistics in
train mode, running statistics in eval mode, as torch; over (N, C), (N, C, L) and (N, C, H, W)),
group norm, layer norm, and embedding lookup."""

from __future__ import annotations

import numpy as np

from ..errors import GraphError
from ..export.builder import Builder, OnnxNode, onnx_rule
from .registry import ShapeRuleError, defcomposite, defop
from .shapes import axes_tuple, broadcast, fmt

# ---------------------------------------------------------------- dropout


@onnx_rule("ones shaped like x (eval mode: dropout is the identity)")
def _dropout_mask_onnx(b, n):
    one = np.ones((1,), dtype=n.dtype)
    return b.op("ConstantOfShape", b.op("Shape", n.inputs[0]), out=n.out, value=one)


@defop(
    "dropout_mask",
    lambda x, *, p: (x, "f"),
    nondiff=(0,),
    random=True,
    mode_dependent=True,
    public=False,
    onnx=_dropout_mask_onnx,
)
def dropout_mask(ctx, x, *, p):
    """In train mode a fresh mask of 0 and 1/(1-p) shaped like x; in eval mode ones."""
    if not ctx.train or p == 0:
        return np.broadcast_to(np.ones((), dtype=x.dtype), x.shape)
    if p >= 1:
        return np.zeros(x.shape, dtype=x.dtype)
    keep = ctx.rng.random(x.shape) >= p
    return keep.astype(x.dtype) * (1.0 / (1.0 - p))


@defcomposite("dropout", summary="Zero each element with probability p and scale the rest by 1/(1-p) in train mode.")
def dropout(g, x, *, p=0.5):
    """Zero each element with probability p and scale the rest by 1/(1-p) in train mode; the
    identity in eval mode. The mask is drawn again whenever x changes."""
    if not 0.0 <= p <= 1.0:
        raise GraphError(f"dropout probability must lie in [0, 1], got {p}")
    return x * g.dropout_mask(x, p=p)


# ---------------------------------------------------------------- batch norm


def _batch_norm_shape(x, gamma, beta, running_mean, running_var, *, momentum, eps):
    if len(x) < 2:
        raise ShapeRuleError(
            f"batch_norm takes (batch, features), (batch, channels, length) or (batch, channels, height, width) "
            f"inputs, got {fmt(x)}"
        )
    features = (x[1],)
    for what, s in (("gamma", gamma), ("beta", beta), ("running_mean", running_mean), ("running_var", running_var)):
        if tuple(s) != features:
            raise ShapeRuleError(f"batch_norm: {what} must have shape {fmt(features)}, got {fmt(s)}")
    return x, "f"


@onnx_rule("BatchNormalization (inference)")
def _batch_norm_onnx(b: Builder, n: OnnxNode) -> str:
    """Eval mode: the running statistics (states, exported as initializers); ONNX's
    BatchNormalization takes (N, C) as well as (N, C, ...) inputs."""
    return b.op("BatchNormalization", *n.inputs, out=n.out, epsilon=float(n.attrs["eps"]))


@defop(
    "batch_norm",
    _batch_norm_shape,
    nondiff=(3, 4),
    mode_dependent=True,
    writes=(3, 4),
    onnx=_batch_norm_onnx,
    summary="Normalise features (axis 1) over the batch and positions, as torch's BatchNorm1d/2d.",
)
def batch_norm(ctx, x, gamma, beta, running_mean, running_var, *, momentum=0.1, eps=1e-5):
    """Normalise features (axis 1) over the batch, and over the positions of (N, C, L) or
    (N, C, H, W) inputs, as torch's BatchNorm1d/2d. Train mode: batch statistics, and the running
    statistics (states) move towards them by momentum (unbiased variance, as torch). Eval mode:
    the running statistics."""
    if x.ndim > 2:
        return _batch_norm_nd(ctx, x, gamma, beta, running_mean, running_var, momentum, eps)
    if ctx.train:
        n = x.shape[0]
        if n < 2:
            raise GraphError(
                f"{ctx.node.describe()} in train mode needs more than one sample per batch, got {n}; "
                "use larger batches, or eval mode (running statistics)"
            )
        mean = x.mean(axis=0)
        var = x.var(axis=0)
        rm_node, rv_node = ctx.node.inputs[3], ctx.node.inputs[4]
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * var * (n / (n - 1))
        ctx.graph.runtime.mark_changed(rm_node)
        ctx.graph.runtime.mark_changed(rv_node)
    else:
        mean, var = running_mean, running_var
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def _batch_norm_nd(ctx, x, gamma, beta, running_mean, running_var, momentum, eps):
    """batch_norm over (N, C, ...): the statistics of each channel over the batch and positions."""
    axes = (0, *range(2, x.ndim))
    per_channel = (-1,) + (1,) * (x.ndim - 2)
    if ctx.train:
        n = x.size // x.shape[1]
        if n < 2:
            raise GraphError(
                f"{ctx.node.describe()} in train mode needs more than one value per channel, got {n}; "
                "use larger batches, or eval mode (running statistics)"
            )
        mean = x.mean(axis=axes)
        var = x.var(axis=axes)
        running_mean *= 1.0 - momentum
        running_mean += momentum * mean
        running_var *= 1.0 - momentum
        running_var += momentum * var * (n / (n - 1))
        ctx.graph.runtime.mark_changed(ctx.node.inputs[3])
        ctx.graph.runtime.mark_changed(ctx.node.inputs[4])
    else:
        mean, var = running_mean, running_var
    scale = gamma / np.sqrt(var + eps)
    return (x - mean.reshape(per_channel)) * scale.reshape(per_channel) + beta.reshape(per_channel)


@batch_norm.vjp
def _(ctx, gy):
    if len(ctx.inputs[0].shape) > 2:
        return _batch_norm_nd_vjp(ctx, gy)
    g = ctx.g
    x, gamma, _beta, running_mean, running_var = ctx.inputs
    eps = ctx.attrs["eps"]
    if ctx.train:
        mu = g.mean(x, axis=0, keepdims=True)
        xc = x - mu
        inv = 1.0 / g.sqrt(g.mean(xc * xc, axis=0, keepdims=True) + eps)
        xhat = xc * inv
        gxhat = gy * gamma
        gx = None
        if ctx.needs[0]:
            gx = inv * (
                gxhat - g.mean(gxhat, axis=0, keepdims=True) - xhat * g.mean(gxhat * xhat, axis=0, keepdims=True)
            )
    else:
        inv = 1.0 / g.sqrt(running_var + eps)
        xhat = (x - running_mean) * inv
        gx = gy * (gamma * inv) if ctx.needs[0] else None
    ggamma = g.sum(gy * xhat, axis=0) if ctx.needs[1] else None
    gbeta = g.sum(gy, axis=0) if ctx.needs[2] else None
    return gx, ggamma, gbeta, None, None


def _batch_norm_nd_vjp(ctx, gy):
    g = ctx.g
    x, gamma, _beta, running_mean, running_var = ctx.inputs
    eps = ctx.attrs["eps"]
    ndim = len(x.shape)
    axes = (0, *range(2, ndim))
    per_channel = (-1,) + (1,) * (ndim - 2)
    gamma_c = g.reshape(gamma, shape=per_channel)
    if ctx.train:
        mu = g.mean(x, axis=axes, keepdims=True)
        xc = x - mu
        inv = 1.0 / g.sqrt(g.mean(xc * xc, axis=axes, keepdims=True) + eps)
        xhat = xc * inv
        gxhat = gy * gamma_c
        gx = None
        if ctx.needs[0]:
            gx = inv * (
                gxhat - g.mean(gxhat, axis=axes, keepdims=True) - xhat * g.mean(gxhat * xhat, axis=axes, keepdims=True)
            )
    else:
        inv = 1.0 / g.sqrt(g.reshape(running_var, shape=per_channel) + eps)
        xhat = (x - g.reshape(running_mean, shape=per_channel)) * inv
        gx = gy * (gamma_c * inv) if ctx.needs[0] else None
    ggamma = g.sum(gy * xhat, axis=axes) if ctx.needs[1] else None
    gbeta = g.sum(gy, axis=axes) if ctx.needs[2] else None
    return gx, ggamma, gbeta, None, None


# ---------------------------------------------------------------- group norm


@defcomposite(
    "group_norm",
    summary="Normalise each sample's groups of channels, then scale and shift each channel (torch's group_norm).",
)
def group_norm(g, x, weight, bias, *, num_groups, eps=1e-5):
    """Normalise (N, C, ...) inputs over each group of C / num_groups channels and all positions,
    per sample, then scale and shift each channel by weight and bias (torch's group_norm)."""
    from ..errors import ShapeError

    shape = x.shape
    if len(shape) < 2 or shape[1] is None:
        raise ShapeError(f"group_norm takes (batch, channels, ...) inputs with a fixed channel count, got {fmt(shape)}")
    c = shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) or num_groups < 1:
        raise ShapeError(f"group_norm: num_groups must be a positive integer, got {num_groups!r}")
    if c % num_groups:
        raise ShapeError(f"group_norm: num_groups {num_groups} does not divide the {c} channels of {fmt(shape)}")
    for what, p in (("weight", weight), ("bias", bias)):
        if tuple(p.shape) != (c,):
            raise ShapeError(f"group_norm: {what} must have shape {fmt((c,))}, got {fmt(p.shape)}")
    if None in shape[2:]:
        raise ShapeError(f"group_norm needs fixed sizes after the batch, got {fmt(shape)}")
    batch = -1 if shape[0] is None else shape[0]
    per_group = (c // num_groups) * int(np.prod(shape[2:], dtype=np.int64))
    xg = g.reshape(x, shape=(batch, int(num_groups), per_group))
    xc = xg - g.mean(xg, axis=2, keepdims=True)
    var = g.mean(xc * xc, axis=2, keepdims=True)
    y = g.reshape(xc / g.sqrt(var + eps), shape=(batch, *shape[1:]))
    per_channel = (c,) + (1,) * (len(shape) - 2)
    return y * g.reshape(weight, shape=per_channel) + g.reshape(bias, shape=per_channel)


# ---------------------------------------------------------------- layer norm


@defcomposite(
    "layer_norm", summary="Normalise over the last axis (or trailing axes), then scale by gamma and shift by beta."
)
def layer_norm(g, x, gamma, beta, *, axis=-1, eps=1e-5):
    """Normalise over axis (the last by default; a tuple of trailing axes as torch's
    normalized_shape), then scale by gamma and shift by beta."""
    try:
        axes = axes_tuple(axis, len(x.shape))
        broadcast(x.shape, gamma.shape)
        broadcast(x.shape, beta.shape)
    except ShapeRuleError as e:
        from ..errors import ShapeError

        raise ShapeError(str(e)) from None
    mu = g.mean(x, axis=axes, keepdims=True)
    xc = x - mu
    var = g.mean(xc * xc, axis=axes, keepdims=True)
    return xc / g.sqrt(var + eps) * gamma + beta


# ---------------------------------------------------------------- embedding


def _embedding_shape(idx, weight):
    if len(weight) != 2:
        raise ShapeRuleError(f"embedding weight must be (num_embeddings, dim), got {fmt(weight)}")
    return tuple(idx) + (weight[1],), "f"


@onnx_rule("Gather")
def _embedding_onnx(b: Builder, n: OnnxNode) -> str:
    """Gather of the table's rows (axis 0) at the indices: (idx, weight) in the op, (data,
    indices) in ONNX."""
    idx, weight = n.inputs
    return b.op("Gather", weight, idx, out=n.out, axis=0)


@defop("embedding", _embedding_shape, nondiff=(0,), onnx=_embedding_onnx)
def embedding(idx, weight):
    """Rows of weight at the integer positions idx (a lookup table)."""
    idx = np.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise ValueError("embedding needs integer indices")
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise ValueError(f"embedding indices must lie in [0, {weight.shape[0]}), got {idx.min()}..{idx.max()}")
    return weight[idx]


@embedding.vjp
def _(ctx, gy):
    idx, weight = ctx.inputs
    return None, ctx.g.scatter_rows(gy, weight, idx)


@onnx_rule("ScatterND (reduction add)")
def _scatter_rows_onnx(b: Builder, n: OnnxNode) -> str:
    """Zeros of the table's shape with the rows of v added at idx: ScatterND over the first axis,
    repeated indices summed (embedding's derivative in its weight)."""
    v, _, idx = n.inputs
    table = [d for d in n.shape if d is not None]  # the weight's shape: fixed
    zeros = b.op("ConstantOfShape", b.ints(table), value=np.zeros((1,), dtype=b.float_dtype))
    rows = b.op("Unsqueeze", idx, b.ints((-1,)))
    return b.op("ScatterND", zeros, rows, v, out=n.out, reduction="add")


@defop(
    "scatter_rows",
    lambda v, like, idx: (like, "f"),
    shape_only=(1,),
    nondiff=(2,),
    public=False,
    onnx=_scatter_rows_onnx,
)
def scatter_rows(v, like_shape, idx):
    """Zeros shaped like_shape with the rows of v added at the integer positions idx."""
    out = np.zeros(like_shape, dtype=v.dtype)
    np.add.at(out, np.asarray(idx).reshape(-1), v.reshape(-1, like_shape[-1]))
    return out


@scatter_rows.vjp
def _(ctx, gy):
    return ctx.g.embedding(ctx.inputs[2], gy), None, None
