"""Building op nodes: a registry op applied to inputs and attributes becomes a node of the graph.

``call`` maps a Python call (``g.tanh(x)``, ``g.sum(x, 0)``) to inputs and attributes, ``build``
checks the attributes, runs the op's shape rule (or, for a composite op, its builder) and adds the
node, and ``op_method`` makes the Graph method of each registry op. Graph's ``apply`` and the op
methods delegate here.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GraphError, ShapeError
from .node import Node, NodeId
from .ops.registry import OpDef, ShapeRuleError
from .ops.shapes import fmt
from .suggest import did_you_mean_suffix

if TYPE_CHECKING:
    from .graph import Graph

_EMPTY = inspect.Parameter.empty


def call(g: Graph, op: OpDef, args: tuple, kwargs: dict[str, Any]) -> NodeId:
    """The node of ``g.<op>(*args, **kwargs)``: inputs first, then attributes by position or name."""
    name = kwargs.pop("name", None)
    if op.variadic:
        if args and isinstance(args[0], (list, tuple)):
            inputs, rest = list(args[0]), list(args[1:])
        else:
            inputs, rest = list(args), []
    else:
        n = len(op.input_names)
        inputs, rest = list(args[:n]), list(args[n:])
        if len(inputs) < n:
            raise GraphError(f"{op.name} needs inputs ({', '.join(op.input_names)}), got {len(inputs)}")
    attr_names = list(op.attr_defaults)
    if len(rest) > len(attr_names):
        raise GraphError(f"{op.name} takes at most {len(op.input_names) + len(attr_names)} positional arguments")
    for key, v in zip(attr_names, rest):
        if key in kwargs:
            raise GraphError(f"{op.name}: {key!r} given twice")
        kwargs[key] = v
    return build(g, op, inputs, kwargs, name)


def build(g: Graph, op: OpDef, args: list[Any], attrs: dict[str, Any], name: str | None) -> NodeId:
    """A new node of op on args (nodes, arrays or numbers) with attrs (defaults filled in)."""
    for key in attrs:
        if key not in op.attr_defaults:
            hint = did_you_mean_suffix(key, op.attr_defaults)
            known = ", ".join(op.attr_defaults) or "none"
            raise GraphError(f"{op.name} has no argument {key!r}{hint} (its arguments: {known})")
    full = dict(op.attr_defaults)
    full.update(attrs)
    missing = [k for k, v in full.items() if v is _EMPTY]
    if missing:
        raise GraphError(f"{op.name} needs the argument(s) {', '.join(missing)}")
    for k in ("axis", "axes", "shape"):
        if isinstance(full.get(k), list):
            full[k] = tuple(full[k])
    inputs = tuple(g._as_node(a, op.name) for a in args)
    if op.build is not None:
        return _build_composite(g, op, inputs, full, name)
    try:
        shape, kind = op.shape_rule(*(p.shape for p in inputs), **full)
    except (ShapeRuleError, TypeError, ValueError) as e:
        # Inside a spec node's definition, the node that could not be built is that spec node's part
        # (its internal name would name nothing that exists).
        owner = g.spec_node_building() if name is None else None
        shown = ", ".join(f"{p.label(owner)} {fmt(p.shape)}" for p in inputs) or "no inputs"
        label = f"{name or f'{op.name}_{len(g._nodes)}'!r} (" if owner is None else f"{owner!r} (its "
        if isinstance(e, ShapeRuleError):
            raise ShapeError(f"cannot build node {label}{op.name} of {shown}): {e}") from None
        # An attribute of the wrong type (axis="a") fails inside the shape rule.
        given = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
        raise GraphError(f"cannot build node {label}{op.name} of {shown}, {given}): {e}") from e
    if op.keep_dtype:
        dt = inputs[0].dtype
    else:
        dt = g.dtype if kind == "f" else np.dtype(np.int64)
    node = g._new_node(name, "op", tuple(shape), dt, op.name)
    node.op = op
    node.inputs = inputs
    node.attrs = full
    node.shape_mask = tuple(op.is_shape_only(i) for i in range(len(inputs)))
    node.train_reads = tuple(p for i, p in enumerate(inputs) if i not in op.writes)
    return NodeId(g, node.index)


def _build_composite(g: Graph, op: OpDef, inputs: tuple[Node, ...], attrs: dict[str, Any], name: str | None) -> NodeId:
    assert op.build is not None
    args = [NodeId(g, p.index) for p in inputs]
    try:
        out = op.build(g, *args, **attrs)
    except (ShapeError, TypeError, ValueError) as e:
        owner = g.spec_node_building() if name is None else None
        shown = ", ".join(f"{p.label(owner)} {fmt(p.shape)}" for p in inputs)
        label = f"{name!r} " if name is not None else f"node {owner!r}: its " if owner is not None else ""
        if isinstance(e, ShapeError):
            raise ShapeError(f"cannot build {label}{op.name}({shown}): {e}") from None
        given = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
        raise GraphError(f"cannot build {label}{op.name}({shown}, {given}): {e}") from e
    if name is not None:
        return NodeId(g, g._rename(g._nodes[out.index], name).index)
    return out


def op_method(op: OpDef) -> Callable[..., NodeId]:
    """The Graph method of op (``g.tanh(x, name=None)``), documented with its signature."""

    def method(self: Graph, *args: Any, **kwargs: Any) -> NodeId:
        return call(self, op, args, kwargs)

    sig = ", ".join(s for s in (op.signature(), "name=None") if s)
    method.__name__ = op.name
    method.__qualname__ = f"Graph.{op.name}"
    method.__doc__ = f"{op.name}({sig}) -> NodeId\n\n{op.doc}"
    return method
