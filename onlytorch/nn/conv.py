"""Convolution and group-norm layers: their modules (weights in torch's layout and with torch's
default init, so that a checkpoint maps 1:1 onto a torch state_dict) and their declarations in the
layer registry, with the static shape rules validate reports at the layer's position."""

from __future__ import annotations

import math
from typing import Any, ClassVar

from pydantic import Field, field_validator

from ..errors import ShapeError
from ..graph import Graph
from ..node import NodeId
from ..ops.conv import _conv_attrs, _window_sizes
from ..ops.shapes import ShapeRuleError, fmt
from .layers import LayerOptions, layer
from .modules import Module

IntOrList = int | list[int]
_LAYOUTS = {1: "(batch, channels, length)", 2: "(batch, channels, height, width)"}


def _pair(v: IntOrList, nd: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, list) else (v,) * nd


class Conv(Module):
    """An nd-dimensional convolution (nd 1 or 2) or a transposed 2-D convolution, as torch.nn.Conv1d,
    Conv2d and ConvTranspose2d: weight (out, in/groups, *kernel), or (in, out/groups, *kernel)
    when transposed, and bias (out,), both U(±1/sqrt(fan_in)) with torch's fan_in (the weight's
    axis 1 times the kernel's size)."""

    def __init__(
        self,
        g: Graph,
        op: str,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, ...],
        bias: bool = True,
        name: str | None = None,
        **attrs: Any,
    ) -> None:
        super().__init__(g, name, op)
        self.op, self.attrs = op, attrs
        groups = int(attrs.get("groups", 1))
        transposed = op == "conv_transpose2d"
        pair = (in_channels, out_channels // groups) if transposed else (out_channels, in_channels // groups)
        shape = (*pair, *kernel)
        fan_in = shape[1] * math.prod(kernel)  # torch's _calculate_fan_in_and_fan_out
        self.weight = self._param("weight", shape, "lecun_uniform", fan_in=fan_in)
        self.bias = self._param("bias", (out_channels,), "lecun_uniform", fan_in=fan_in) if bias else None

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return getattr(self.g, self.op)(x, self.weight, bias=self.bias, **self.attrs)


class GroupNorm(Module):
    """torch.nn.GroupNorm: normalise each group of channels of (N, C, ...) inputs per sample, then
    scale and shift each channel (weight ones, bias zeros)."""

    def __init__(self, g: Graph, num_groups: int, num_channels: int, eps: float = 1e-5, name: str | None = None):
        super().__init__(g, name, "group_norm")
        self.num_groups, self.eps = num_groups, eps
        self.weight = self._param("weight", (num_channels,), "ones")
        self.bias = self._param("bias", (num_channels,), "zeros")

    def __call__(self, x: NodeId) -> NodeId:  # type: ignore[override]
        return self.g.group_norm(x, self.weight, self.bias, num_groups=self.num_groups, eps=self.eps)


# ---------------------------------------------------------------- options


def _check_ints(v: Any, nd: int, minimum: int) -> Any:
    values = v if isinstance(v, list) else [v]
    if (
        (isinstance(v, list) and len(v) != nd)
        or not values
        or not all(isinstance(i, int) and not isinstance(i, bool) for i in values)
    ):
        raise ValueError(f"must be an integer{f' or a list of {nd}' if nd > 1 else ''}, got {v!r}")
    if any(i < minimum for i in values):
        raise ValueError(f"must be at least {minimum}, got {v!r}")
    return v


class _ConvBase(LayerOptions):
    out: int = Field(description="the number of output channels (the input's are inferred)")
    kernel: IntOrList = Field(description="the kernel size: an integer, or one per spatial axis")
    stride: IntOrList = Field(1, description="the step between windows")
    dilation: IntOrList = Field(1, description="the spacing between kernel elements")
    groups: int = Field(1, description="split input and output channels into this many groups")
    bias: bool = Field(True, description="add a bias per output channel")

    nd: ClassVar[int] = 2  # spatial axes: how many values a list option holds

    @field_validator("out", "groups", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        return _check_ints(v, 1, 1)

    @field_validator("kernel", "stride", "dilation", mode="before")
    @classmethod
    def _sizes(cls, v: Any) -> Any:
        return _check_ints(v, cls.nd, 1)


class Conv2dOptions(_ConvBase):
    padding: int | list[int] | str = Field(
        0, description="zeros added on each side: an integer, one per axis, 'same' (stride 1) or 'valid'"
    )

    @field_validator("padding", mode="before")
    @classmethod
    def _padding(cls, v: Any) -> Any:
        if isinstance(v, str):
            if v not in ("same", "valid"):
                raise ValueError(f"must be an integer, 'same' or 'valid', got {v!r}")
            return v
        return _check_ints(v, cls.nd, 0)


class Conv1dOptions(Conv2dOptions):
    nd: ClassVar[int] = 1


class ConvTranspose2dOptions(_ConvBase):
    padding: IntOrList = Field(0, description="removed from each side of the output (as torch)")
    output_padding: IntOrList = Field(0, description="added to one side of the output to reach a size")

    @field_validator("padding", "output_padding", mode="before")
    @classmethod
    def _pads(cls, v: Any) -> Any:
        return _check_ints(v, 2, 0)


class GroupNormOptions(LayerOptions):
    groups: int = Field(description="the number of channel groups (it must divide the channels)")
    eps: float = Field(1e-5, description="added to the variance for numerical stability")

    @field_validator("groups", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        return _check_ints(v, 1, 1)


# ---------------------------------------------------------------- static shape rules


def _channels(op: str, in_shape: tuple[int | None, ...], nd: int) -> int:
    """The input's channel count, or ShapeError for an input a convolution cannot take."""
    if len(in_shape) != nd + 2:
        hint = " (a flatten or linear before it?)" if len(in_shape) == 2 else ""
        raise ShapeError(
            f"{op} takes {_LAYOUTS[nd]} inputs, got {fmt(in_shape)}{hint}; "
            f"reshape flat inputs first, e.g. {{reshape: {{shape: [-1, C, {'L' if nd == 1 else 'H, W'}]}}}}"
        )
    if any(d is None for d in in_shape[1:]):
        raise ShapeError(f"{op} needs fixed channel and spatial sizes, got {fmt(in_shape)}")
    return int(in_shape[1])  # type: ignore[arg-type]


def _groups_divide(op: str, c: int, o: Any) -> None:
    for what, n in (("input", c), ("output", o.out)):
        if n % o.groups:
            raise ShapeError(f"{op}: groups={o.groups} does not divide the {n} {what} channels")


def _conv_shape(op: str, nd: int):  # type: ignore[no-untyped-def]
    def rule(in_shape: tuple[int | None, ...], o: Any) -> tuple[int | None, ...]:
        c = _channels(op, in_shape, nd)
        _groups_divide(op, c, o)
        kernel = _pair(o.kernel, nd)
        try:
            st, pads, dil = _conv_attrs((o.out, c // o.groups, *kernel), nd, o.stride, o.padding, o.dilation, o.groups)
            sizes = _window_sizes(op, in_shape[2:], kernel, st, pads, dil)
        except (ShapeRuleError, ValueError) as e:
            msg = str(e)
            raise ShapeError(msg if msg.startswith(f"{op}: ") else f"{op}: {msg}") from None
        return (in_shape[0], o.out, *sizes)

    return rule


def _transpose_shape(in_shape: tuple[int | None, ...], o: ConvTranspose2dOptions) -> tuple[int | None, ...]:
    op = "conv_transpose2d"
    c = _channels(op, in_shape, 2)
    _groups_divide(op, c, o)
    k, s, p, d, e = (_pair(v, 2) for v in (o.kernel, o.stride, o.padding, o.dilation, o.output_padding))
    if any(ei >= si and ei >= di for ei, si, di in zip(e, s, d)):
        raise ShapeError(f"{op}: output_padding {list(e)} must be smaller than the stride {list(s)} or the dilation")
    spatial = [m for m in in_shape[2:] if m is not None]  # all fixed: _channels checked
    size = tuple(
        (m - 1) * si - 2 * pi + di * (ki - 1) + ei + 1 for m, si, pi, di, ki, ei in zip(spatial, s, p, d, k, e)
    )
    if any(n < 1 for n in size):
        raise ShapeError(f"{op}: the output would be {fmt(size)} for input {fmt(in_shape)}: use less padding")
    return (in_shape[0], o.out, *size)


def _group_norm_shape(in_shape: tuple[int | None, ...], o: GroupNormOptions) -> tuple[int | None, ...]:
    if len(in_shape) < 2 or in_shape[1] is None:
        raise ShapeError(f"group_norm takes (batch, channels, ...) inputs, got {fmt(in_shape)}")
    if in_shape[1] % o.groups:
        raise ShapeError(f"group_norm: groups={o.groups} does not divide the {in_shape[1]} channels")
    return in_shape


def _conv_params(nd: int, transposed: bool = False):  # type: ignore[no-untyped-def]
    def params(c: int, o: Any) -> dict[str, tuple[int, ...]]:
        pair = (c, o.out // o.groups) if transposed else (o.out, c // o.groups)
        return {"weight": (*pair, *_pair(o.kernel, nd)), **({"bias": (o.out,)} if o.bias else {})}

    return params


# ---------------------------------------------------------------- declarations


def _conv_attrs_of(o: Any) -> dict[str, Any]:
    return {"stride": o.stride, "padding": o.padding, "dilation": o.dilation, "groups": o.groups}


@layer(
    "conv2d",
    Conv2dOptions,
    doc="2-D convolution of (N, C, H, W) inputs (torch.nn.Conv2d: weight (out, C/groups, kh, kw))",
    forms=("{conv2d: {out: 32, kernel: 3, padding: same}}",),
    params=_conv_params(2),
    shape=_conv_shape("conv2d", 2),
    axis=1,
    example="{conv2d: {out: 32, kernel: 3}}",
)
def _conv2d(g: Graph, x: NodeId, o: Conv2dOptions, name: str) -> Conv:
    return Conv(g, "conv2d", x.shape[1], o.out, _pair(o.kernel, 2), o.bias, name, **_conv_attrs_of(o))


@layer(
    "conv1d",
    Conv1dOptions,
    doc="1-D convolution of (N, C, L) inputs (torch.nn.Conv1d: weight (out, C/groups, k))",
    forms=("{conv1d: {out: 16, kernel: 5, padding: same}}",),
    params=_conv_params(1),
    shape=_conv_shape("conv1d", 1),
    axis=1,
    example="{conv1d: {out: 16, kernel: 5}}",
)
def _conv1d(g: Graph, x: NodeId, o: Conv1dOptions, name: str) -> Conv:
    return Conv(g, "conv1d", x.shape[1], o.out, _pair(o.kernel, 1), o.bias, name, **_conv_attrs_of(o))


@layer(
    "conv_transpose2d",
    ConvTranspose2dOptions,
    doc="transposed 2-D convolution, e.g. to upsample (torch.nn.ConvTranspose2d: weight (C, out/groups, kh, kw))",
    forms=("{conv_transpose2d: {out: 16, kernel: 4, stride: 2, padding: 1}}",),
    params=_conv_params(2, transposed=True),
    shape=_transpose_shape,
    axis=1,
    example="{conv_transpose2d: {out: 16, kernel: 4, stride: 2}}",
)
def _conv_transpose2d(g: Graph, x: NodeId, o: ConvTranspose2dOptions, name: str) -> Conv:
    attrs = {**_conv_attrs_of(o), "output_padding": o.output_padding}
    return Conv(g, "conv_transpose2d", x.shape[1], o.out, _pair(o.kernel, 2), o.bias, name, **attrs)


@layer(
    "group_norm",
    GroupNormOptions,
    doc="normalise groups of channels per sample (torch.nn.GroupNorm)",
    forms=("{group_norm: 8}", "{group_norm: {groups: 8, eps: 1.0e-5}}"),
    short="groups",
    params=lambda c, o: {"weight": (c,), "bias": (c,)},
    shape=_group_norm_shape,
    axis=1,
)
def _group_norm(g: Graph, x: NodeId, o: GroupNormOptions, name: str) -> GroupNorm:
    return GroupNorm(g, o.groups, x.shape[1], eps=o.eps, name=name)
