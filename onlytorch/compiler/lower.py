"""Lowering: expressions to Graph nodes, built on first use (a name's definition, then what it
needs), with static shapes inferred as each node is built so that an error points at the
sub-expression that failed. Function calls are ops, ``grad``, ``scan`` or module calls; a module is
built on its first call (a layer list, a recurrent cell, a subgraph with its own parameters, or a
copy of another module's layers)."""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Any

from .. import footprint, nn
from ..errors import GraphError, ShapeError
from ..node import NodeId
from ..ops.shapes import fmt
from ..plan import ancestors
from ..spec import expr as X
from ..spec import schema as S
from ..spec.diagnostics import Path, did_you_mean
from ..spec.expr import SPECIAL_FUNCTIONS
from .context import CompileContext, Poisoned, attr_problem
from .layers import LayerError, build_layers, check_params
from .result import ModuleInfo

MAX_UNROLL = 4096  # scan steps: each one is a copy of the cell in the static graph


def resolve_name(ctx: CompileContext, name: str, path: Path, offset: int, width: int) -> NodeId:
    """The node called name, building its definition (and what it needs) on first use."""
    if name in ctx.names:
        return ctx.names[name]
    if name in ctx.broken:
        raise Poisoned(name)
    section = next((s for s, t in ctx.sections.items() if name in t), None)
    if section is None:
        if name in ctx.spec.modules:
            raise X.ExprError("E-NAME", f"{name!r} is a module: call it, e.g. {name}(x)", offset, width)
        raise X.ExprError("E-NAME", f"unknown name {name!r}", offset, width, did_you_mean(name, ctx.known_names()))
    if name in ctx.building:
        cycle = ctx.building[ctx.building.index(name) :] + [name]
        ctx.error(
            "E-CYCLE",
            "these definitions depend on each other in a circle: " + " -> ".join(cycle),
            (section, name),
            key=True,
            width=len(name),
        )
        for n in cycle:
            ctx.broken.add(n)
        raise Poisoned(name)
    ctx.building.append(name)
    own = (section, name)
    try:
        tree = X.parse(ctx.sections[section][name])
        node = X.evaluate(tree, scope(ctx, own, {}))
        if name in ctx.broken:  # a cycle through it was found while building it
            raise Poisoned(name)
        node = (
            ctx.g.identity(node, name=name)
            if ctx.g.record(node).user_named or ctx.g.record(node).kind != "op"
            else ctx.g.rename(node, name)
        )
        ctx.names[name] = node
        return node
    except X.ExprError as e:
        ctx.expr_error(e, own)
        ctx.broken.add(name)
        raise Poisoned(name) from None
    except Poisoned:
        ctx.broken.add(name)
        raise
    finally:
        ctx.building.pop()


def scope(ctx: CompileContext, path: Path, local: dict[str, NodeId]) -> X.Scope:
    def value(name: str, offset: int, width: int) -> NodeId:
        if name in local:
            return local[name]
        if name in ctx.inputs:
            return ctx.inputs[name]
        return resolve_name(ctx, name, path, offset, width)

    return X.Scope(ctx.g, value, lambda f, node, ev: call(ctx, f, node, ev, path), ctx.spec.dtype)


def call(ctx: CompileContext, fname: str, node: ast.Call, ev: Callable[[ast.expr], Any], path: Path) -> Any:
    start, width = X.span(node.func)
    if fname in ctx.modules or (fname in ctx.raw_modules and fname in ctx.broken):
        if fname in ctx.broken:
            raise Poisoned(fname)
        args, kwargs = X.call_arguments(node, ev)
        if kwargs:
            raise X.ExprError("E-ARG", f"module {fname} takes its inputs by position", start, width)
        return call_module(ctx, ctx.modules[fname], args, start, width)
    if fname == "grad":
        args, kwargs = X.call_arguments(node, ev)
        if len(args) != 2 or kwargs or not all(isinstance(a, NodeId) for a in args):
            raise X.ExprError("E-ARG", "grad takes two nodes: grad(y, x), y a scalar", start, width)
        y, x = args
        if any(d not in (1,) for d in y.shape):
            raise X.ExprError(
                "E-SHAPE",
                f"grad(y, x) needs a scalar y, got shape {fmt(y.shape)}: reduce it first, e.g. grad(sum(y), x)",
                start,
                width,
            )
        check_grad_size(ctx, y, start, width)
        before = ctx.g.node_count()
        try:
            out = ctx.g.grad(y, x, create_graph=True)
        except GraphError as e:
            raise X.ExprError("E-ARG", str(e), start, width) from None
        ctx.grad_nodes += ctx.g.node_count() - before
        check_grad_size(ctx, None, start, width)
        return out
    if fname == "scan":
        return call_scan(ctx, node, ev, start, width)
    op = ctx.ops.get(fname)
    if op is None:
        options = [*ctx.ops, *ctx.spec.modules, *SPECIAL_FUNCTIONS]
        raise X.ExprError("E-NAME", f"unknown function {fname!r}", start, width, did_you_mean(fname, options))
    args, kwargs = X.call_arguments(node, ev)
    problem = attr_problem(op, args, kwargs)
    if problem:
        raise X.ExprError("E-ARG", problem, start, width)
    before = ctx.g.node_count()
    out = getattr(ctx.g, op.name)(*args, **kwargs)
    too_big = ctx.budget.values(f"{fname}(...)", ctx.g.records(before))
    if too_big is not None:
        raise X.ExprError("E-MEMORY", too_big, start, width, footprint.HINT)
    return out


def check_grad_size(ctx: CompileContext, y: NodeId | None, start: int, width: int) -> None:
    """Bound the gradient graphs grad(...) builds: each nested grad multiplies the graph, and a
    dozen levels would take minutes and gigabytes. Checked before building (the graph that y
    depends on is what the gradient walks) and after."""
    walks = len(ancestors([ctx.g.record(y)])) if y is not None else 0
    if ctx.grad_nodes + walks > footprint.MAX_GRAD_NODES:
        how = f"would take them past it (it walks {walks:,} nodes)" if y is not None else "took them past it"
        raise X.ExprError(
            "E-GRAD-SIZE",
            f"the grad(...) calls of a spec may build at most {footprint.MAX_GRAD_NODES:,} gradient nodes; "
            f"{ctx.grad_nodes:,} are built and this grad {how}: "
            "grad nested this deep grows the graph about threefold per level",
            start,
            width,
            "nest grad(...) fewer times, or differentiate a smaller expression",
        )


def call_scan(ctx: CompileContext, node: ast.Call, ev: Callable[[ast.expr], Any], start: int, width: int) -> NodeId:
    if len(node.args) != 3 or not isinstance(node.args[0], ast.Name) or node.keywords:
        raise X.ExprError("E-ARG", "scan takes a cell module and two nodes: scan(cell, xs, h0)", start, width)
    cell = node.args[0].id
    if cell not in ctx.modules:
        s, w = X.span(node.args[0])
        if cell in ctx.broken:
            raise Poisoned(cell)
        raise X.ExprError("E-NAME", f"unknown module {cell!r}", s, w, did_you_mean(cell, ctx.modules))
    xs, h = ev(node.args[1]), ev(node.args[2])
    if not isinstance(xs, NodeId) or not isinstance(h, NodeId):
        raise X.ExprError("E-ARG", "scan takes a cell module and two nodes: scan(cell, xs, h0)", start, width)
    if len(xs.shape) < 2 or xs.shape[1] is None:
        raise X.ExprError(
            "E-SHAPE",
            f"scan runs over axis 1 of xs, which needs a fixed length; xs has shape {fmt(xs.shape)}",
            start,
            width,
        )
    if xs.shape[1] > MAX_UNROLL:
        raise X.ExprError(
            "E-SHAPE",
            f"scan would unroll {xs.shape[1]} steps, more than {MAX_UNROLL}: feed the sequence in windows (input 'window')",
            start,
            width,
        )
    states = []
    for t in range(xs.shape[1]):
        h = call_module(ctx, ctx.modules[cell], [xs[:, t], h], start, width)
        states.append(h)
    return ctx.g.stack(states, axis=1)


def call_module(ctx: CompileContext, m: ModuleInfo, args: list[Any], start: int, width: int) -> NodeId:
    # Numbers are constants; anything else (a list, a string) is not a module input.
    args = [ctx.g.constant(float(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args]
    if not all(isinstance(a, NodeId) for a in args):
        raise X.ExprError("E-ARG", f"module {m.name} takes nodes or numbers as inputs", start, width)
    if m.call is None:
        build_module(ctx, m, args, start, width)
        if m.call is None:
            ctx.broken.add(m.name)
            raise Poisoned(m.name)
    m.calls += 1
    try:
        return m.call(*args)
    except X.ExprError:
        raise
    except GraphError as e:
        code = "E-SHAPE" if isinstance(e, ShapeError) else "E-ARG"
        raise X.ExprError(code, f"calling module {m.name}: {e}", start, width) from None
    except TypeError:
        raise X.ExprError(
            "E-ARG", f"module {m.name} takes a different number of inputs ({len(args)} given)", start, width
        ) from None


def build_module(ctx: CompileContext, m: ModuleInfo, args: list[NodeId], start: int, width: int) -> None:
    spec = m.spec
    source = m
    if m.kind == "copy":
        src_name = spec.copy_of
        if src_name not in ctx.modules:
            if src_name not in ctx.broken:
                ctx.error(
                    "E-NAME",
                    f"copy_of: unknown module {src_name!r}",
                    ("modules", m.name, "copy_of"),
                    hint=did_you_mean(str(src_name), ctx.modules),
                )
            return
        source = ctx.modules[src_name]
        if source.kind == "copy":
            ctx.error(
                "E-MODULE",
                "copy_of must name a module with its own layers, not another copy",
                ("modules", m.name, "copy_of"),
            )
            return
        spec = source.spec
    path: Path = ("modules", source.name)
    before = ctx.g.node_count()
    if spec.layers is not None:
        m.call = build_layers(ctx, m, spec.layers, args, path)
    elif spec.cell is not None:
        if len(args) != 2:
            raise X.ExprError("E-ARG", f"cell {m.name} is called as {m.name}(x, h)", start, width)
        kind = nn.CELLS[spec.cell]
        x = args[0]
        if not x.shape or x.shape[-1] is None:
            raise X.ExprError(
                "E-SHAPE",
                f"cell {m.name}: its input needs a fixed last dimension, got {fmt(x.shape)}",
                start,
                width,
            )
        hidden = spec.hidden or 1
        try:
            check_params(ctx, m.name, f"cell {m.name}", kind.checked_shape(x.shape[-1], hidden))
        except LayerError as e:
            raise X.ExprError(e.code, str(e), start, width, e.hint) from None
        cell = kind.build(ctx.g, x.shape[-1], hidden, m.name)
        if isinstance(cell, nn.Module):  # else the parameters built since `before` are the module's
            m.params = cell.parameters()
        m.call = cell
    else:
        m.call = build_subgraph(ctx, m, spec, path)
    if m.call is not None and not m.params:
        m.params = [NodeId(ctx.g, n.index) for n in ctx.g.records(before) if n.kind == "parameter"]
        m.states = [NodeId(ctx.g, n.index) for n in ctx.g.records(before) if n.kind == "state"]


def build_subgraph(ctx: CompileContext, m: ModuleInfo, spec: S.ModuleSpec, path: Path) -> Callable[..., NodeId] | None:
    params: dict[str, NodeId] = {}
    for pname, p in spec.params.items():  # all of them checked before any is allocated
        try:
            check_params(ctx, m.name, f"parameter {pname}", tuple(p.shape))
        except LayerError as e:
            ctx.error(e.code, f"module {m.name}: {e}", path + ("params", pname, "shape"), hint=e.hint)
            return None
    for pname, p in spec.params.items():
        try:
            init_args: dict[str, Any] = dict(p.init_args)
            params[pname] = ctx.g.parameter(f"{m.name}.{pname}", shape=tuple(p.shape), init=p.init, **init_args)
        except GraphError as e:
            ctx.error("E-MODULE", f"parameter {pname} of module {m.name}: {e}", path + ("params", pname))
            return None
    arg_names = list(spec.args or [])
    trees: dict[str, ast.expr] = {}
    for key, text in [*spec.nodes.items(), ("<output>", spec.output or "")]:
        where = path + (("nodes", key) if key != "<output>" else ("output",))
        try:
            trees[key] = X.parse(text)
        except X.ExprError as e:
            ctx.expr_error(e, where)
            return None

    def call(*args: NodeId) -> NodeId:
        if len(args) != len(arg_names):
            raise TypeError
        local = dict(params)
        local.update(zip(arg_names, args))
        for key, tree in trees.items():
            where = path + (("nodes", key) if key != "<output>" else ("output",))
            try:
                local[key] = X.evaluate(tree, scope(ctx, where, local))
            except X.ExprError as e:
                ctx.expr_error(e, where)
                raise Poisoned(m.name) from None
        return local["<output>"]

    return call
