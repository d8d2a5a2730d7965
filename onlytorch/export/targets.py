"""What an export computes: the nodes asked for (``--node``) or the spec's main output, and the
graph inputs they need.

The default rule, in order (docs/export.md lists the node of every example):
1. ``eval.samples.node``: the generator of a GAN (gan_ring, wgan_gp: ``fake``);
2. a live training source that acts through a node (its ``action`` parameter, e.g. gym.rollout,
   gym.replay): the named node that action is computed from, the policy's logits or the Q-values
   (a2c/ppo: ``logits``, dqn: ``q``);
3. a spec with a recurrent cell module: that cell's step, ``(x, h) -> h'`` (tbptt_sine: ``cell``);
4. otherwise what each loss scores: the first argument of the loss's expression (of its call, when
   the loss is a call times a number), once each, in the order of the losses, when it is a node of
   the spec (xor, digits: ``logits``) or a module called on nodes of the spec (multitask:
   ``cls_head(h)`` and ``reg_head(h)``, the two heads).

A ``--node`` may name any node of the spec (nodes, losses, metrics), a recurrent cell module (its
step), or a module called on nodes of the spec, written as in the spec (``G(z)``, ``cls_head(h)``):
a new call of the module, sharing its parameters, named by that text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..compiler.result import Compiled
    from ..node import NodeId


class TargetError(Exception):
    """A --node that names nothing exportable (the message has the did-you-mean)."""


@dataclass
class Target:
    """One ONNX output: its name and the graph node computing it."""

    name: str
    node: NodeId


@dataclass
class Plan:
    """The outputs to export and the graph inputs that get names of their own (a cell step's
    fresh inputs; the spec's inputs are named after the spec)."""

    targets: list[Target] = field(default_factory=list)
    input_names: dict[int, str] = field(default_factory=dict)  # graph node index -> ONNX input name
    rule: str = ""  # which rule chose the default, for messages and the result


def choose(compiled: Compiled, names: list[str] | None) -> Plan:
    """The plan for ``--node`` names, or the default rule's when there are none."""
    if names:
        plan = Plan(rule="--node")
        for name in names:
            _add(plan, compiled, name)
        return plan
    return _default(compiled)


def _add(plan: Plan, compiled: Compiled, name: str) -> None:
    if any(t.name == name for t in plan.targets):
        raise TargetError(f"--node {name!r} is given twice")
    cell = _cell_modules(compiled)
    if name in cell:
        _cell_step(plan, compiled, name)
        return
    called = _module_call(compiled, name)
    if called is not None:
        plan.targets.append(Target(name, called))
        return
    if name in compiled.inputs:
        raise TargetError(f"--node {name!r} is an input of the spec; name a node computed from inputs")
    if name not in compiled.names:
        from ..suggest import did_you_mean_suffix

        raise TargetError(f"the spec has no node named {name!r}{did_you_mean_suffix(name, choices(compiled))}")
    plan.targets.append(Target(name, compiled.names[name]))


def choices(compiled: Compiled) -> list[str]:
    """What --node accepts, for did-you-mean: the spec's computed nodes, its cell modules, and what
    its losses score."""
    names = [n for n in compiled.names if n not in compiled.inputs]
    names += _cell_modules(compiled)
    names += [text for text in (_scored(compiled, loss) for loss in compiled.losses) if text and text not in names]
    return names


def _default(compiled: Compiled) -> Plan:
    spec = compiled.spec
    ev = spec.eval
    samples = getattr(ev, "samples", None) if ev is not None else None
    if samples is not None and samples.node in compiled.names:
        return Plan([Target(samples.node, compiled.names[samples.node])], rule="eval.samples.node")
    acted = _acting_node(compiled)
    if acted is not None:
        return Plan([Target(acted.name, acted)], rule="the node the live source's action is computed from")
    cells = _cell_modules(compiled)
    if cells:
        plan = Plan(rule="the recurrent cell's step")
        _cell_step(plan, compiled, cells[0])
        return plan
    plan = Plan(rule="what the losses score")
    for loss in compiled.losses:
        text = _scored(compiled, loss)
        if text is None or any(t.name == text for t in plan.targets):
            continue
        _add(plan, compiled, text)
    if not plan.targets:
        raise TargetError("the spec has no main output to export by default; name the node(s) with --node")
    return plan


def _acting_node(compiled: Compiled) -> NodeId | None:
    """The named node a live source's action node is computed from: follow the action node's first
    input until a node the spec names (categorical_sample(logits) -> logits, argmax(q) -> q)."""
    from ..data.sources import live_train_source

    src = live_train_source(compiled.spec)
    action = getattr(src, "action", None) if src is not None else None
    if not isinstance(action, str) or action not in compiled.names:
        return None
    g = compiled.graph
    rec = g.record(compiled.names[action])
    while rec.inputs:
        rec = rec.inputs[0]
        if rec.user_named and rec.name in compiled.names and rec.kind == "op":
            return g.node(rec.name)
    return None


def _scored(compiled: Compiled, loss: str) -> str | None:
    """The first argument of a loss's expression when it is a node of the spec or a module called
    on nodes of the spec, as written (``logits``, ``cls_head(h)``); else None."""
    import ast

    from ..spec.expr import ExprError, parse

    text = compiled.spec.losses.get(loss) if isinstance(compiled.spec.losses, dict) else None
    try:
        tree = parse(text) if isinstance(text, str) else None
    except ExprError:
        return None
    while True:  # a loss scaled by a number (64 * bce_with_logits(logits, x), -mean(...)) scores the same
        if isinstance(tree, ast.UnaryOp) and isinstance(tree.op, ast.USub):
            tree = tree.operand
        elif isinstance(tree, ast.BinOp) and isinstance(tree.left, ast.Constant):
            tree = tree.right
        elif isinstance(tree, ast.BinOp) and isinstance(tree.right, ast.Constant):
            tree = tree.left
        else:
            break
    if not isinstance(tree, ast.Call) or not tree.args:
        return None
    arg = tree.args[0]
    if isinstance(arg, ast.Name) and arg.id in compiled.names and arg.id not in compiled.inputs:
        return arg.id
    if isinstance(arg, ast.Call) and _module_call(compiled, ast.unparse(arg), build=False):
        return ast.unparse(arg)
    return None


def _module_call(compiled: Compiled, text: str, build: bool = True) -> Any:
    """``MODULE(NODE, ...)`` as a new call of a layers or subgraph module on nodes of the spec
    (the node it returns; with build=False, whether the text is such a call); None otherwise."""
    import ast

    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(tree, ast.Call) and isinstance(tree.func, ast.Name)) or tree.keywords:
        return None
    info = compiled.modules.get(tree.func.id)
    if info is None or info.kind not in ("layers", "subgraph") or info.call is None:
        return None
    args = [a.id for a in tree.args if isinstance(a, ast.Name) and a.id in compiled.names]
    if not args or len(args) != len(tree.args):
        return None
    if not build:
        return True
    from ..node import NodeId

    out = info.call(*[compiled.names[a] for a in args])
    if not isinstance(out, NodeId):
        raise TargetError(f"--node {text!r}: module {tree.func.id!r} gives several outputs; name one of its nodes")
    return out


def _cell_modules(compiled: Compiled) -> list[str]:
    return [name for name, info in compiled.modules.items() if info.kind == "cell"]


def _cell_step(plan: Plan, compiled: Compiled, module: str) -> None:
    """One step of a recurrent cell module on fresh graph inputs x and its states (h; h and c for
    an LSTM); the outputs are the new states, named MODULE.h (MODULE.c)."""
    from ..nn.cells import CELLS

    info = compiled.modules[module]
    defn = CELLS[str(info.spec.cell)]
    hidden = int(info.spec.hidden or 0)
    width = _cell_input_width(defn, hidden, {p.name.rpartition(".")[2]: p.shape for p in info.params})
    g = compiled.graph
    x = g.input(f"{module}/step/x", (None, width))
    states = [g.input(f"{module}/step/{s}", (None, hidden)) for s in defn.states]
    assert info.call is not None
    out: Any = info.call(x, *states)
    if hasattr(out, "values") and isinstance(out.values, dict):  # Outputs: a cell with several states
        outs = [out.values[s] for s in defn.states]
    else:
        outs = list(out) if isinstance(out, (tuple, list)) else [out]
    plan.input_names[x.index] = "x"
    for s, node in zip(defn.states, states):
        plan.input_names[node.index] = s
    for s, node in zip(defn.states, outs):
        plan.targets.append(Target(f"{module}.{s}", node))


def _cell_input_width(defn: Any, hidden: int, shapes: dict[str, tuple]) -> int:
    """The input width the cell's parameters were built for: the one that gives their shapes."""
    for width in sorted({d for s in shapes.values() for d in s if d is not None}):
        if {k: tuple(v) for k, v in defn.params(width, hidden).items()} == shapes:
            return width
    raise TargetError(f"cannot tell the input width of cell {defn.name!r} from its parameters")
