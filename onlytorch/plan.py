"""Execution plans, computed once per key and cached by the Graph.

- ForwardPlan: the ancestors of some target nodes in topological order (node index order is one,
  since a node's inputs always exist before it), and for each position the intermediate values
  that no later node of this plan reads: what a no_grad forward may drop right there.
- Gradient subgraphs: ``build_gradients`` walks the nodes between a scalar y and targets xs in
  reverse order and asks each op's derivative rule for graph nodes. Detached nodes and ops without
  a derivative (stop_gradient, comparisons, integer inputs) are never walked through, so a cut
  branch simply is not part of the subgraph. Contributions are summed with ``add`` and reduced
  to the input's shape with ``sum_to`` where an op broadcast (the one unbroadcast step).
- BackwardPlan: the gradient nodes to run, the forward values they read, the forward nodes the
  backward went through (what retain_graph=False releases), and when each gradient buffer can
  be freed during the run.
- Each plan's ``big``: whether its largest matrix product is large enough for all cores
  (threads.py's policy; the graph sets the BLAS's thread count from it before the plan runs).
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .executor import _CONTEXT, RegisterProgram, Step, compile_steps, entry_nodes, fast_steps
from .node import Node, NodeId
from .ops.registry import VJPContext
from .threads import is_big, plan_batch

if TYPE_CHECKING:
    from .codegen import BackwardRunner, ForwardRunner
    from .graph import Graph


def ancestors(targets: list[Node]) -> list[Node]:
    """The targets and everything they depend on, in topological (index) order."""
    seen: dict[int, Node] = {}
    stack = list(targets)
    while stack:
        n = stack.pop()
        if n.index in seen:
            continue
        seen[n.index] = n
        stack.extend(p for p in n.inputs if p.index not in seen)
    return [seen[i] for i in sorted(seen)]


def _last_uses(nodes: list[Node], keep: set[int]) -> list[list[Node]]:
    """drops[i]: the non-leaf nodes (not in keep) whose last reader in ``nodes`` is nodes[i]."""
    last: dict[int, int] = {}
    for pos, n in enumerate(nodes):
        for p in n.inputs:
            last[p.index] = pos
    drops: list[list[Node]] = [[] for _ in nodes]
    by_index = {n.index: n for n in nodes}
    for idx, pos in last.items():
        reader = by_index.get(idx)
        if reader is not None and reader.op is not None and idx not in keep:
            drops[pos].append(reader)
    return drops


class ForwardPlan:
    __slots__ = ("big", "drops", "entries", "fast", "index_set", "leaves", "nodes", "pure", "steps", "targets")

    def __init__(self, targets: list[Node]) -> None:
        self.targets = targets
        self.nodes = ancestors(targets)
        self.index_set = frozenset(n.index for n in self.nodes)
        self.leaves = [n for n in self.nodes if n.op is None]
        # Indexed like the op nodes (the compiled steps), not like self.nodes.
        drops = _last_uses(self.nodes, {t.index for t in targets})
        self.drops = [d for n, d in zip(self.nodes, drops) if n.op is not None]
        self.entries = {train: entry_nodes(self.nodes, train) for train in (True, False)}
        self.steps: list[Step] | None = None  # compiled on the first forward that runs this plan
        # straight-line runners built on first use: [under no_grad (with drops), with grad].
        self.fast: list[ForwardRunner | None] = [None, None]
        # No op of the plan changes other nodes while it runs (batch norm's running statistics do).
        self.pure = not any(n.op is not None and n.op.writes for n in self.nodes)
        # Whether its matrix products are large enough for all cores (threads.py's policy).
        self.big = is_big(self.nodes, plan_batch(self.leaves))


def gradient_edges(n: Node, detached: Container[int] | None = None) -> list[tuple[int, Node]]:
    """The inputs a gradient can flow to from n (as (input position, input node)): none when n is
    detached or its op has no derivative; never an integer input or one the op reads only the shape
    of. ``detached``: node indices to treat as detached instead of the nodes' own flags (a query
    about another detach set, changing nothing)."""
    cut = n.detached if detached is None else n.index in detached
    if n.op is None or cut or n.op.vjp_rule is None:
        return []
    return [(i, p) for i, p in enumerate(n.inputs) if i not in n.op.nondiff and p.is_float and not n.shape_mask[i]]


@dataclass
class Flow:
    reached: list[bool]  # per x: whether a gradient of y flows to it
    path: list[Node]  # forward nodes the gradient flows through, y included, in topological order


def gradient_flow(y: Node, xs: list[Node], detached: Container[int] | None = None) -> Flow:
    """Where a gradient of y goes, as a pure query (no node is built, no flag changed): which xs it
    reaches and the nodes it flows through, with the nodes' own detach flags or the given set."""
    # Nodes whose value influences y along differentiable, non-detached edges.
    reach: dict[int, Node] = {y.index: y}
    stack = [y]
    while stack:
        n = stack.pop()
        for _, p in gradient_edges(n, detached):
            if p.index not in reach:
                reach[p.index] = p
                stack.append(p)
    # Of those, the ones that depend on some x: the path the gradient flows along.
    x_set = {x.index for x in xs}
    on_path: set[int] = set()
    for idx in sorted(reach):
        if idx in x_set or any(p.index in on_path for _, p in gradient_edges(reach[idx], detached)):
            on_path.add(idx)
    return Flow([x.index in on_path for x in xs], [reach[i] for i in sorted(on_path)])


def _vjp_context(g: Graph, n: Node, needs: tuple[bool, ...]) -> VJPContext:
    return VJPContext(
        g=g,
        out=NodeId(g, n.index),
        inputs=tuple(NodeId(g, p.index) for p in n.inputs),
        attrs=n.attrs,
        needs=needs,
        train=g.runtime.train,
    )


@dataclass
class Gradients:
    grads: list[NodeId | None]  # d y / d x for each x (None: unreachable)
    path: list[Node]  # forward nodes the gradient flows through, y included, in topological order
    first_new: int  # nodes with index >= first_new were built by this call


def build_gradients(g: Graph, y: Node, xs: list[Node]) -> Gradients:
    first_new = len(g._nodes)
    path = gradient_flow(y, xs).path
    on_path = {n.index for n in path}

    totals: dict[int, NodeId] = {}
    contributions: dict[int, list[NodeId]] = {}
    if y.index in on_path:
        contributions[y.index] = [g._const_like_ones(y)]
    for n in reversed(path):
        parts = contributions.pop(n.index, None)
        if not parts:
            continue
        start = len(g._nodes)
        total = parts[0]
        for part in parts[1:]:
            total = g.add(total, part)
        totals[n.index] = total
        edges = [(i, p) for i, p in gradient_edges(n) if p.index in on_path]
        if edges:
            needs = [False] * len(n.inputs)
            for i, _ in edges:
                needs[i] = True
            rule = n.op.vjp_rule if n.op is not None else None
            assert rule is not None  # gradient_edges returned edges, so n has a derivative rule
            in_grads = rule(_vjp_context(g, n, tuple(needs)), total)
            for i, p in edges:
                gi = in_grads[i]
                if gi is None:
                    continue
                if gi.shape != p.shape:
                    gi = g.sum_to(gi, NodeId(g, p.index))
                contributions.setdefault(p.index, []).append(gi)
        for made in g._nodes[start:]:
            if made.op is not None:
                made.grad_of = n
    grads = [totals.get(x.index) for x in xs]
    for node in g._nodes[first_new:]:
        node.hidden = True
    return Gradients(grads, path, first_new)


class BackwardPlan:
    """Everything a backward of y with respect to xs needs, computed once."""

    __slots__ = (
        "acc_runner",
        "big",
        "check",
        "compiled",
        "computed",
        "fast",
        "frees",
        "grads",
        "needed",
        "ownable",
        "path",
        "program",
        "released_by",
        "runner",
        "steps",
        "xs",
        "y",
    )

    def __init__(self, g: Graph, y: Node, xs: list[Node]) -> None:
        built = build_gradients(g, y, xs)
        self.y = y
        self.xs = xs
        self.grads = [None if gid is None else g._nodes[gid.index] for gid in built.grads]
        outputs = [n for n in self.grads if n is not None]
        # The gradient nodes whose values the run leaves behind for the targets, each once.
        self.computed = list({n.index: n for n in outputs if n.op is not None}.values())
        self.steps = [n for n in ancestors(outputs) if n.index >= built.first_new and n.op is not None]
        out_set = {n.index for n in outputs}
        step_set = {n.index for n in self.steps}
        self.frees = _last_uses(self.steps, out_set)
        # Forward values the gradient nodes read (never recomputed by a backward).
        needed: dict[int, Node] = {}
        for n in self.steps:
            for i, p in enumerate(n.inputs):
                if p.index not in step_set and p.op is not None and not n.shape_mask[i]:
                    needed[p.index] = p
        self.needed = [needed[i] for i in sorted(needed)]
        self.path = [n for n in built.path if n.op is not None and n is not y]
        # What a later backward's error says released the path's values, per kind of call.
        self.released_by = {
            kind: f"an earlier {kind} of {y.name!r} (retain_graph=False)" for kind in ("backward", "grad")
        }
        self.check = ForwardPlan([y])
        self.big = is_big(self.steps, plan_batch(self.check.leaves))
        self.compiled = compile_steps(g, self.steps)
        self.fast = fast_steps(self.compiled, self.frees)
        # The common case runs as a register program; plans with ops that see the graph, as steps.
        self.program = (
            RegisterProgram(self.compiled, self.frees, self.grads)
            if not any(how == _CONTEXT for _, _, how, _ in self.compiled)
            else None
        )
        # Runners of the program, built on first use: one returns the gradients (grad), one adds
        # them into the targets (backward); each becomes straight-line code once hot (codegen.py).
        self.runner: BackwardRunner | None = None
        self.acc_runner: BackwardRunner | None = None
        # A gradient array the targets may take over instead of copying it: computed by a step of
        # this plan for one target only, by an op that never hands back an input array, in the
        # target's dtype (the executor gives every value its node's dtype).
        shared = {gn.index for gn in outputs if sum(o is gn for o in outputs) > 1}
        self.ownable = [
            gn is not None
            and gn.index in step_set
            and gn.index not in shared
            and gn.op is not None
            and not gn.op.passes_input
            and gn.dtype == x.dtype
            for gn, x in zip(self.grads, xs)
        ]
