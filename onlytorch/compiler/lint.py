"""Gradient setups that are legal but almost surely wrong, found by a query over the compiled phases.

The trainer's rules (onlytorch/train.py) decide what a phase's gradients are made of:

- an iteration runs the phases active at it (``start``, ``until``, ``every``; onlytorch/phases.py);
  a phase with ``batch: new`` (the first phase's default) draws a fresh batch for its first run,
  one with ``batch: same`` (the later phases' default) reuses the batch the previous phase ended
  on (it draws when no phase has drawn yet in the iteration); each further run of a phase
  (``repeat`` or ``epochs``) and each further micro-batch of ``accumulate`` draws a new one, except
  with windowed inputs (truncated BPTT), where every run of the iteration sees the same window;
  noise inputs are resampled for every run;
- gradients accumulate until a phase clears them (``zero_grad: before`` each run's backward calls,
  ``after`` each run's steps, ``never``); an optimizer step applies whatever has accumulated on its
  parameters, whichever phase put it there.

``simulate`` follows two iterations of the schedule under those rules (the second shows what
carries over the wrap-around; with phases over time, two iterations of each combination of phases
that runs in one iteration, so that phases that never run together never meet) and records, for every step, which backward calls, on which batch,
the stepped optimizer applies. ``lint_schedule`` turns that into warnings:

- ``W-DOUBLE-BATCH``: one step applies the gradient of the same loss on the same batch twice
  (a ``zero_grad: never`` phase followed by a phase that backpropagates the same loss: the last
  micro-batch of an accumulation counts twice). Losses that read no data input are exempt: noise
  is fresh for every run, and a loss of the parameters alone has no batch.
- ``W-GRAD-DISCARDED``: a backward call's gradient is cleared (``zero_grad: before`` of a later
  phase, or ``after`` with no step using it) before any step of an optimizer holding its parameters
  applies it: an accumulation that a stepping phase with the default ``zero_grad: before`` wipes.
- ``W-STEP-ROLE``: in phase Q an optimizer o steps only on losses that another optimizer o' steps
  on, while elsewhere o steps on a loss N that o' never does, and N (and one of the former) depend on
  o''s parameters with nothing detached. o and o' are then the two sides of a game (a GAN's
  discriminator and generator) and in Q o is stepped on the other side's objective. Alternating
  tasks stay silent (a second task's loss does not depend on the first task's head), and so does a
  loss both sides minimise next to their own (InfoGAN's information term).
- ``W-DOUBLE-STEP``: two optimizers (or one listed twice) stepped in one phase both update a
  parameter, so it moves twice on the same gradient.
- ``W-SHARED-PARAM``: two optimizers both update a parameter, in different phases (each with its
  own learning rate and moment estimates). Only parameters that both really update count: an
  optimizer that holds a parameter but never steps on a gradient of it does not move it; and
  optimizers whose phases never run in the same iteration (one takes over from the other: a
  fine-tuning phase with its own learning rate) do not count.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .. import phases
from ..spec.diagnostics import Diagnostic, Path
from .analyse import reach
from .result import describe_params

if TYPE_CHECKING:
    from ..node import NodeId
    from ..spec import schema as S
    from ..spec.yaml_loader import Located
    from .result import Compiled


@dataclass(frozen=True)
class Contribution:
    """One backward call's gradient, as it sits in the accumulated gradients."""

    phase: int  # index in compiled.phases
    backward: int  # index in the phase's backward list
    loss: str
    batch: int  # the batch it was computed on; a fresh number when the loss reads no data input
    params: frozenset[str]  # parameter names it reaches


@dataclass
class Flow:
    """What every optimizer step of the schedule applies."""

    # (phase index, optimizer) -> the contributions its steps apply to that optimizer's parameters
    applied: dict[tuple[int, str], list[Contribution]] = field(default_factory=dict)
    # (phase index, optimizer) -> the parameters of that optimizer its steps move
    moved: dict[tuple[int, str], set[str]] = field(default_factory=dict)
    # (later phase, its backward) -> (the earlier contribution, the repeated one, the optimizer stepping both)
    twice: dict[tuple[int, int], tuple[Contribution, Contribution, str]] = field(default_factory=dict)
    # (phase, backward) -> the phase whose clearing threw that backward's gradient away before any step
    # of an optimizer holding its parameters applied it
    discarded: dict[tuple[int, int], int] = field(default_factory=dict)
    # the combinations of phases that run in one iteration (all of them, unless phases have ranges)
    together: list[tuple[int, ...]] = field(default_factory=list)


def _runs(spec: Any) -> int:
    """Runs of a phase to simulate: two stand for any number above one (every further run is alike).
    An ``epochs`` phase counts as drawing new minibatches (a pass over the data has several)."""
    return 2 if spec.epochs is not None else min(spec.repeat, 2)


def _data_inputs(compiled: Compiled) -> set[str]:
    return {n for n, i in compiled.spec.inputs.items() if i.from_ and not i.from_.startswith("noise.")}


def _reads_data(compiled: Compiled, loss: NodeId, data: set[str]) -> bool:
    g = compiled.graph
    return any(a.kind == "input" and a.name in data for a in g.forward_order([loss]))


def simulate(compiled: Compiled) -> Flow:
    """Two iterations of the schedule, following which batch each backward sees and what each step
    applies; with phases over time (start, until, every), two iterations of each combination of
    phases that runs together (onlytorch/phases.py), each from cleared gradients."""
    flow = Flow()
    train = compiled.spec.train
    flow.together = phases.together([ph.spec for ph in compiled.phases], train.steps if train is not None else None)
    for combo in flow.together:
        _simulate(compiled, flow, combo)
    return flow


def _simulate(compiled: Compiled, flow: Flow, combo: tuple[int, ...]) -> None:
    windowed = any(i.window for i in compiled.spec.inputs.values())
    data = _data_inputs(compiled)
    held = {o: {p.name for p in ps} for o, ps in compiled.optimizer_params.items()}
    reads = {
        (pi, bi): _reads_data(compiled, b.loss_node, data)
        for pi, ph in enumerate(compiled.phases)
        for bi, b in enumerate(ph.backward)
    }
    fresh = iter(range(1 << 62))
    pending: list[Contribution] = []
    used_by_a_step: set[Contribution] = set()
    stepped = {p for ps in held.values() for p in ps}

    def clear(by: int) -> list[Contribution]:
        for k in pending:
            if k not in used_by_a_step and k.params & stepped:
                flow.discarded.setdefault((k.phase, k.backward), by)
        return []

    for _ in range(2):
        batch: int | None = None  # nothing drawn yet in this iteration
        for pi in combo:
            ph = compiled.phases[pi]
            mode = phases.batch_mode(ph.spec, pi)
            for run in range(_runs(ph.spec)):
                if ph.spec.zero_grad == "before":
                    pending = clear(pi)
                for micro in range(min(ph.spec.accumulate, 2)):
                    if batch is None or ((run > 0 or micro > 0 or mode == "new") and not windowed):
                        batch = next(fresh)
                    for bi, b in enumerate(ph.backward):
                        if b.weight == 0.0 or not b.reached:
                            continue
                        on = batch if reads[(pi, bi)] else next(fresh)
                        pending.append(Contribution(pi, bi, b.loss, on, frozenset(p.name for p in b.reached)))
                for o in ph.step:
                    mine = held.get(o, set())
                    used = [k for k in pending if k.params & mine]
                    used_by_a_step.update(used)
                    seen = flow.applied.setdefault((pi, o), [])
                    seen.extend(k for k in used if k not in seen)
                    flow.moved.setdefault((pi, o), set()).update(n for k in used for n in k.params & mine)
                    for i, first in enumerate(used):
                        for again in used[i + 1 :]:
                            same = first.loss == again.loss and first.batch == again.batch
                            if same and first.params & again.params & mine:
                                flow.twice.setdefault((again.phase, again.backward), (first, again, o))
                if ph.spec.zero_grad == "after":
                    pending = clear(pi)


def accumulated(compiled: Compiled, flow: Flow | None = None) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """For the compile report: (phase, optimizer) -> [(loss, source phase)] where a step applies
    gradients that an earlier phase left (not cleared), in the order they were added."""
    flow = simulate(compiled) if flow is None else flow
    out: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for (pi, o), ks in flow.applied.items():
        if any(k.phase != pi for k in ks):
            rows: list[tuple[str, str]] = []
            for k in ks:
                row = (k.loss, compiled.phases[k.phase].name)
                if row not in rows:
                    rows.append(row)
            out[(compiled.phases[pi].name, o)] = rows
    return out


# ------------------------------------------------------------------ the warnings


def lint_schedule(compiled: Compiled, located: Located) -> list[Diagnostic]:
    """The W-DOUBLE-BATCH, W-GRAD-DISCARDED, W-STEP-ROLE, W-DOUBLE-STEP and W-SHARED-PARAM warnings of a
    compiled spec."""
    if not compiled.phases:
        return []
    flow = simulate(compiled)
    out: list[Diagnostic] = []

    def warn(code: str, message: str, path: Path, hint: str, width: int = 1) -> None:
        line, col = located.at(path)
        out.append(Diagnostic(code, message, path, line, col, hint, width))

    _double_batch(compiled, flow, warn)
    _discarded(compiled, flow, warn)
    _step_roles(compiled, flow, warn)
    _shared(compiled, flow, warn)
    return out


def _phase_path(pi: int) -> Path:
    return ("train", "schedule", pi)


def _double_batch(compiled: Compiled, flow: Flow, warn: Any) -> None:
    phases = compiled.phases
    for (pi, bi), (first, again, o) in sorted(flow.twice.items()):
        loss, here, there = again.loss, phases[pi].name, phases[first.phase].name
        if first.phase == pi and first.backward == bi:
            why = "each run of the phase sees the same window of the windowed inputs"
            message = f"phase {here} backpropagates {loss} on the same batch in two runs before the gradients are cleared ({why}): {o} steps with that batch counted twice"
            hint = "clear the gradients in each run (zero_grad: before or after), or remove the repeat"
        elif first.phase == pi:
            message = f"phase {here} backpropagates {loss} twice on the same batch (backward {first.backward + 1} and {bi + 1}): {o} steps with that batch counted twice"
            hint = "remove one of the two backward calls, or give them wrt lists that do not overlap"
        else:
            kept = " (zero_grad: never)" if phases[first.phase].spec.zero_grad == "never" else ""
            message = (
                f"phase {here} backpropagates {loss} again on a batch phase {there}{kept} already backpropagated "
                f"it on, with no clearing in between: {o} steps with that micro-batch counted twice (the first run "
                f"of a phase reuses the batch the previous phase ended on)"
            )
            hint = _double_batch_hint(compiled, phases[first.phase].spec, there, here, o)
        warn("W-DOUBLE-BATCH", message, (*_phase_path(pi), "backward", bi), hint)


def _double_batch_hint(compiled: Compiled, acc: S.PhaseSpec, there: str, here: str, o: str) -> str:
    """An accumulation (``repeat: K`` with ``zero_grad: never``) followed by a stepping phase is what
    ``accumulate: K`` does right; clearing first would then discard the accumulation (W-GRAD-DISCARDED),
    and windowed inputs cannot accumulate (E-PHASE), so neither is offered where it is wrong."""
    windowed = any(inp.window for inp in compiled.spec.inputs.values())
    if acc.zero_grad == "never" and acc.repeat > 1 and not windowed:
        k = acc.repeat
        return (
            f"to accumulate {k} micro-batches, make phases {there} and {here} one phase with accumulate: {k} and "
            f"step: [{o}] (one step on the mean of their gradients, as with one batch {k} times as large); or, to "
            f"step on exactly the sum phase {there} accumulated, give this backward weight: 0"
        )
    return (
        f"to step on exactly the micro-batches phase {there} accumulated, give this backward weight: 0; "
        "or clear them first with zero_grad: before"
    )


def _discarded(compiled: Compiled, flow: Flow, warn: Any) -> None:
    phases = compiled.phases
    for (pi, bi), by in sorted(flow.discarded.items()):
        loss, here, there = phases[pi].backward[bi].loss, phases[pi].name, phases[by].name
        when = "before its backward calls" if phases[by].spec.zero_grad == "before" else "after its steps"
        message = (
            f"the gradient of {loss} that phase {here} accumulates is cleared by phase {there} (zero_grad: "
            f"{phases[by].spec.zero_grad}, {when}) before any step applies it: that backward changes nothing"
        )
        if by == pi:
            hint = (
                f"give phase {here} zero_grad: never so that a later phase's step applies it, or step in phase {here}"
            )
        else:
            hint = (
                f"give phase {there} zero_grad: after (it then clears after its own step, so what phase {here} "
                f"accumulated is applied first)"
            )
        warn("W-GRAD-DISCARDED", message, (*_phase_path(pi), "backward", bi), hint)


def _depends(compiled: Compiled, loss: str, params: list[NodeId]) -> bool:
    """Whether loss depends on any of params, with nothing detached."""
    return bool(params) and bool(reach(compiled.graph, compiled.losses[loss], params, set()))


def _step_roles(compiled: Compiled, flow: Flow, warn: Any) -> None:
    phases = compiled.phases
    objective: dict[tuple[int, str], list[str]] = {}  # (phase, optimizer) -> the losses its steps apply
    applies: dict[str, dict[str, list[int]]] = {}  # optimizer -> loss -> the phases where its steps apply it
    for (pi, o), ks in flow.applied.items():
        for k in ks:
            if k.loss not in objective.setdefault((pi, o), []):
                objective[(pi, o)].append(k.loss)
            where = applies.setdefault(o, {}).setdefault(k.loss, [])
            if pi not in where:
                where.append(pi)
    depends: dict[tuple[str, str], bool] = {}

    def dep(loss: str, o: str) -> bool:
        if (loss, o) not in depends:
            depends[(loss, o)] = _depends(compiled, loss, compiled.optimizer_params[o])
        return depends[(loss, o)]

    for (qi, o), foreign in objective.items():
        for other, theirs in applies.items():
            # here o takes nothing but other's losses, and elsewhere a loss of its own that other never
            # takes; both sides depend on other's parameters: a game, and o is on the wrong side here
            if other == o or not foreign or any(f not in theirs for f in foreign):
                continue
            own = [n for n in applies[o] if n not in theirs and dep(n, other)]
            if not own or not any(dep(f, other) for f in foreign):
                continue
            ph = phases[qi].name
            elsewhere = sorted({phases[i].name for n in own for i in applies[o][n]})
            both = describe_params(
                compiled, [p.name for p in compiled.optimizer_params[o] + compiled.optimizer_params[other]]
            )
            mine = describe_params(compiled, sorted(flow.moved.get((qi, o), set())))
            losses = "the loss" if len(foreign) == 1 else "the losses"
            warn(
                "W-STEP-ROLE",
                f"phase {ph} steps {o} on {', '.join(foreign)}, {losses} {other} minimises, while phase "
                f"{', '.join(elsewhere)} steps {o} on {', '.join(own)}: both sides depend on {both}, in opposite "
                f"roles, so here {o} moves {mine} to minimise {other}'s {losses[4:]}",
                (*_phase_path(qi), "step", phases[qi].step.index(o)),
                f"remove {o} from this step list, so that phase {ph} trains only {other} on {', '.join(foreign)}",
                len(o),
            )
            break


def _selects(compiled: Compiled, pattern: str) -> set[str]:
    """The parameter names an optimizer's params entry selects (as the compiler's select does)."""
    if pattern in compiled.modules:
        return {p.name for p in compiled.modules[pattern].params}
    hit = {p.name for m, info in compiled.modules.items() if fnmatch.fnmatchcase(m, pattern) for p in info.params}
    return hit | {p.name for p in compiled.graph.parameters() if fnmatch.fnmatchcase(p.name, pattern)}


def _shared(compiled: Compiled, flow: Flow, warn: Any) -> None:
    phases = compiled.phases
    together: set[frozenset[str]] = set()
    for pi, ph in enumerate(phases):
        for j, second in enumerate(ph.step):
            for first in ph.step[:j]:
                both = flow.moved.get((pi, first), set()) & flow.moved.get((pi, second), set())
                if not both:
                    continue
                together.add(frozenset((first, second)))
                if first == second:
                    message = f"phase {ph.name} lists {first} twice in its step: {describe_params(compiled, sorted(both))} move twice per run on the same gradient"
                    hint = f"remove {second} from this step list"
                else:
                    message = (
                        f"phase {ph.name} steps {first} and {second}, which both hold {describe_params(compiled, sorted(both))}: "
                        "each step applies the same gradient, so those parameters move twice per run"
                    )
                    hint = f"give each parameter to one optimizer (remove it from the params of {first} or {second})"
                warn("W-DOUBLE-STEP", message, (*_phase_path(pi), "step", j), hint, len(second))
                break
    updated: dict[str, dict[str, list[str]]] = {}  # optimizer -> parameter -> phases that move it
    movers: dict[str, set[int]] = {}  # optimizer -> the phases where it moves a parameter
    for (pi, o), names in flow.moved.items():
        for n in names:
            updated.setdefault(o, {}).setdefault(n, []).append(phases[pi].name)
        if names:
            movers.setdefault(o, set()).add(pi)
    order = list(compiled.spec.optimizers)
    for j, second in enumerate(order):
        for first in order[:j]:
            common = sorted(set(updated.get(first, {})) & set(updated.get(second, {})))
            if not common or frozenset((first, second)) in together:
                continue
            if not any(movers[first] & set(c) and movers[second] & set(c) for c in flow.together):
                continue  # one optimizer takes over from the other (their phases never run together)
            entries = list(compiled.spec.optimizers[second].params)
            at = next((i for i, pat in enumerate(entries) if _selects(compiled, pat) & set(common)), 0)
            where = [
                f"{o} in phase{'s' if len(ph) > 1 else ''} {', '.join(ph)}"
                for o in (first, second)
                for ph in [sorted({p for n in common for p in updated[o][n]})]
            ]
            warn(
                "W-SHARED-PARAM",
                f"optimizers {first} and {second} both update {describe_params(compiled, common)} ({where[0]}, {where[1]}): "
                "each applies its own learning rate and moment estimates to them",
                ("optimizers", second, "params", at),
                "give each parameter to one optimizer; to train a shared module on two phases' losses, "
                "step the one optimizer that holds it in both phases",
                len(str(entries[at])) if entries else 1,
            )
