"""Modules written as layer lists (``[{linear: 64}, relu, ...]``): each item's kind and argument,
the layer it builds (the layers with parameters are those of the layer registry, onlytorch/nn/layers.py,
read through their declarations; any one-input op is a layer too), and the memory checks made before
a layer list allocates anything."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import footprint
from ..errors import GraphError, ShapeError
from ..nn.layers import LAYERS, LayerOptionError, is_op_layer, op_keeps_width, op_out_shape
from ..node import NodeId
from ..ops.shapes import fmt
from ..spec.diagnostics import Path, did_you_mean
from ..spec.pydantic_errors import value_at
from .context import CompileContext, attr_problem
from .result import ModuleInfo

MAX_ELEMENTS = 2**27  # per parameter: validate allocates and initialises every parameter


def plan_layers(ctx: CompileContext, m: ModuleInfo, items: list[Any], x: NodeId, path: Path) -> bool:
    """Before a layer list allocates anything: the parameters of its layers and the layer outputs a
    backward keeps, as far as their sizes follow from the input (through layers whose output width
    their declaration gives, and ops that keep the last dimension), must fit the memory limit.
    False (with a diagnostic at the layer that passes it) when they do not."""
    if not x.shape or x.shape[-1] is None:
        return True
    shape, planned, outputs, widest = tuple(x.shape), 0, 0, 0
    itemsize = ctx.g.dtype.itemsize
    info = ctx.modules.get(m.name)
    copies = 1 if info is not None and info.kind == "copy" else ctx.budget.trained_copies
    for i, item in enumerate(items):
        try:
            kind, arg = layer_kind(ctx, item)
        except LayerError:
            return True
        what = f"layer {i} of module {m.name} ({kind})"
        defn = LAYERS.get(kind)
        if defn is not None:
            try:
                opts = defn.parse(arg)
            except LayerOptionError:
                return True  # the layer's build reports it
            dim = defn.input_width(shape)
            if dim is None:
                return True  # the layer's build reports it
            try:
                out_shape = defn.out_shape(shape, opts)
            except GraphError:
                return True  # the layer's build reports it
            if out_shape is None or any(_elements(s) > MAX_ELEMENTS for s in defn.params(dim, opts).values()):
                return True  # the plan cannot follow it, or the layer's build reports it
            planned += defn.planned(dim, opts) * itemsize * copies
            if defn.width is not None:
                what = f"layer {i} of module {m.name} ({kind} {dim} -> {out_shape[-1]})"
            elif defn.shape is not None:
                what = f"layer {i} of module {m.name} ({kind} {fmt(shape)} -> {fmt(out_shape)})"
            shape = out_shape
        else:
            op = ctx.ops.get(kind)
            if op is None or shape[-1] is None:
                return True
            if len(shape) == 2 and op_keeps_width(op, arg, shape[-1]):
                pass
            elif (after := op_out_shape(op, arg, shape)) is not None and after[-1] is not None:
                shape = after
            else:
                return True
        size = footprint.elements(shape, ctx.budget.batch) * itemsize
        outputs += size
        widest = max(widest, size)
        # a backward through the widest output holds its gradient and its input's, of its size
        problem = ctx.budget.planned(what, planned, outputs + 2 * widest if copies > 1 else 0)
        if problem is not None:
            ctx.error("E-MEMORY", problem, layer_path(ctx, path, i), hint=footprint.HINT)
            return False
    return True


def check_params(ctx: CompileContext, module: str, what: str, shape: tuple[int, ...]) -> None:
    """Refuse a parameter before it is allocated: too many values, or past the memory limit."""
    _check_size(what, shape)
    info = ctx.modules.get(module)
    trained = info is None or info.kind != "copy"
    problem = ctx.budget.parameter(what, shape, ctx.g.dtype.itemsize, trained)
    if problem is not None:
        raise LayerError(problem, footprint.HINT, code="E-MEMORY")


def check_values(ctx: CompileContext, what: str, first: int) -> None:
    """Refuse the nodes built since index first when one alone passes the memory limit at the batch size."""
    problem = ctx.budget.values(what, ctx.g.records(first))
    if problem is not None:
        raise LayerError(problem, footprint.HINT, code="E-MEMORY")


def build_layers(
    ctx: CompileContext, m: ModuleInfo, items: list[Any], args: list[NodeId], path: Path
) -> Callable[..., NodeId] | None:
    if len(args) != 1:
        ctx.error("E-ARG", f"module {m.name} is a layer list and takes one input, got {len(args)}", path)
        return None
    layers: list[Callable[[NodeId], NodeId]] = []
    x = args[0]
    if not plan_layers(ctx, m, items, x, path):
        return None
    for i, item in enumerate(items):
        ipath = layer_path(ctx, path, i)
        try:
            layer = build_layer(ctx, m.name, i, item, x, ipath)
            before = ctx.g.node_count()
            x = layer(x)
            check_values(ctx, f"layer {i} of module {m.name}", before)
        except GraphError as e:
            ctx.error(
                "E-SHAPE" if isinstance(e, ShapeError) else "E-MODULE", f"layer {i} of module {m.name}: {e}", ipath
            )
            return None
        except LayerError as e:
            ctx.error(e.code, str(e), ipath, hint=e.hint)
            return None
        layers.append(layer)
    first = [True]

    def call(x: NodeId) -> NodeId:
        if first[0]:  # the first call built the layers on this very input
            first[0] = False
            return x_out
        for layer in layers:
            x = layer(x)
        return x

    x_out = x
    return call


def layer_path(ctx: CompileContext, path: Path, i: int) -> Path:
    """Where layer i of the module at path is written: under 'layers', or in the short form's list."""
    short = isinstance(value_at(ctx.loc.data, path), list)
    return path + (i,) if short else path + ("layers", i)


def check_layers_unbuilt(ctx: CompileContext) -> None:
    """The layer list of a module no expression built (never called, or its caller broke): its
    layer names are still checked, so that a typo there is not hidden."""
    for m in ctx.modules.values():
        if m.call is not None or m.name in ctx.broken or m.kind != "layers" or not m.spec.layers:
            continue
        for i, item in enumerate(m.spec.layers):
            try:
                layer_kind(ctx, item)
            except LayerError as e:
                ctx.error("E-MODULE", str(e), layer_path(ctx, ("modules", m.name), i), hint=e.hint)


def layer_kind(ctx: CompileContext, item: Any) -> tuple[Any, Any]:
    """(kind, argument) of a layer item; raises LayerError for a malformed item or an unknown layer."""
    if isinstance(item, str):
        kind, arg = item, None
    elif isinstance(item, dict) and len(item) == 1:
        kind, arg = next(iter(item.items()))
    else:
        raise LayerError(f"a layer is a name (relu) or a one-key mapping ({{linear: 64}}), got {item!r}")
    if kind in LAYERS:
        return kind, arg
    op = ctx.ops.get(kind)
    if op is None or not is_op_layer(op):
        options = [*LAYERS, *(k for k, v in ctx.ops.items() if is_op_layer(v))]
        hint = did_you_mean(str(kind), options)
        if op is not None:  # an op, but not one a layer list can apply
            why = "has no derivative" if len(op.input_names) == 1 and not op.variadic else "takes several inputs"
            hint = f"{kind} {why}: call it in a node instead, e.g. nodes: {{out: {kind}(...)}}"
        raise LayerError(f"unknown layer {kind!r}", hint)
    return kind, arg


def build_layer(
    ctx: CompileContext, module: str, i: int, item: Any, x: NodeId, path: Path
) -> Callable[[NodeId], NodeId]:
    kind, arg = layer_kind(ctx, item)
    defn = LAYERS.get(kind)
    if defn is None:
        return op_layer(ctx, kind, arg)
    try:
        opts = defn.parse(arg)
    except LayerOptionError as e:
        raise LayerError(str(e)) from None
    width = None
    if defn.needs_width:
        width = defn.input_width(tuple(x.shape)) if x.shape else None
        if width is None:
            axis = "last dimension" if defn.axis == -1 else f"size at axis {defn.axis}"
            raise LayerError(f"{kind} needs an input with a fixed {axis}, got {fmt(x.shape)}")
    out_shape = defn.out_shape(tuple(x.shape), opts) if width is not None else None  # ShapeError: E-SHAPE
    shapes = list(defn.params(width, opts).values())
    if shapes:
        check_params(ctx, module, kind, shapes[0])
    if out_shape is not None:
        too_big = ctx.budget.output("its output", out_shape, ctx.g.dtype.itemsize)
        if too_big is not None:  # refused before the layer allocates its parameters
            label = out_shape[-1] if defn.shape is None else fmt(out_shape)
            raise LayerError(f"{kind} {label}: {too_big}", footprint.HINT, code="E-MEMORY")
    return defn.build(ctx.g, x, opts, f"{module}.{i}")


def op_layer(ctx: CompileContext, kind: str, arg: Any) -> Callable[[NodeId], NodeId]:
    """A parameter-free layer: the one-input op called kind, a bare argument or a list giving its
    first attributes, a mapping giving them by name."""
    op = ctx.ops[kind]
    method = getattr(ctx.g, op.name)
    if isinstance(arg, dict) and not all(isinstance(k, str) for k in arg):
        raise LayerError(f"{kind} takes options by name, e.g. {{{kind}: {{name: value}}}}")
    problem = attr_problem(
        op,
        [None, *(arg if isinstance(arg, list) else [] if arg is None or isinstance(arg, dict) else [arg])],
        arg if isinstance(arg, dict) else {},
    )
    if problem:
        raise LayerError(problem)
    if arg is None:
        return lambda v: method(v)
    if isinstance(arg, dict):
        return lambda v: method(v, **arg)
    if isinstance(arg, list):
        return lambda v: method(v, *arg)
    return lambda v: method(v, arg)


class LayerError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: str = "E-MODULE") -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


def _check_size(what: str, shape: tuple[int, ...]) -> None:
    """Refuse a parameter too large to allocate (a typo such as linear: 1000000000), before numpy tries."""
    n = _elements(shape)
    if n > MAX_ELEMENTS:
        raise LayerError(
            f"{what} would need a parameter of {n:,} values (shape {tuple(shape)}); the limit is {MAX_ELEMENTS:,}"
        )


def _elements(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
