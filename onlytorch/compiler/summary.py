"""The compile report that ``onlytorch validate`` prints for a valid spec: modules and parameter
counts, the memory estimate (footprint.py), every named node's shape, and per phase what each
backward reaches and what each detach cuts off."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .. import phases
from ..ops.shapes import fmt
from ..optim.weights import WeightSchedule
from ..spec import names as N
from .lint import Flow, accumulated, simulate
from .result import describe_params

if TYPE_CHECKING:
    from .result import Compiled


def _count(params) -> int:  # type: ignore[no-untyped-def]
    return int(sum(int(np.prod(p.shape)) for p in params))


def summarize(compiled: Compiled, max_memory: int | None = None) -> str:
    """The report; ``max_memory`` is the bound the memory estimate is shown against (default: the machine's)."""
    from ..footprint import Limit, estimate

    spec = compiled.spec
    out = [
        f"spec {spec.name!r}: {len(compiled.graph.parameters())} parameter tensors, {_count(compiled.graph.parameters()):,} weights",
        estimate(compiled).summary(Limit.resolve(max_memory)),
    ]
    out.extend(_source_lines(compiled))
    if compiled.modules:
        out.append("")
        out.append(f"{'module':<16} {'kind':<8} {'weights':>9}  notes")
        for name, m in compiled.modules.items():
            notes = []
            if m.kind == "copy":
                src, sync = compiled.targets.get(name, (m.spec.copy_of, None))
                how = (
                    ""
                    if sync is None
                    else (
                        (f", sync every {sync.every} iterations" if sync.every > 1 else ", sync every iteration")
                        if sync.every
                        else f", Polyak tau={sync.tau}"
                    )
                )
                notes.append(f"target copy of {src} (not trained{how})")
            if m.calls > 1:
                notes.append(f"shared: called {m.calls} times")
            if m.states:
                notes.append(f"{_count(m.states):,} state values")
            if m.outputs:
                notes.append("outputs " + ", ".join(f"{k} {fmt(v)}" for k, v in m.outputs.items()))
            out.append(f"{name:<16} {m.kind:<8} {_count(m.params):>9,}  {'; '.join(notes)}")
    if compiled.init:
        from ..initfrom import describe_entry

        out.append("")
        out.extend(f"init: {describe_entry(entry)}" for entry in compiled.init)
    out.append("")
    out.append(f"{'node':<16} {'kind':<8} shape")
    for section, table in (
        ("input", spec.inputs),
        ("node", spec.nodes),
        ("loss", spec.losses),
        ("metric", spec.metrics),
    ):
        for name in N.node_names(table):  # mu, logvar: enc(x) lists mu and logvar
            node = compiled.names.get(name)
            if node is not None:
                out.append(f"{name:<16} {section:<8} {fmt(node.shape)}")
            for key, part in compiled.records.get(name, {}).items():  # a node holding several outputs
                picked = f'{name}["{key}"]'
                out.append(f"{picked:<16} {section:<8} {fmt(part.shape)}")
    for opt, params in compiled.optimizer_params.items():
        o = compiled.optimizers.get(opt)
        # Under a schedule the optimizer's current lr is the schedule's step-0 value (0 during a
        # warmup); the report states the declared base lr and names the schedule.
        sched = compiled.schedules.get(opt)
        lr = ""
        if o is not None:
            lr = f", lr {(sched.base_lr if sched is not None else o.lr):g}"
            if sched is not None:
                lr += f" with {spec.optimizers[opt].schedule.type}"
        out.append("")
        out.append(
            f"optimizer {opt} ({spec.optimizers[opt].type}{lr}) updates {describe_params(compiled, [p.name for p in params])}"
        )
    flow = simulate(compiled)
    carried = accumulated(compiled, flow)
    for index, ph in enumerate(compiled.phases):
        out.append("")
        extra = phases.notes(ph.spec, index)
        if ph.spec.repeat > 1:
            extra.append(f"repeat {ph.spec.repeat}")
        if ph.spec.epochs is not None:
            extra.append(f"{ph.spec.epochs} epochs of minibatches")
        if ph.detach:
            extra.append("detach " + ", ".join(d.name for d in ph.detach))
        if ph.step:
            extra.append("steps " + ", ".join(ph.step))
        if ph.spec.zero_grad != "before":
            extra.append(f"zero_grad {ph.spec.zero_grad}")
        out.append(f"phase {ph.name}" + (f" ({'; '.join(extra)})" if extra else ""))
        for i, b in enumerate(ph.backward, 1):
            retain = " [retain_graph]" if b.retain_graph else ""
            weight = f" x {_weight_text(b.weight)}" if b.weighted else ""
            out.append(
                f"  backward {i}: {b.loss}{weight}{retain} reaches {describe_params(compiled, [p.name for p in b.reached])}"
            )
        for d, cut in ph.cut.items():
            out.append(f"  detach {d} cuts off {describe_params(compiled, cut) if cut else 'no parameter'}")
        for o in ph.step:  # gradients that earlier phases left uncleared: visible where they are applied
            if (ph.name, o) in carried:
                rows = ", ".join(f"{loss} from phase {src}" for loss, src in carried[(ph.name, o)])
                out.append(f"  step {o} applies {rows}")
    idle = _idle(compiled, flow)
    if idle:
        out.append("")
        out.extend(idle)
    return "\n".join(out)


def _idle(compiled: Compiled, flow: Flow) -> list[str]:
    """'backbone (4 tensors): not updated during iterations 0-999' for each group of parameters that
    some phase moves, but no active phase moves during some stretch of the run."""
    schedule = [ph.spec for ph in compiled.phases]
    if not any(phases.timed(s) for s in schedule):
        return []
    movers: dict[str, set[int]] = {}  # parameter -> the phases whose steps move it
    for (pi, _), names in flow.moved.items():
        for n in names:
            movers.setdefault(n, set()).add(pi)
    train = compiled.spec.train
    stretches = phases.stretches(schedule, train.steps if train is not None else None)
    spans: dict[str, list[list[int | None]]] = {}  # parameter -> [first, end] of each idle span
    for s in stretches:
        for n, ps in movers.items():
            if ps & s.present:
                continue
            mine = spans.setdefault(n, [])
            if mine and mine[-1][1] == s.first:
                mine[-1][1] = s.end  # joins the span before it
            else:
                mine.append([s.first, s.end])
    groups: dict[str, list[str]] = {}
    for n, idle in spans.items():
        words = ", ".join(phases.Stretch(int(a or 0), b, frozenset()).words() for a, b in idle)
        groups.setdefault(words, []).append(n)
    return [f"{describe_params(compiled, names)}: not updated during {words}" for words, names in groups.items()]


def _weight_text(weight: float | WeightSchedule) -> str:
    """'0.5', or a schedule in words ('linear 0->1 over 2000 steps')."""
    return weight.describe() if isinstance(weight, WeightSchedule) else f"{weight:g}"


def _source_lines(compiled: Compiled) -> list[str]:
    """What the training source says of itself (a gym source: what it does each iteration, and
    which nodes it runs)."""
    from ..data.sources import train_source

    found = train_source(compiled.spec)
    return found[0].describe(found[1], compiled) if found is not None else []
