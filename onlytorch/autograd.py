"""Backward and grad: the gradient half of the Graph, as functions of the graph.

``backward`` runs the cached gradient subgraph (plan.BackwardPlan) for (loss, targets, detach set,
mode) and ADDS the results into the targets' gradients (Runtime.accumulate); ``grad`` returns
them instead, or with ``create_graph`` the gradient nodes themselves. Both check first that the
loss may be differentiated now (tracking on, a scalar, its value and its ancestors current) and
that the forward values the plan reads are held; unless ``retain_graph``, they then release the
intermediate values they went through. Graph's ``backward_nodes_ex`` and ``grad`` delegate here.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .codegen import tiered_backward
from .errors import GraphError, ReleasedValueError, StaleValueError
from .executor import run, run_fast
from .node import Node, NodeId
from .ops.shapes import fmt
from .plan import BackwardPlan, build_gradients
from .threads import apply as _set_threads
from .threads import state as _threads

if TYPE_CHECKING:
    from .graph import Graph

BY_RELEASE_VALUES = "release_values()"  # who released the values, for the error a later backward raises
_NO_CUT: frozenset[int] = frozenset()


def plan_key(g: Graph, y: Node, xs: list[Node], xs_key: tuple[int, ...] | None = None) -> tuple:
    """The cache key of a backward plan: (loss, targets, the detached ancestors of y, mode)."""
    cut: frozenset[int] = _NO_CUT
    if g._detached:
        anc = g._forward_plan([y]).index_set
        cut = frozenset(i for i in g._detached if i in anc)
    return (y.index, tuple([x.index for x in xs]) if xs_key is None else xs_key, cut, g.runtime.train)


def backward_plan(g: Graph, y: Node, xs: list[Node], xs_key: tuple[int, ...] | None = None) -> BackwardPlan:
    key = plan_key(g, y, xs, xs_key)
    plan = g._bwd_plans.get(key)
    if plan is None:
        plan = g._bwd_plans[key] = BackwardPlan(g, y, xs)
    return plan


def check_differentiable(g: Graph, y: Node, what: str) -> None:
    rt = g.runtime
    if not rt.grad_enabled:
        raise GraphError(
            f"{what} of {y.describe()} while gradient tracking is off (inside no_grad); run it outside the no_grad block"
        )
    if y.value is None:
        if y.released_by is not None:
            raise released(what, y, y)
        raise GraphError(f"{what}: {y.describe()} has no value; call forward_node({y.name!r}) first")
    require_scalar(y, what)
    if not y.tracked:
        raise GraphError(
            f"{what}: the value of {y.describe()} was computed under no_grad; "
            f"call forward_node({y.name!r}) with gradient tracking on first"
        )
    train = rt.train
    if y.fresh_at == (rt.clock, train):
        return
    for a in g._forward_plan([y]).nodes:
        if a.op is None:
            continue
        changed = next((p for p in (a.train_reads if train else a.inputs) if p.ver > a.ver), None)
        if changed is not None:
            raise StaleValueError(
                f"{what}: {changed.describe()} changed after {y.label()} was computed (by set_value, an optimizer "
                f"step or another forward); run forward_node({y.name!r}) again first"
            )
        if a.op.mode_dependent and a.mode != train:
            mode = "train" if a.mode else "eval"
            raise StaleValueError(
                f"{what}: {a.describe()} was computed in {mode} mode, but the graph is now in the other mode; "
                f"run forward_node({y.name!r}) again first"
            )


def require_scalar(y: Node, what: str) -> None:
    # The static shape decides: a loss with a batch axis is not a scalar, even for a batch of one.
    if y.shape and any(d != 1 for d in y.shape):
        shape = fmt(y.shape) if y.value is None or y.value.size == 1 else y.value.shape
        raise GraphError(f"{what} needs a scalar, but {y.describe()} has shape {shape}; reduce it first (g.mean)")


def check_needed(plan: BackwardPlan, kind: str) -> None:
    """A GraphError when a forward value that plan reads is not held; ``kind`` ("backward" or
    "grad") names the call."""
    for n in plan.needed:
        if n.value is None:
            what = f"{kind} of {plan.y.label()}"
            if n.released_by is not None:
                raise released(what, n, plan.y)
            raise GraphError(
                f"{what} needs the value of {n.describe()}, which is not held (dropped by a no_grad forward); "
                f"run forward_node({plan.y.name!r}) with gradient tracking on first"
            )


def released(what: str, n: Node, y: Node) -> ReleasedValueError:
    fix = f"run forward_node({y.name!r}) again"
    if n.released_by != BY_RELEASE_VALUES:
        fix = f"pass retain_graph=True to that earlier call, or {fix}"
    return ReleasedValueError(f"{what} needs the value of {n.describe()}, which {n.released_by} released; {fix}")


def run_backward(g: Graph, plan: BackwardPlan, kind: str) -> list[np.ndarray | None]:
    """Run plan and return the gradients; ``kind`` ("backward" or "grad") names the call in errors."""
    check_needed(plan, kind)
    want = _threads.big if plan.big else _threads.small
    if want != _threads.current:
        _set_threads(want)
    rt = g.runtime
    if plan.program is not None and not rt.anomaly:
        runner = plan.runner
        if runner is None:
            runner = plan.runner = tiered_backward(plan.program, functools.partial(setattr, plan, "runner"))
        return runner(rt)
    if rt.anomaly:
        run(rt, plan.compiled, rt.train, rt.grad_enabled, False, plan.frees)
    else:
        run_fast(rt, plan.fast, rt.train, rt.grad_enabled)
    # Two targets may share one gradient node (a + b): read them all before freeing any.
    out = [None if gn is None else gn.value for gn in plan.grads]
    rt.drop(plan.computed)
    return out


def backward(g: Graph, targets: NodeId | Sequence[NodeId], loss: NodeId, retain_graph: bool) -> None:
    """What Graph.backward_nodes_ex does (see its docstring)."""
    y = g._nodes[loss.index] if type(loss) is NodeId and loss.graph is g else g._node(loss)
    rt = g.runtime
    key = targets_key(g, targets)
    known = g._target_sets.get(key) if key is not None else None
    plans: dict[tuple[int, bool], BackwardPlan] | None = None
    if known is None:
        xs = unique_nodes(g, targets)
        xs_key = tuple([x.index for x in xs])
        if key is not None:
            g._target_sets[key] = (xs, xs_key, {})
    else:
        # The same targets passed unique_nodes before: what it checks (the nodes exist and
        # hold floats) cannot change.
        xs, xs_key, plans = known
    check_differentiable(g, y, "backward")
    if plans is not None and not g._detached:
        # Without detached nodes the plan's key is (loss, targets, mode): looked up directly.
        plan = plans.get((y.index, rt.train))  # type: ignore[assignment]
        if plan is None:
            plan = plans[(y.index, rt.train)] = backward_plan(g, y, xs, xs_key)
    else:
        plan = backward_plan(g, y, xs, xs_key)
    if plan.program is not None and not rt.anomaly:
        # The common case: the needed values held, then the program adds into the targets.
        check_needed(plan, "backward")
        want = _threads.big if plan.big else _threads.small
        if want != _threads.current:
            _set_threads(want)
        runner = plan.acc_runner
        if runner is None:
            runner = plan.acc_runner = tiered_backward(
                plan.program,
                functools.partial(setattr, plan, "acc_runner"),
                into=(plan.xs, plan.ownable, functools.partial(rt.accumulate, y, plan.xs, plan.ownable)),
            )
        runner(rt)
    else:
        rt.accumulate(y, plan.xs, plan.ownable, run_backward(g, plan, "backward"))
    if not retain_graph:
        rt.release(plan.path, plan.released_by["backward"])


def targets_key(g: Graph, targets: Any) -> tuple[int, ...] | None:
    """The indices of targets when they are all NodeIds of g (the usual call), else None: a key
    for the graph's cache of target sets."""
    if type(targets) is NodeId:
        return (targets.index,) if targets.graph is g else None
    if type(targets) is not list and type(targets) is not tuple:
        return None
    key = []
    for t in targets:
        if type(t) is not NodeId or t.graph is not g:
            return None
        key.append(t.index)
    return tuple(key)


def unique_nodes(g: Graph, targets: NodeId | Sequence[NodeId]) -> list[Node]:
    items = [targets] if isinstance(targets, (NodeId, str)) else targets
    nodes = g._nodes
    seen: dict[int, Node] = {}
    for t in items:
        n = nodes[t.index] if type(t) is NodeId and t.graph is g else g._node(t)
        if n.index not in seen:
            if n.dtype.kind != "f":
                raise GraphError(f"{n.describe()} holds integers and cannot have a gradient")
            seen[n.index] = n
    return list(seen.values())


def grad(
    g: Graph,
    y: NodeId,
    xs: NodeId | Sequence[NodeId],
    create_graph: bool,
    retain_graph: bool | None,
    allow_unused: bool,
) -> Any:
    """What Graph.grad does (see its docstring)."""
    single = isinstance(xs, NodeId)
    yn = g._node(y)
    xn = unique_nodes(g, xs)
    asked: list[Any] = [xs] if single else list(xs)  # type: ignore[arg-type]
    # One result per entry of xs, also when an entry repeats (as torch.autograd.grad).
    slot = {x.index: i for i, x in enumerate(xn)}
    order = [slot[g._node(x).index] for x in asked]
    if create_graph:
        grads = _gradient_nodes(g, yn, xn, allow_unused)
        return grads[0] if single else [grads[i] for i in order]
    check_differentiable(g, yn, "grad")
    plan = backward_plan(g, yn, xn)
    values = run_backward(g, plan, "grad")
    check_unused(yn, xn, values, allow_unused)
    out = [v if v is None or (own and v.base is None) else np.array(v) for v, own in zip(values, plan.ownable)]
    if not retain_graph:
        g.runtime.release(plan.path, plan.released_by["grad"])
    if single:
        return out[0]
    result = []
    for i in order:
        v = out[i]
        result.append(v if v is None or order.count(i) == 1 else v.copy())
    return result


def _gradient_nodes(g: Graph, yn: Node, xn: list[Node], allow_unused: bool) -> list[NodeId | None]:
    """grad(create_graph=True): the gradient nodes (built once per plan key), computed when y's
    value is current."""
    if not g.runtime.grad_enabled:
        raise GraphError(f"grad(create_graph=True) of {yn.describe()} inside no_grad; call it outside")
    require_scalar(yn, "grad")
    key = plan_key(g, yn, xn)
    grads = g._grad_nodes.get(key)
    if grads is None:
        grads = g._grad_nodes[key] = build_gradients(g, yn, xn).grads
    check_unused(yn, xn, grads, allow_unused)
    live = [gid for gid in grads if gid is not None]
    if live and yn.value is not None and yn.tracked:
        g.forward_node(live)
    return grads


def check_unused(y: Node, xs: list[Node], grads: Sequence[Any], allow_unused: bool) -> None:
    if allow_unused:
        return
    for x, gv in zip(xs, grads):
        if gv is None:
            raise GraphError(
                f"{x.describe()} is not reachable from {y.label()} (unrelated, or cut by a detach or stop_gradient); "
                "pass allow_unused=True to get None for it"
            )
