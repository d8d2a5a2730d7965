"""Reusable ONNX mapping rules for op declarations (``onnx=``): plain Python on the Builder, no
onnx import. Elementwise operators cast mixed inputs to the result's dtype (onlytorch mixes
int64 labels and floats freely; ONNX operators want one type), comparisons give the graph's
0.0/1.0 floats rather than ONNX booleans."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .builder import Builder, OnnxNode, Rule, onnx_rule


def cast_to(b: Builder, value: str, have: Any, want: Any) -> str:
    """value as dtype want (a Cast only when have differs)."""
    return value if np.dtype(have) == np.dtype(want) else b.cast(value, want)


def elementwise(op_type: str, **attrs: Any) -> Rule:
    """An ONNX operator on the inputs cast to the result's dtype; attrs are fixed ONNX attributes."""

    @onnx_rule(op_type)
    def rule(b: Builder, n: OnnxNode) -> str:
        xs = [cast_to(b, x, d, n.dtype) for x, d in zip(n.inputs, n.input_dtypes)]
        return b.op(op_type, *xs, out=n.out, **attrs)

    return rule


def with_attrs(op_type: str, names: dict[str, str], cast: dict[str, type] | None = None) -> Rule:
    """A one-input ONNX operator whose attributes come from the op's (``names``: op attribute ->
    ONNX attribute; ``cast``: ONNX attribute -> float or int)."""
    cast = cast or {}

    @onnx_rule(op_type)
    def rule(b: Builder, n: OnnxNode) -> str:
        onnx_attrs = {dst: cast.get(dst, float)(n.attrs[src]) for src, dst in names.items()}
        return b.op(op_type, cast_to(b, n.inputs[0], n.input_dtypes[0], n.dtype), out=n.out, **onnx_attrs)

    return rule


def comparison(op_type: str, negate: bool = False) -> Rule:
    """A comparison: inputs in a common type, the boolean result as the node's dtype (0.0/1.0)."""

    @onnx_rule(f"{'Not of ' if negate else ''}{op_type}, cast to float")
    def rule(b: Builder, n: OnnxNode) -> str:
        common = np.result_type(*n.input_dtypes)
        xs = [cast_to(b, x, d, common) for x, d in zip(n.inputs, n.input_dtypes)]
        r = b.op(op_type, *xs)
        if negate:
            r = b.op("Not", r)
        return b.op("Cast", r, out=n.out, to=_type(n.dtype))

    return rule


@onnx_rule("its input (Identity)")
def alias(b: Builder, n: OnnxNode) -> str:
    """The op passes its input on unchanged (identity, stop_gradient): no ONNX node at all."""
    return n.inputs[0]


def axes_of(axis: int | Sequence[int] | None, ndim: int) -> list[int] | None:
    """An op's axis attribute as a sorted list of non-negative axes (None: all)."""
    if axis is None:
        return None
    items = [axis] if isinstance(axis, (int, np.integer)) else list(axis)
    return sorted(int(a) % ndim if ndim else int(a) for a in items)


def _type(dtype: Any) -> int:
    from .builder import onnx_type

    return onnx_type(dtype)
