"""Static shape rules. ``None`` is the symbolic batch size: it equals itself, broadcasts with 1,
and merges with a fixed size (which the batch must then have at run time)."""

from __future__ import annotations

from collections.abc import Sequence

from .registry import Kind, Shape, ShapeRuleError


def fmt(shape: Shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def broadcast(*shapes: Shape) -> Shape:
    ndim = max((len(s) for s in shapes), default=0)
    out: list[int | None] = []
    for axis in range(-ndim, 0):
        dims = {s[axis] for s in shapes if len(s) >= -axis} - {1}
        if len(dims) > 1:
            # The batch size merges with a fixed size (they must then agree at run time).
            dims.discard(None)
        if not dims:
            out.append(1)
        elif len(dims) == 1:
            out.append(dims.pop())
        else:
            raise ShapeRuleError("shapes " + " and ".join(fmt(s) for s in shapes) + f" do not broadcast (axis {axis})")
    return tuple(out)


def float_kind(kinds: Sequence[Kind]) -> Kind:
    return "f"


def same(shape: Shape, *rest: Shape, **attrs: object) -> tuple[Shape, Kind]:
    return shape, "f"


def elementwise(*shapes: Shape, **attrs: object) -> tuple[Shape, Kind]:
    return broadcast(*shapes), "f"


def comparison(*shapes: Shape, **attrs: object) -> tuple[Shape, Kind]:
    return broadcast(*shapes), "f"


def norm_axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ShapeRuleError(f"axis {axis} is out of range for {ndim} dimensions")
    return axis % max(ndim, 1)


def axes_tuple(axis: int | Sequence[int] | None, ndim: int) -> tuple[int, ...]:
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, int):
        return (norm_axis(axis, ndim),)
    axes = tuple(norm_axis(a, ndim) for a in axis)
    if len(set(axes)) != len(axes):
        raise ShapeRuleError(f"repeated axis in {tuple(axis)}")
    return axes


def reduced(shape: Shape, axis: int | Sequence[int] | None, keepdims: bool) -> Shape:
    axes = axes_tuple(axis, len(shape))
    if keepdims:
        return tuple(1 if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def reduction(shape: Shape, *, axis: int | Sequence[int] | None = None, keepdims: bool = False) -> tuple[Shape, Kind]:
    return reduced(shape, axis, keepdims), "f"


def matmul_shape(a: Shape, b: Shape) -> Shape:
    if len(a) == 0 or len(b) == 0:
        raise ShapeRuleError("matmul needs operands with at least one dimension")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    k1, k2 = a2[-1], b2[-2]
    if k1 != k2:
        n1, n2 = ("N" if k is None else k for k in (k1, k2))
        raise ShapeRuleError(f"matmul of {fmt(a)} and {fmt(b)}: inner dimensions {n1} and {n2} differ")
    batch = broadcast(a2[:-2], b2[:-2])
    out = batch + (a2[-2], b2[-1])
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    if len(b) == 1:
        out = out[:-1]
    return out


def class_count(op: str, scores) -> int:  # type: ignore[no-untyped-def]
    """The fixed number of classes on the last axis of a node (logits or scores); a ShapeError
    naming the op and the node when it is unknown."""
    n = scores.shape[-1] if scores.shape else None
    if n is None:
        from ..errors import ShapeError

        raise ShapeError(
            f"{op}: {scores.label()} needs a fixed number of classes on its last axis, got shape {fmt(scores.shape)}"
        )
    return n
