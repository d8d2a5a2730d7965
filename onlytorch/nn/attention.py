"""Transformer layers: multi-head self-attention (torch.nn.MultiheadAttention with batch_first=True,
its parameters in torch's layout) and a learned positional embedding, as modules and as layer-list
items (``{attention: {heads: 4}}``, ``{positional: {max_len: 64}}``) with the static shape rules
validate reports at the layer's position.

Parameter names and torch's: ``in_proj_weight`` (3E, E), ``in_proj_bias`` (3E,) are torch's own;
``out_proj_weight`` (E, E) and ``out_proj_bias`` (E,) are torch's ``out_proj.weight`` and
``out_proj.bias`` (a dot would split the module path). ``positional``'s ``weight`` (max_len, E) is
torch.nn.Embedding(max_len, E)'s, applied to positions 0 .. L - 1."""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from ..errors import ShapeError
from ..graph import Graph
from ..node import NodeId
from ..ops.shapes import fmt
from .layers import LayerOptions, layer
from .modules import Module


class MultiheadAttention(Module):
    """Self-attention over (N, L, E) inputs: q, k, v = x W_in^T + b_in split in three, each split
    into ``heads`` heads of E / heads, scaled dot-product attention per head (``causal``: position
    i sees 0..i), the heads joined and projected by W_out. torch's init: in_proj_weight
    xavier-uniform, out_proj_weight U(±1/sqrt(E)), both biases zero."""

    def __init__(
        self, g: Graph, width: int, heads: int, causal: bool = False, bias: bool = True, name: str | None = None
    ) -> None:
        super().__init__(g, name, "attention")
        if heads < 1 or width % heads:
            raise ShapeError(f"attention: {heads} heads do not divide the width {width}")
        self.width, self.heads, self.causal = width, heads, causal
        self.in_proj_weight = self._param("in_proj_weight", (3 * width, width), "xavier_uniform")
        self.in_proj_bias = self._param("in_proj_bias", (3 * width,), "zeros") if bias else None
        self.out_proj_weight = self._param("out_proj_weight", (width, width), "lecun_uniform", fan_in=width)
        self.out_proj_bias = self._param("out_proj_bias", (width,), "zeros") if bias else None

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        g, e, h = self.g, self.width, self.heads
        n, length = _sequence_shape(tuple(x.shape), e, h)
        batch = -1 if n is None else n
        # projections on (N * L, E) rows: one matrix product, and one for each weight gradient
        # (on (N, L, E) the weight's gradient would be N products summed)
        qkv = g.matmul_nt(g.reshape(x, shape=(-1, e)), self.in_proj_weight)
        if self.in_proj_bias is not None:
            qkv = qkv + self.in_proj_bias
        qkv = g.reshape(qkv, shape=(batch, length, 3 * e))

        def split(k: int) -> NodeId:  # (N, L, E) part k -> (N, heads, L, E / heads)
            part = g.reshape(qkv[..., k * e : (k + 1) * e], shape=(batch, length, h, e // h))
            return g.transpose(part, axes=(0, 2, 1, 3))

        y = g.attention(split(0), split(1), split(2), causal=self.causal)
        y = g.reshape(g.transpose(y, axes=(0, 2, 1, 3)), shape=(-1, e))
        out = g.matmul_nt(y, self.out_proj_weight)
        if self.out_proj_bias is not None:
            out = out + self.out_proj_bias
        return g.reshape(out, shape=(batch, length, e))


class PositionalEmbedding(Module):
    """x + P[0:L] for x (N, L, E): a learned row per position, P (max_len, E) initialised N(0, 1)
    as torch.nn.Embedding."""

    def __init__(self, g: Graph, max_len: int, width: int, name: str | None = None) -> None:
        super().__init__(g, name, "positional")
        self.max_len = max_len
        self.weight = self._param("weight", (max_len, width), "normal")

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        length = _positions(tuple(x.shape), self.max_len)
        return x + self.weight[0:length]


def _sequence_shape(shape: tuple[int | None, ...], width: int, heads: int) -> tuple[int | None, int]:
    """(N, L) of a (N, L, E) input self-attention can take, else ShapeError."""
    if len(shape) != 3 or shape[1] is None:
        raise ShapeError(f"attention takes (batch, length, width) inputs with a fixed length, got {fmt(shape)}")
    if shape[2] != width:
        raise ShapeError(f"attention of width {width} got an input of shape {fmt(shape)}")
    if width % heads:
        raise ShapeError(
            f"attention: {heads} heads do not divide the width {width}; use a number of heads that divides "
            f"it (e.g. {max(d for d in range(1, heads + 1) if width % d == 0)}) or a width divisible by {heads}"
        )
    return shape[0], shape[1]


def _positions(shape: tuple[int | None, ...], max_len: int) -> int:
    if len(shape) != 3 or shape[1] is None:
        raise ShapeError(f"positional takes (batch, length, width) inputs with a fixed length, got {fmt(shape)}")
    if shape[1] > max_len:
        raise ShapeError(f"positional: the sequence has {shape[1]} positions but max_len is {max_len}")
    return shape[1]


# ---------------------------------------------------------------- layer declarations


def _positive(v: Any) -> Any:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise ValueError(f"must be a positive integer, got {v!r}")
    return v


class AttentionOptions(LayerOptions):
    heads: int = Field(description="the number of heads (it must divide the width)")
    causal: bool = Field(False, description="position i attends to positions 0..i only")
    bias: bool = Field(True, description="biases in the input and output projections")

    @field_validator("heads", mode="before")
    @classmethod
    def _heads(cls, v: Any) -> Any:
        return _positive(v)


class PositionalOptions(LayerOptions):
    max_len: int = Field(description="the longest sequence it takes (one learned row per position)")

    @field_validator("max_len", mode="before")
    @classmethod
    def _max_len(cls, v: Any) -> Any:
        return _positive(v)


def _attention_shape(in_shape: tuple[int | None, ...], o: AttentionOptions) -> tuple[int | None, ...]:
    width = in_shape[-1] if in_shape else None
    if width is None:
        raise ShapeError(f"attention needs a fixed width, got {fmt(in_shape)}")
    _sequence_shape(in_shape, width, o.heads)
    return in_shape


def _positional_shape(in_shape: tuple[int | None, ...], o: PositionalOptions) -> tuple[int | None, ...]:
    _positions(in_shape, o.max_len)
    return in_shape


@layer(
    "attention",
    AttentionOptions,
    short="heads",
    doc="multi-head self-attention over (N, L, E), as torch.nn.MultiheadAttention(batch_first=True)",
    forms=("{attention: 4}", "{attention: {heads: 4, causal: true}}"),
    params=lambda d, o: {
        "in_proj_weight": (3 * d, d),
        "out_proj_weight": (d, d),
        **({"in_proj_bias": (3 * d,), "out_proj_bias": (d,)} if o.bias else {}),
    },
    shape=_attention_shape,
)
def _attention(g: Graph, x: NodeId, o: AttentionOptions, name: str) -> MultiheadAttention:
    return MultiheadAttention(g, x.shape[-1], o.heads, causal=o.causal, bias=o.bias, name=name)


@layer(
    "positional",
    PositionalOptions,
    short="max_len",
    doc="x + a learned embedding of each position 0 .. L - 1, over (N, L, E)",
    forms=("{positional: 64}", "{positional: {max_len: 64}}"),
    params=lambda d, o: {"weight": (o.max_len, d)},
    shape=_positional_shape,
)
def _positional(g: Graph, x: NodeId, o: PositionalOptions, name: str) -> PositionalEmbedding:
    return PositionalEmbedding(g, o.max_len, x.shape[-1], name=name)
