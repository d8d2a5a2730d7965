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
from ..spec import names as N
from ..spec import schema as S
from ..spec.diagnostics import Path, did_you_mean
from ..spec.expr import SPECIAL_FUNCTIONS
from . import unpack
from .context import CompileContext, Poisoned, attr_problem
from .layers import LayerError, build_layers, check_params
from .result import ModuleInfo

MAX_UNROLL = 4096  # scan steps: each one is a copy of the cell in the static graph


def resolve_name(ctx: CompileContext, name: str, path: Path, offset: int, width: int) -> NodeId | X.Outputs:
    """The node called name, building its definition (and what it needs) on first use; a node
    defined as a call with several outputs holds them all (``X.Outputs``)."""
    if name in ctx.names:
        return ctx.names[name]
    if name in ctx.records:
        return ctx.records[name]
    if name in ctx.groups:
        return ctx.groups[name]
    if name in ctx.broken:
        raise Poisoned(name)
    if name in ctx.unpacked:  # one name of mu, logvar: enc(x): building the key binds them all
        try:
            resolve_name(ctx, ctx.unpacked[name], path, offset, width)
        except Poisoned:
            ctx.broken.add(name)
            raise
        return ctx.names[name]
    section = next((s for s, t in ctx.sections.items() if name in t), None)
    if section is None:
        if name in ctx.spec.modules:
            raise X.ExprError("E-NAME", f"{name!r} is a module: call it, e.g. {name}(x)", offset, width)
        raise X.ExprError("E-NAME", f"unknown name {name!r}", offset, width, did_you_mean(name, ctx.known_names()))
    if name in ctx.building:
        cycle = ctx.building[ctx.building.index(name) :] + [name]
        ctx.error(
            "E-CYCLE",
            "these definitions depend on each other in a circle: "
            + " -> ".join(f"({n})" if N.unpacking(n) else n for n in cycle),
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
        with ctx.g.building(name):  # messages about its parts name it (Node.label)
            built = (X.evaluate_value if section == "nodes" else X.evaluate)(tree, scope(ctx, own, {}))
        if name in ctx.broken:  # a cycle through it was found while building it
            raise Poisoned(name)
        if section == "nodes" and N.unpacking(name) is not None:
            unpack.bind(ctx, name, built, own, ctx.sections[section][name])
            assert isinstance(built, X.Outputs)  # bind refuses one tensor
            ctx.groups[name] = built
            return built
        if isinstance(built, X.Outputs):
            ctx.records[name] = name_outputs(ctx, name, built)
            return ctx.records[name]
        node = built
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


def name_outputs(ctx: CompileContext, name: str, out: X.Outputs) -> X.Outputs:
    """A named node holding several outputs: each output's node is called NAME.OUTPUT in the graph
    (in messages and the compile report), unless that name is taken (a metric literally called so)."""
    named = {}
    for key, node in out.values.items():
        full = f"{name}.{key}"
        if _taken(ctx, full):
            named[key] = node
            continue
        rec = ctx.g.record(node)
        named[key] = ctx.g.identity(node, name=full) if rec.user_named or rec.kind != "op" else ctx.g.rename(node, full)
    return X.Outputs(f"node {name}", named)


def _taken(ctx: CompileContext, name: str) -> bool:
    try:
        ctx.g.node(name)
    except GraphError:
        return False
    return True


def scope(ctx: CompileContext, path: Path, local: dict[str, Any]) -> X.Scope:
    def value(name: str, offset: int, width: int) -> NodeId | X.Outputs:
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
    if fname == "param":
        return call_param(ctx, node, start, width)
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


def call_scan(
    ctx: CompileContext, node: ast.Call, ev: Callable[[ast.expr], Any], start: int, width: int
) -> NodeId | X.Outputs:
    usage = "scan takes a cell module, a sequence and the initial states: scan(cell, xs, h0) or scan(cell, xs, h0, c0)"
    if len(node.args) < 3 or not isinstance(node.args[0], ast.Name) or node.keywords:
        raise X.ExprError("E-ARG", usage, start, width)
    cell = node.args[0].id
    if cell not in ctx.modules:
        s, w = X.span(node.args[0])
        if cell in ctx.broken:
            raise Poisoned(cell)
        raise X.ExprError("E-NAME", f"unknown module {cell!r}", s, w, did_you_mean(cell, ctx.modules))
    m = ctx.modules[cell]
    named = _named_states(ctx, m)
    if named is None and len(node.args) != 3:
        raise X.ExprError(
            "E-ARG",
            f"{cell} has one state: scan({cell}, xs, h0) ({len(node.args) - 2} initial states given)",
            start,
            width,
        )
    if named is not None and len(node.args) - 2 != len(named):
        raise X.ExprError(
            "E-ARG",
            f"{cell} has the states {', '.join(named)}: scan({cell}, xs, {', '.join(s + '0' for s in named)}) "
            f"({len(node.args) - 2} initial states given)",
            start,
            width,
        )
    xs, *h = [ev(a) for a in node.args[1:]]
    if not all(isinstance(v, NodeId) for v in [xs, *h]):
        raise X.ExprError("E-ARG", usage, start, width)
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
    if xs.shape[1] == 0:
        raise X.ExprError("E-SHAPE", f"scan needs at least one step; xs has shape {fmt(xs.shape)}", start, width)
    if named is not None:
        return _scan_states(ctx, m, named, xs, h, start, width)
    state = h[0]
    states = []
    for t in range(xs.shape[1]):
        state = call_module(ctx, m, [xs[:, t], state], start, width)
        states.append(state)
    return ctx.g.stack(states, axis=1)


def _named_states(ctx: CompileContext, m: ModuleInfo) -> list[str] | None:
    """The states of a cell whose outputs are named (a subgraph with args [x, h, c] and output
    {h: ..., c: ...}: its arguments after the first; a registered cell declared with several
    states). None for a cell with one output, which scan runs as before (a tensor of the stacked
    states)."""
    spec = m.spec
    if m.kind == "copy":
        source = ctx.modules.get(spec.copy_of or "")
        spec = source.spec if source is not None else spec
    if spec.cell is not None and spec.cell in nn.CELLS:
        states = nn.CELLS[spec.cell].states
        return list(states) if len(states) > 1 else None
    if not isinstance(spec.output, dict) or not spec.args:
        return None
    return list(spec.args[1:])


def _scan_states(
    ctx: CompileContext, m: ModuleInfo, named: list[str], xs: NodeId, h: list[NodeId], start: int, width: int
) -> X.Outputs:
    """A cell with named outputs over axis 1 of xs: the outputs named like a state argument are fed
    back as that state; every output is stacked over time, and each state's final value is
    ``STATE_last``."""
    states = dict(zip(named, h))
    seqs: dict[str, list[NodeId]] = {}
    for t in range(xs.shape[1]):
        out = call_module(ctx, m, [xs[:, t], *states.values()], start, width)
        assert isinstance(out, X.Outputs)  # a cell with named outputs
        missing = [s for s in named if s not in out.values]
        if missing:
            raise X.ExprError(
                "E-OUTPUT",
                f"{m.name} has the state{'s' if len(named) > 1 else ''} {', '.join(named)} but returns no "
                f"{', '.join(repr(s) for s in missing)}",
                start,
                width,
                "name each state's next value like its argument: output: {"
                + ", ".join(f"{s}: ..." for s in named)
                + "}",
            )
        for key in out.values:
            if key.endswith("_last") and key[: -len("_last")] in named:
                raise X.ExprError(
                    "E-OUTPUT",
                    f"cell {m.name}'s output {key!r} takes the name scan gives the final {key[:-5]!r}",
                    start,
                    width,
                    "rename that output",
                )
        for s in named:
            new, old = out.values[s], states[s]
            if tuple(new.shape) != tuple(old.shape):
                raise X.ExprError(
                    "E-SHAPE",
                    f"cell {m.name} returns its state {s} with shape {fmt(new.shape)}, but it was given "
                    f"{fmt(old.shape)}: a state keeps its shape from step to step",
                    start,
                    width,
                )
            states[s] = new
        for key, v in out.values.items():
            seqs.setdefault(key, []).append(v)
    values = {key: ctx.g.stack(v, axis=1) for key, v in seqs.items()}
    values.update({f"{s}_last": states[s] for s in named})
    return X.Outputs(f"scan({m.name}, ...)", values)


def call_module(ctx: CompileContext, m: ModuleInfo, args: list[Any], start: int, width: int) -> NodeId | X.Outputs:
    # Numbers are constants; anything else (a list, a string) is not a module input.
    args = [ctx.g.constant(float(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args]
    if not all(isinstance(a, NodeId) for a in args):
        raise X.ExprError("E-ARG", f"module {m.name} takes nodes or numbers as inputs", start, width)
    # A module with several outputs called again on the very same nodes is the same evaluation:
    # enc(x)["mu"] and enc(x)["logvar"] in two definitions build the encoder once.
    key = (m.name, tuple(a.index for a in args))
    if key in ctx.calls_made:
        return ctx.calls_made[key]
    if m.call is None:
        build_module(ctx, m, args, start, width)
        if m.call is None:
            ctx.broken.add(m.name)
            raise Poisoned(m.name)
    m.calls += 1
    try:
        out = m.call(*args)
        if isinstance(out, X.Outputs):
            ctx.calls_made[key] = out
            if m.outputs is None:
                m.outputs = {k: tuple(v.shape) for k, v in out.values.items()}
        return out
    except X.ExprError:
        raise
    except GraphError as e:
        code = "E-SHAPE" if isinstance(e, ShapeError) else "E-ARG"
        raise X.ExprError(code, f"calling module {m.name}: {e}", start, width) from None
    except TypeError:
        kind = nn.CELLS.get(m.spec.cell or "") if m.kind == "cell" else None
        if kind is not None and len(kind.states) > 1:
            raise X.ExprError(
                "E-ARG", f"cell {m.name} is called as {m.name}(x, {', '.join(kind.states)})", start, width
            ) from None
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
        kind = nn.CELLS[spec.cell]
        if len(args) != 1 + len(kind.states):
            raise X.ExprError(
                "E-ARG", f"cell {m.name} is called as {m.name}(x, {', '.join(kind.states)})", start, width
            )
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
        m.call = cell if len(kind.states) == 1 else _named_cell(m.name, kind.states, cell)
    else:
        m.call = build_subgraph(ctx, m, spec, path)
    if m.call is not None and (not m.params or m.kind == "subgraph"):
        # a subgraph's own parameters may predate its first call (made for a param(...) of it);
        # parameters made here for another module's param(...) are that module's
        own = list(ctx.subgraph_params.get(m.name, {}).values())
        made = [
            NodeId(ctx.g, n.index)
            for n in ctx.g.records(before)
            if n.kind == "parameter" and n.name not in ctx.lent and n.index not in {p.index for p in own}
        ]
        m.params = own + made
        m.states = [NodeId(ctx.g, n.index) for n in ctx.g.records(before) if n.kind == "state"]


def _named_cell(name: str, states: tuple[str, ...], cell: Callable[..., Any]) -> Callable[..., X.Outputs]:
    """A registered cell with several states: its tuple of next states as named outputs."""

    def call(*args: NodeId) -> X.Outputs:
        out = cell(*args)
        if not isinstance(out, (tuple, list)) or len(out) != len(states):
            raise GraphError(f"the cell returned {type(out).__name__}, not its {len(states)} next states")
        return X.Outputs(f"module {name}", dict(zip(states, out)))

    return call


def subgraph_params(ctx: CompileContext, m: ModuleInfo, spec: S.ModuleSpec, path: Path) -> dict[str, NodeId] | None:
    """A subgraph module's own parameters, made once (at its first call, or earlier for a
    param(...) that names one); None when one cannot be made (reported)."""
    if m.name in ctx.subgraph_params:
        return ctx.subgraph_params[m.name]
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
    ctx.subgraph_params[m.name] = params
    return params


def build_subgraph(
    ctx: CompileContext, m: ModuleInfo, spec: S.ModuleSpec, path: Path
) -> Callable[..., NodeId | X.Outputs] | None:
    params = subgraph_params(ctx, m, spec, path)
    if params is None:
        return None
    arg_names = list(spec.args or [])
    # (local name, where in the YAML, tree, whether it may hold several outputs); the outputs'
    # local names are tuples, which no name in an expression can be
    trees: list[tuple[Any, Path, ast.expr, bool]] = []
    several = spec.output if isinstance(spec.output, dict) else None
    entries: list[tuple[Any, Path, str, bool]] = [(k, ("nodes", k), v, True) for k, v in spec.nodes.items()]
    if several is not None:
        entries += [(("<output>", k), ("output", k), v, False) for k, v in several.items()]
    else:
        entries.append((("<output>",), ("output",), str(spec.output or ""), False))
    for key, where, text, holds in entries:
        try:
            trees.append((key, path + where, X.parse(text), holds))
        except X.ExprError as e:
            ctx.expr_error(e, path + where)
            return None

    def call(*args: NodeId) -> NodeId | X.Outputs:
        if len(args) != len(arg_names):
            raise TypeError
        local: dict[Any, Any] = dict(params)
        local.update(zip(arg_names, args))
        for key, where, tree, holds in trees:
            try:
                local[key] = (X.evaluate_value if holds else X.evaluate)(tree, scope(ctx, where, local))
            except X.ExprError as e:
                ctx.expr_error(e, where)
                raise Poisoned(m.name) from None
            if holds and N.unpacking(key) is not None:  # mu, logvar: enc(a) among the module's nodes
                try:
                    local.update(unpack.pairs(key, local[key], spec.nodes[key]))
                except unpack.UnpackError as e:
                    ctx.error("E-OUTPUT", e.message, where, key=True, hint=e.hint, width=len(key))
                    raise Poisoned(m.name) from None
        if several is None:
            return local[("<output>",)]
        return X.Outputs(f"module {m.name}", {k: local[("<output>", k)] for k in several})

    return call


def call_param(ctx: CompileContext, node: ast.Call, start: int, width: int) -> NodeId:
    """param("M.NAME"): module M's parameter M.NAME, the very node (its gradient is the parameter's)."""
    arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
    if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
        raise X.ExprError("E-ARG", 'param takes one parameter name, a string: param("net.0.weight")', start, width)
    name = arg.value
    s, w = X.span(arg)
    built = {p.name: p for p in ctx.g.parameters()}
    if name in built:
        return built[name]
    module = name.split(".", 1)[0]
    m = ctx.modules.get(module)
    if module in ctx.broken:
        raise Poisoned(module)
    if m is not None and m.call is None and m.kind == "subgraph" and name[len(module) + 1 :] in m.spec.params:
        # made before the module's first call; not the parameters of the module being built now
        made = subgraph_params(ctx, m, m.spec, ("modules", m.name))
        if made is None:
            ctx.broken.add(module)
            raise Poisoned(module)
        ctx.lent.update(p.name for p in made.values())
        m.params = list(made.values())
        return made[name[len(module) + 1 :]]
    if m is not None and m.call is None and m.kind != "subgraph":
        raise X.ExprError(
            "E-ARG",
            f"param({name!r}): module {module} makes its parameters at its first call (their shapes follow "
            "its input), and nothing has called it before this expression",
            s,
            w,
            f"call {module} in a node this expression does not come before, e.g. nodes: {{out: {module}(x)}}",
        )
    known = [*built, *(f"{k}.{p}" for k, v in ctx.spec.modules.items() for p in v.params)]
    raise X.ExprError(
        "E-NAME",
        f"param: unknown parameter {name!r}",
        s,
        w,
        did_you_mean(name, known)
        or (f"module {module}'s parameters: {', '.join(p.name for p in m.params)}" if m and m.params else None),
    )
