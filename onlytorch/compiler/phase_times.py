"""The checks of the phases' keys over time (onlytorch/phases.py states the rules): a range that
ends before it starts (E-RANGE), a phase that never runs within ``train.steps`` (W-NEVER-RUNS), and
``accumulate`` or ``batch: new`` where the trainer cannot give them a meaning (E-PHASE, E-ARG)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .. import phases

if TYPE_CHECKING:
    from ..spec.diagnostics import Path
    from .context import CompileContext


def check_phase_times(ctx: CompileContext) -> None:
    train = ctx.spec.train
    if train is None:
        return
    windowed = any(i.window for i in ctx.spec.inputs.values())
    for pi, ph in enumerate(train.schedule):
        path: Path = ("train", "schedule", ctx.phase_index[pi] if ctx.phase_index else pi)
        if ph.until is not None and ph.until <= ph.start:
            ctx.error(
                "E-RANGE",
                f"phase {ph.name}: until ({ph.until}) is not after start ({ph.start}), so the phase never runs",
                path + ("until",),
                hint="until is the first iteration the phase no longer runs: give until > start",
            )
        elif train.steps is not None and phases.first_run(ph, train.steps) is None:
            ctx.error(
                "W-NEVER-RUNS",
                f"phase {ph.name} starts at iteration {ph.start}, but the run has {train.steps} iterations "
                f"(0 to {train.steps - 1}): it never runs",
                path + ("start",),
                hint=f"give start a value below {train.steps}, or raise train.steps",
            )
        if ph.accumulate > 1 and ph.epochs is not None:
            ctx.error(
                "E-ARG",
                f"phase {ph.name}: give 'accumulate' (micro-batches per step) or 'epochs' (one step per minibatch "
                "of each pass), not both",
                path + ("accumulate",),
                key=True,
            )
        if windowed and ph.accumulate > 1:
            ctx.error(
                "E-PHASE",
                f"phase {ph.name}: accumulate with windowed inputs (truncated BPTT): every run of an iteration "
                "sees the iteration's window, so the micro-batches would all be the same window",
                path + ("accumulate",),
                key=True,
                hint="remove accumulate, or raise data.batch_size (or the window) instead",
            )
        if windowed and pi > 0 and ph.batch == "new":
            ctx.error(
                "E-PHASE",
                f"phase {ph.name}: batch: new with windowed inputs (truncated BPTT): every phase of an iteration "
                "sees the iteration's window of the current batch",
                path + ("batch",),
                hint="remove batch: new (phases after the first see the same window)",
            )
