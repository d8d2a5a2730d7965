"""Spec -> Graph + training plan, with every problem reported at once, as passes over one
``CompileContext``:

1. ``validate``: the YAML against the pydantic models, entry by entry, so that one broken entry does
   not hide the others' problems (what fails is marked broken and its dependents stay quiet);
2. ``resolve``: names defined twice, and the order to build the definitions in (circles reported);
3. ``lower``: expressions, function calls, ``grad``, ``scan`` and modules to Graph nodes (static
   shape inference happens as nodes are built: a shape error points at the sub-expression that
   failed), with the data section and the inputs bound first (``sources``, ``bind``);
4. ``bind``: losses and metrics, carries, a live source's nodes, copies, optimizers and schedules;
5. ``analyse``: per phase of the training schedule, which parameters each backward reaches under
   the phase's detach set, whether a backward needs values an earlier ``retain_graph: false``
   backward released, and which ``retain_graph: true`` nothing uses (a query: no plan is built
   unless a release might matter);
6. the unused checks, the memory estimate, and the schedule's lint warnings.

``summary`` and ``drawing`` read the compiled result (``Compiled``)."""

from __future__ import annotations

import contextlib
import os
import pathlib
from collections.abc import Sequence
from typing import Any

from .. import footprint, monitor, stopping
from ..safe_files import MAX_SPEC_BYTES, RefusedFile, human_size, read_regular
from ..spec.diagnostics import Diagnostic, Path, Report
from ..spec.overrides import note_origin, strings_in
from ..spec.yaml_loader import load
from .analyse import analyse_phases
from .bind import build_inputs, check_carries, check_eval, check_losses, check_metrics, finish_copies
from .context import CompileContext, Poisoned
from .init_check import check_init
from .layers import check_layers_unbuilt
from .lint import lint_schedule
from .lower import resolve_name
from .optimizers import build_optimizers, select_optimizer_params
from .phase_times import check_phase_times
from .resolve import build_order, check_duplicates
from .result import BackwardInfo, Compiled, ModuleInfo, PhaseInfo
from .sources import check_data, check_live_source
from .unused import check_unused
from .validate import validate

__all__ = [
    "BackwardInfo",
    "CompileContext",
    "Compiled",
    "ModuleInfo",
    "PhaseInfo",
    "compile_file",
    "compile_text",
    "run",
]

_SPEC_FILES = f"a spec is a regular YAML file of at most {human_size(MAX_SPEC_BYTES)} (see docs/inputs.md)"


def compile_file(
    path: str | pathlib.Path,
    overrides: list[tuple[str, Any]] | None = None,
    max_memory: int | None = None,
    allow_outside: bool = False,
    init: Sequence[str | os.PathLike[str]] = (),
) -> tuple[Compiled | None, Report]:
    """Compile the spec at path, with ``--set`` overrides (dotted path, value) applied first;
    ``max_memory`` bounds the memory estimate (bytes; default: the machine's, see footprint.py).
    The spec's data files must lie inside its folder unless ``allow_outside`` (docs/inputs.md).
    ``init``: checkpoints to load every module of the same name from (``--init``; relative to
    the current directory), after the spec's own ``init:`` entries."""
    p = pathlib.Path(path)
    try:
        raw = read_regular(p, MAX_SPEC_BYTES, "the spec")
    except RefusedFile as e:  # a FIFO would block, /dev/zero would never end: refused before reading
        report = Report(str(path), "")
        report.add(Diagnostic("E-YAML", f"cannot read the spec: {e.reason}", hint=_SPEC_FILES))
        return None, report
    except OSError as e:  # no text: the diagnostic can name the file only
        report = Report(str(path), "")
        report.add(Diagnostic("E-YAML", f"cannot read the spec: {e}"))
        return None, report
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:  # point at the first byte that is not UTF-8
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        report = Report(str(path), raw.decode("utf-8", errors="replace"))
        report.add(
            Diagnostic(
                "E-YAML", f"the spec is not UTF-8 text: byte {raw[e.start]:#04x} cannot be decoded", (), line, column
            )
        )
        return None, report
    folder = p.resolve().parent
    return compile_text(text, str(path), folder, overrides, max_memory, None if allow_outside else folder, init)


def compile_text(
    text: str,
    filename: str = "<spec>",
    base_dir: pathlib.Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    max_memory: int | None = None,
    data_root: pathlib.Path | None = None,
    init: Sequence[str | os.PathLike[str]] = (),
) -> tuple[Compiled | None, Report]:
    """Compile a spec; returns (compiled or None when there are errors, the full report). With a
    ``data_root``, the spec's data files must lie inside it (paths given with ``--set`` may not)."""
    report = Report(filename, text)
    located = load(text)
    report.extend(located.diagnostics)
    if any(d.code == "E-YAML" for d in located.diagnostics):
        return None, report
    if not isinstance(located.data, dict):
        line, col = located.at(())
        report.add(
            Diagnostic(
                "E-TYPE", "a spec is a mapping of sections (version, name, inputs, ...)", (), line or 1, col or 1
            )
        )
        return None, report
    written: list[tuple[Path, str]] = []
    if overrides:
        from ..spec.overrides import apply

        problems = apply(located.data, list(overrides), written)
        report.extend(problems)
        if problems:
            return None, report
    ctx = CompileContext(located, report, base_dir or pathlib.Path.cwd(), max_memory)
    ctx.cli_init = [os.fspath(p) for p in init]
    from ..data.files import confined_to  # the data package loads on the first compile, not on import

    trusted = strings_in([v for _, v in overrides or []])  # paths typed on the command line may lie anywhere
    confinement = confined_to(data_root, trusted) if data_root else contextlib.nullcontext()
    try:
        with confinement:
            compiled = run(ctx)
    except RecursionError:
        report.add(Diagnostic("E-CYCLE", "the spec nests too deeply to compile", (), 1, 1))
        compiled = None
    if written:
        note_origin(report.items, written)
    if report.errors:
        return None, report
    return compiled, report


# ------------------------------------------------------------------ pydantic errors -> diagnostics


def run(ctx: CompileContext) -> Compiled | None:
    """The passes, in order, over one context; None when there are errors (they are in the report)."""
    spec = validate(ctx)
    if spec is None:
        return None
    ctx.start(spec)
    check_duplicates(ctx)
    ctx.data_fields = check_data(ctx)
    ctx.inputs = build_inputs(ctx)
    for name, m in spec.modules.items():
        ctx.modules[name] = ModuleInfo(
            name, m, "copy" if m.copy_of else "layers" if m.layers is not None else "cell" if m.cell else "subgraph"
        )
    for section, name in build_order(ctx):
        with contextlib.suppress(Poisoned):
            resolve_name(ctx, name, (section, name), 0, 1)
    losses = {k: ctx.names[k] for k in spec.losses if k in ctx.names}
    metrics = {k: ctx.names[k] for k in spec.metrics if k in ctx.names}
    check_losses(ctx, losses)
    check_metrics(ctx, metrics)
    carries = check_carries(ctx)
    check_live_source(ctx)
    targets = finish_copies(ctx)
    opt_params = select_optimizer_params(ctx)
    optimizers, schedules = build_optimizers(ctx, opt_params)
    phases = analyse_phases(ctx, losses, opt_params, optimizers)
    check_phase_times(ctx)
    check_eval(ctx, losses, metrics)
    monitor.check(spec, ctx.broken, ctx.error)
    stopping.check(spec, ctx.broken, ctx.error)
    stopping.configure(spec, schedules)  # the value-following schedules take the monitor's direction
    check_layers_unbuilt(ctx)
    init = check_init(ctx)
    check_unused(ctx, opt_params, phases, targets)
    if ctx.report.errors:
        return None
    compiled = Compiled(
        spec=spec,
        graph=ctx.g,
        inputs=ctx.inputs,
        names=ctx.names,
        losses=losses,
        metrics=metrics,
        modules=ctx.modules,
        optimizers=optimizers,
        schedules=schedules,
        optimizer_params=opt_params,
        phases=phases,
        carries=carries,
        targets=targets,
        base_dir=ctx.base_dir,
        init=init,
        records={name: dict(r.values) for name, r in ctx.records.items()},
        defined_at=_defined_at(ctx),
    )
    over = footprint.over_limit(compiled, footprint.estimate(compiled, ctx.data_fields), ctx.limit)
    if over is not None:
        ctx.error("E-MEMORY", over[0], over[1], key=len(over[1]) == 2, hint=footprint.HINT)
        return None
    ctx.report.extend(lint_schedule(compiled, ctx.loc))  # legal but suspicious gradient setups (W- warnings)
    return compiled


def _defined_at(ctx: CompileContext) -> dict[str, str]:
    """Each named definition's position, "FILE:LINE:COL" of its key, for messages at run time."""
    out = {}
    for section, names in ctx.sections.items():
        for name in names:
            line, col = ctx.loc.at((section, name), key=True)
            if line is not None:
                out[name] = f"{ctx.report.filename}:{line}:{col}"
    return out
