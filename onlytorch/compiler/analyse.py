"""The analysis pass, a pure query over the built graph: per phase of the training schedule, which
parameters each backward reaches under the phase's detach set, which parameters each detach cuts
off, whether a phase steps an optimizer no backward reaches, whether a backward needs forward values
an earlier ``retain_graph: false`` backward releases (E-RELEASED) and which ``retain_graph: true``
keeps values nothing later needs (W-RETAIN). Reach and release follow ``plan.gradient_flow``,
which builds nothing; a backward plan (gradient nodes) is built only to learn exactly which
forward values a later backward reads, when the cheap bound says it might read a released one."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .. import monitor
from ..errors import GraphError
from ..graph import Graph
from ..node import NodeId
from ..optim.weights import WeightSchedule
from ..plan import gradient_flow
from ..spec.diagnostics import Path, did_you_mean
from .context import CompileContext
from .optimizers import _hyper_path as hyper_path
from .optimizers import select

if TYPE_CHECKING:
    from ..plan import BackwardPlan
from .result import BackwardInfo, PhaseInfo


def analyse_phases(
    ctx: CompileContext, losses: dict[str, NodeId], opt_params: dict[str, list[NodeId]], optimizers: dict[str, Any]
) -> list[PhaseInfo]:
    train = ctx.spec.train
    if train is None:
        return []
    phases = []
    seen: set[str] = set()
    weight_names: set[str] = set()
    for pi, ph in enumerate(train.schedule):
        path: Path = ("train", "schedule", ctx.phase_index[pi] if ctx.phase_index else pi)
        if ph.name in seen:
            ctx.error("E-DUP", f"two phases are called {ph.name!r}", path + ("name",))
        elif (reserved := monitor.reserved_phase_name(ph.name)) is not None:
            ctx.error("E-DUP", reserved, path + ("name",), hint="give the phase another name")
        if ph.epochs is not None and "repeat" in ph.model_fields_set:
            ctx.error(
                "E-ARG",
                f"phase {ph.name}: give 'repeat' (runs per iteration) or 'epochs' (passes over the data), not both",
                path + ("epochs",),
                key=True,
            )
        seen.add(ph.name)
        ok = True
        detach = []
        for i, d in enumerate(ph.detach):
            if d in ctx.names:
                detach.append(ctx.names[d])
            elif d in ctx.records:  # a node holding several outputs: each of them is detached
                detach.extend(ctx.records[d].values.values())
            elif d not in ctx.broken:
                ctx.error(
                    "E-NAME",
                    f"detach: unknown node {d!r}",
                    path + ("detach", i),
                    hint=did_you_mean(d, ctx.known_names()),
                )
                ok = False
            else:
                ok = False
        steps = []
        for i, o in enumerate(ph.step):
            if o in ctx.broken:
                ok = False
            elif o not in ctx.spec.optimizers:
                ctx.error(
                    "E-NAME",
                    f"step: unknown optimizer {o!r}",
                    path + ("step", i),
                    hint=did_you_mean(o, ctx.spec.optimizers),
                )
                ok = False
            elif o not in optimizers:
                ok = False
            else:
                steps.append(o)
        default_wrt = list({p.name: p for o in steps for p in opt_params.get(o, [])}.values())
        backwards = []
        for bi, b in enumerate(ph.backward):
            bpath = path + ("backward", bi)
            if b.loss not in losses:
                if b.loss not in ctx.broken:
                    hint = did_you_mean(b.loss, ctx.spec.losses)
                    what = "is a metric, not a loss" if b.loss in ctx.spec.metrics else "is not a loss"
                    ctx.error("E-NAME", f"backward: {b.loss!r} {what}", bpath + ("loss",), hint=hint)
                ok = False
                continue
            if b.wrt is not None:
                targets = select(ctx, list(b.wrt), bpath + ("wrt",))
                if targets is None:
                    ok = False
                    continue
            else:
                targets = default_wrt
                if not targets and ok:
                    ctx.error(
                        "E-PHASE",
                        f"phase {ph.name}: backward of {b.loss} has no targets: give 'wrt', or 'step' an optimizer",
                        bpath,
                    )
                    ok = False
                    continue
            weight = declared_weight(ctx, b.weight, bpath + ("weight",))
            if weight is None:
                ok = False
                continue
            info_b = BackwardInfo(b.loss, targets, b.retain_graph, weight, losses[b.loss])
            if info_b.weighted or ph.accumulate > 1:
                info_b.weight_node = weight_input(ctx, f"{ph.name}/{b.loss}", weight_names)
                info_b.loss_node = ctx.g.mul(losses[b.loss], info_b.weight_node)
            backwards.append(info_b)
        info = PhaseInfo(ph.name, ph, detach, backwards, steps)
        if ok:
            analyse_phase(ctx, info, path, opt_params)
        phases.append(info)
    return phases


def declared_weight(ctx: CompileContext, weight: Any, path: Path) -> float | WeightSchedule | None:
    """A backward's weight as the trainer evaluates it: the number, or the schedule built from
    its keys (checked as the learning-rate schedule it reuses checks them); None after a
    located error."""
    if not isinstance(weight, BaseModel):
        return float(weight)
    try:
        return WeightSchedule(weight.type, weight.model_dump(exclude={"type"}))  # type: ignore[attr-defined]
    except GraphError as e:
        ctx.error("E-TYPE", f"weight schedule: {e}", hyper_path(ctx, path, str(e)))
        return None


def weight_input(ctx: CompileContext, label: str, taken: set[str]) -> NodeId:
    """The scalar input a backward's weight is fed through (a 0-d value of the graph's dtype, so
    that a constant weight multiplies exactly as the constant node it replaces did). Its name
    holds ':' and '/', which no spec name can, and it is in no spec table: the compile report's
    node list and the drawing, which list the spec's names, do not show it."""
    name = f"{label}:weight"
    k = 1
    while name in taken:  # the same loss twice in a phase, or two phases of one name (E-DUP)
        k += 1
        name = f"{label}:weight{k}"
    taken.add(name)
    return ctx.g.input(name, shape=())


def reach(g: Graph, loss: NodeId, targets: list[NodeId], detached: set[int]) -> list[NodeId]:
    """The targets a backward of loss reaches with exactly the nodes of index in detached detached."""
    flow = gradient_flow(g.record(loss), [g.record(t) for t in targets], detached)
    return [t for t, hit in zip(targets, flow.reached) if hit]


def analyse_phase(ctx: CompileContext, info: PhaseInfo, path: Path, opt_params: dict[str, list[NodeId]]) -> None:
    g = ctx.g
    detached = {d.index for d in info.detach}
    released: list[set[int]] = []  # per backward: the forward values it releases without retain_graph
    bounds: list[set[int]] = []  # per backward: every forward value its derivative rules may read
    for b in info.backward:
        y = g.record(b.loss_node)
        flow = gradient_flow(y, [g.record(t) for t in b.targets], detached)
        b.reached = [t for t, hit in zip(b.targets, flow.reached) if hit]
        released.append({n.index for n in flow.path if n.op is not None and n is not y})
        bounds.append({y.index} | {n.index for n in flow.path} | {p.index for n in flow.path for p in n.inputs})
    # What each detach cuts: parameters a backward's loss reaches without it but not with it.
    everything = g.parameters()
    for d in info.detach:
        cut: list[str] = []
        for b in info.backward:
            with_cut = {p.name for p in reach(g, b.loss_node, everything, detached)}
            free = reach(g, b.loss_node, everything, {x.index for x in info.detach if x != d})
            cut += [p.name for p in free if p.name not in with_cut and p.name not in cut]
        info.cut[g.record(d).name] = cut
    reached = {p.name for b in info.backward for p in b.reached}
    for i, o in enumerate(info.step):
        names = [p.name for p in opt_params.get(o, [])]
        if names and not any(n in reached for n in names):
            cuts = [d for d, ps in info.cut.items() if any(n in ps for n in names)]
            why = f": {', '.join(cuts)} {'is' if len(cuts) == 1 else 'are'} detached" if cuts else ""
            ctx.error(
                "E-PHASE",
                f"phase {info.name} steps {o}, but no backward of the phase reaches its parameters{why}",
                path + ("step", i),
                hint="check the phase's detach list and the backward's wrt",
            )
    check_released(ctx, info, path + ("backward",), released, bounds)


def backward_plan(g: Graph, loss: NodeId, targets: list[NodeId], detach: list[NodeId]) -> BackwardPlan:
    """The plan of a backward of loss to targets with the detach list detached (its gradient nodes
    are built), for what the analysis must know exactly of the forward values a backward reads.
    It is the graph's own cached plan, so the training run that follows reuses it."""
    from ..autograd import backward_plan as cached_plan

    for d in detach:
        g.detach_node(d)
    try:
        return cached_plan(g, g.record(loss), [g.record(t) for t in targets])
    finally:
        for d in detach:
            g.attach_node(d)


def check_released(
    ctx: CompileContext, info: PhaseInfo, bpath: Path, released: list[set[int]], bounds: list[set[int]]
) -> None:
    """E-RELEASED and W-RETAIN. What a later backward needs is the forward values its derivative rules
    read (its plan's ``needed``) and its loss; that set lies inside bounds[j], so where an earlier
    release misses the bound, no plan is built."""
    g = ctx.g
    needs: dict[int, set[int]] = {}

    def later_needs(j: int) -> set[int]:
        if j not in needs:
            b = info.backward[j]
            plan = b.plan = backward_plan(g, b.loss_node, b.targets, info.detach)
            needs[j] = {n.index for n in plan.needed} | {g.record(b.loss_node).index}
        return needs[j]

    def hits(k: int, j: int) -> set[int]:
        return released[k] & later_needs(j) if released[k] & bounds[j] else set()

    for k, b in enumerate(info.backward):
        later = range(k + 1, len(info.backward))
        if not b.retain_graph:
            for j in later:
                hit = sorted(hits(k, j))
                if hit:
                    shown = ", ".join(g.record(NodeId(g, i)).label() for i in hit[:3])
                    ctx.error(
                        "E-RELEASED",
                        f"phase {info.name}: backward {j + 1} ({info.backward[j].loss}) needs values that backward {k + 1} ({b.loss}) releases: {shown}",
                        bpath + (j,),
                        hint=f"add retain_graph: true to backward {k + 1}",
                    )
                    break
        elif not any(hits(k, j) for j in later):
            ctx.error(
                "W-RETAIN",
                f"phase {info.name}: retain_graph on backward {k + 1} ({b.loss}) keeps values no later backward of the phase needs (wasted memory)",
                bpath + (k, "retain_graph"),
                hint="remove retain_graph: true",
            )
