"""The plain-Python side of ONNX export: what an op's ``onnx=`` mapping writes to.

An op declares its mapping beside its definition (``@defop(..., onnx=...)``). A mapping is either
the name of one ONNX operator that takes the op's inputs in order and has no attributes
(``onnx="Tanh"``), or a rule ``rule(b: Builder, n: OnnxNode) -> str | list[str]`` that adds ONNX
nodes to ``b`` for graph node ``n`` and returns the name(s) of the value(s) computing it::

    @onnx_rule("Gemm")
    def _linear_onnx(b, n):
        x, w, bias = n.inputs
        return b.op("Gemm", x, w, bias, out=n.out)

Nothing here imports onnx: declarations cost nothing at import time. The exporter
(exporter.py) walks the graph, calls the rules, and assembles the ONNX model from the Builder's
records (only then is onnx imported). Rules see the graph in eval mode: what they write is the
inference computation (dropout is the identity, batch norm uses its running statistics).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np

OPSET = 17
IR_VERSION = 8
BATCH = "batch"  # the symbolic name of the batch dimension (the spec's None)

Shape = tuple[int | None, ...]
Rule = Callable[["Builder", "OnnxNode"], "str | list[str]"]
Mapping = str | Rule
F = TypeVar("F", bound=Callable[..., Any])


class MappingError(Exception):
    """A rule cannot export this use of its op (an attribute value ONNX cannot express, a random
    op, ...); the exporter reports it with the op and the spec node, as a missing mapping."""


@dataclass
class OnnxNode:
    """What a rule sees of the graph node it exports.

    ``inputs``: the ONNX value names of its inputs, in the op's order; ``out``: the name to give
    its result (the exporter may rename it); ``attrs``: the op's attributes; ``shape``/``dtype``:
    its static shape (None = the batch dimension) and dtype; ``input_shapes``/``input_dtypes``:
    those of its inputs; ``name``: the graph node's name (for messages); ``op``: the op name;
    ``input_values``: the inputs' values where they are constants or parameters (else None), for
    rules that need a value at export time (a reshape target, an index list)."""

    op: str
    name: str
    inputs: list[str]
    out: str
    attrs: dict[str, Any]
    shape: Shape
    dtype: np.dtype
    input_shapes: list[Shape]
    input_dtypes: list[np.dtype]
    input_values: list[np.ndarray | None] = field(default_factory=list)


@dataclass
class OnnxOp:
    """One ONNX node as recorded: operator, input and output value names, attributes (plain
    Python values; numpy arrays become tensors when the model is assembled)."""

    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any]
    name: str


class Builder:
    """Records an ONNX graph without onnx: nodes, initializers (numpy arrays), and the static
    shape and dtype of the values the exporter knows (graph inputs and every graph node's result).

    Names: ``fresh(hint)`` gives a name no other value has; ``reserve(name)`` claims one."""

    def __init__(self, float_dtype: Any = np.float32) -> None:
        self.float_dtype = np.dtype(float_dtype)
        self.nodes: list[OnnxOp] = []
        self.initializers: dict[str, np.ndarray] = {}
        self._taken: set[str] = set()
        self._counts: dict[str, int] = {}
        self._shapes: dict[str, Shape] = {}
        self._dtypes: dict[str, np.dtype] = {}
        self._consts: dict[tuple, str] = {}

    # ------------------------------------------------------------ names

    def reserve(self, name: str) -> str:
        """Claim a name (a graph input, an output, a parameter); ValueError if it is taken."""
        if name in self._taken:
            raise ValueError(f"ONNX value name {name!r} is used twice")
        self._taken.add(name)
        return name

    def fresh(self, hint: str = "t") -> str:
        """A value name not used yet, made from hint."""
        if hint not in self._taken:
            self._taken.add(hint)
            return hint
        k = self._counts.get(hint, 1)
        while f"{hint}_{k}" in self._taken:
            k += 1
        self._counts[hint] = k + 1
        name = f"{hint}_{k}"
        self._taken.add(name)
        return name

    # ------------------------------------------------------------ nodes

    def add(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: int | Sequence[str] = 1,
        attrs: dict[str, Any] | None = None,
    ) -> list[str]:
        """Add an ONNX node; ``outputs``: how many (fresh names) or their names. Returns the
        output names. An empty string in ``inputs`` marks an omitted optional input."""
        if isinstance(outputs, int):
            outs = [self.fresh(op_type.lower()) for _ in range(outputs)]
        else:
            outs = [o if o in self._taken else self.reserve(o) for o in outputs]
        self.nodes.append(OnnxOp(op_type, list(inputs), outs, dict(attrs or {}), f"{op_type}_{len(self.nodes)}"))
        return outs

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """Add a one-output ONNX node and return its output's name (``out`` when given)."""
        return self.add(op_type, inputs, [out] if out is not None else 1, attrs)[0]

    def finish(self, value: str, out: str) -> str:
        """Give value the name out: the last node made is renamed when it computed value (a fresh
        intermediate), else an Identity is added. For rules that build a chain step by step."""
        if value == out:
            return out
        last = self.nodes[-1] if self.nodes else None
        if last is not None and last.outputs[-1:] == [value] and value not in self._shapes:
            last.outputs[-1] = out if out in self._taken else self.reserve(out)
            return out
        return self.op("Identity", value, out=out)

    # ------------------------------------------------------------ constants

    def const(self, value: Any, hint: str = "const", dtype: Any = None) -> str:
        """An initializer holding value (numpy array or number). Floats take the export's float
        dtype and integers int64 unless ``dtype`` says otherwise; equal constants are shared."""
        arr = np.asarray(value)
        if dtype is not None:
            arr = arr.astype(dtype)
        elif arr.dtype.kind == "f":
            arr = arr.astype(self.float_dtype)
        elif arr.dtype.kind in "iu":
            arr = arr.astype(np.int64)
        elif arr.dtype.kind != "b":
            raise MappingError(f"cannot make an ONNX constant of dtype {arr.dtype}")
        key = (arr.dtype.str, arr.shape, arr.tobytes())
        name = self._consts.get(key)
        if name is None:
            name = self._consts[key] = self.initializer(self.fresh(hint), arr)
        return name

    def ints(self, values: Iterable[int], hint: str = "ints") -> str:
        """A 1-D int64 constant (shapes, axes, starts and ends of Slice, ...)."""
        return self.const(np.asarray([int(v) for v in values], dtype=np.int64), hint)

    def scalar(self, value: float, dtype: Any = None, hint: str = "scalar") -> str:
        """A 0-d constant: the export's float dtype unless ``dtype`` is given."""
        return self.const(np.asarray(value, dtype=dtype if dtype is not None else self.float_dtype), hint)

    def initializer(self, name: str, value: np.ndarray) -> str:
        """A named initializer (a parameter): the array as given; the name must be fresh or reserved."""
        if name not in self._taken:
            self.reserve(name)
        if name in self.initializers:
            raise ValueError(f"initializer {name!r} set twice")
        self.initializers[name] = np.array(value, order="C")  # (ascontiguousarray would make a 0-d array 1-d)
        self._shapes[name] = tuple(value.shape)
        self._dtypes[name] = np.dtype(value.dtype)
        return name

    # ------------------------------------------------------------ static information

    def set_info(self, name: str, shape: Shape, dtype: Any) -> None:
        """Record a value's static shape (None = batch) and dtype."""
        self._shapes[name] = tuple(shape)
        self._dtypes[name] = np.dtype(dtype)

    def shape(self, name: str) -> Shape:
        """The static shape of a value the exporter knows (None marks the batch dimension);
        KeyError for an intermediate value a rule made without recording it."""
        return self._shapes[name]

    def dtype(self, name: str) -> np.dtype:
        return self._dtypes[name]

    def rank(self, name: str) -> int:
        return len(self._shapes[name])

    # ------------------------------------------------------------ common pieces

    def cast(self, value: str, dtype: Any) -> str:
        """value converted to dtype (ONNX Cast)."""
        return self.op("Cast", value, to=onnx_type(dtype))


# ONNX TensorProto data type numbers (onnx.TensorProto.FLOAT, ...), so that rules need no onnx.
_TYPES = {"float32": 1, "uint8": 2, "int8": 3, "int32": 6, "int64": 7, "bool": 9, "float16": 10, "float64": 11}


def onnx_type(dtype: Any) -> int:
    """The ONNX TensorProto type number of a numpy dtype."""
    key = np.dtype(dtype).name
    if key not in _TYPES:
        raise MappingError(f"no ONNX type for dtype {key}")
    return _TYPES[key]


def onnx_rule(label: str) -> Callable[[F], F]:
    """Decorator naming what a rule exports to (shown by ``onlytorch ops NAME``: "ONNX: label")."""

    def mark(fn: F) -> F:
        fn.onnx_label = label  # type: ignore[attr-defined]
        return fn

    return mark


def describe(mapping: Mapping | None) -> str | None:
    """What an op's mapping exports to, for ``onlytorch ops``: an operator name, a rule's label,
    or None without a mapping."""
    if mapping is None:
        return None
    if isinstance(mapping, str):
        return mapping
    label = getattr(mapping, "onnx_label", None)
    if label:
        return str(label)
    doc = (getattr(mapping, "__doc__", None) or "").strip()
    return doc.splitlines()[0] if doc else "a subgraph of ONNX operators"


def apply(mapping: Mapping, b: Builder, n: OnnxNode) -> list[str]:
    """Run a mapping for node n; the names of the values it computes (one per output)."""
    if isinstance(mapping, str):
        if n.attrs:
            raise MappingError(f"the mapping to {mapping} takes no attributes, but the node has {sorted(n.attrs)}")
        return [b.op(mapping, *n.inputs, out=n.out)]
    result = mapping(b, n)
    return [result] if isinstance(result, str) else list(result)
