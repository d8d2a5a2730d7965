"""Binding what the lowering built to the rest of the spec: the inputs (before lowering), what an
input carries to the next step, losses and metrics that must be scalars, the eval section's names,
and each copy_of module tied to its source's parameters."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from .. import footprint, nn
from ..node import NodeId
from ..ops.shapes import fmt
from ..spec import schema as S
from ..spec.diagnostics import did_you_mean
from .context import CompileContext
from .sources import check_input_source, live_source


def build_inputs(ctx: CompileContext) -> dict[str, NodeId]:
    inputs: dict[str, NodeId] = {}
    ctx.unfed = set()
    for name, spec in ctx.spec.inputs.items():
        if name in ctx.broken:
            continue
        path = ("inputs", name)
        shape = (None, *spec.shape)
        dtype = "int64" if spec.dtype == "int64" else None
        if spec.from_ is not None:
            check_input_source(ctx, name, spec, path)
        inputs[name] = ctx.g.input(name, shape=shape, dtype=dtype)
        ctx.names[name] = inputs[name]
        too_big = ctx.budget.values(f"input {name}", [ctx.g.record(inputs[name])])
        if too_big is not None:
            where = path + ("shape",) if "shape" in (ctx.loc.data.get("inputs", {}).get(name) or {}) else path
            ctx.error("E-MEMORY", too_big, where, hint=footprint.HINT)
            ctx.broken.add(name)  # what reads it stays quiet
            del inputs[name], ctx.names[name]
    return inputs


def check_carries(ctx: CompileContext) -> dict[str, NodeId]:
    carries = {}
    for name, spec in ctx.spec.inputs.items():
        if spec.carry is None or name not in ctx.inputs:
            continue
        path = ("inputs", name, "carry")
        node = ctx.names.get(spec.carry)
        if node is None and ctx.several_outputs(spec.carry, path, "carry"):
            continue
        if node is None:
            if spec.carry not in ctx.broken:
                ctx.error(
                    "E-NAME",
                    f"carry: unknown node {spec.carry!r}",
                    path,
                    hint=did_you_mean(spec.carry, ctx.known_names()),
                )
            continue
        inp = ctx.inputs[name]
        if tuple(node.shape) != tuple(inp.shape):
            ctx.error(
                "E-SHAPE",
                f"input {name} {fmt(inp.shape)} carries {spec.carry} {fmt(node.shape)}: the shapes must be equal",
                path,
            )
            continue
        carries[name] = node
    return carries


def check_losses(ctx: CompileContext, losses: dict[str, NodeId]) -> None:
    for name, node in list(losses.items()):
        if any(d != 1 for d in node.shape):
            ctx.error(
                "E-LOSS",
                f"loss {name} must be a scalar, but has shape {fmt(node.shape)}",
                ("losses", name),
                hint="reduce it, e.g. mean(...)",
            )
            del losses[name]  # no backward can run on it; the phases that use it stay quiet
            ctx.broken.add(name)


def check_metrics(ctx: CompileContext, metrics: dict[str, NodeId]) -> None:
    for name, node in metrics.items():
        if any(d != 1 for d in node.shape):
            ctx.error(
                "E-LOSS",
                f"metric {name} must be a scalar, but has shape {fmt(node.shape)}",
                ("metrics", name),
                hint="reduce it, e.g. mean(...)",
            )


def check_eval(ctx: CompileContext, losses: dict[str, NodeId], metrics: dict[str, NodeId]) -> None:
    ev = ctx.spec.eval
    if ev is None:
        return
    if (
        ctx.spec.data is not None
        and live_source(ctx) is None
        and getattr(ctx.spec.data, ev.split) is None
        and f"<data.{ev.split}>" not in ctx.broken
    ):
        ctx.error("E-DATA", f"eval uses the {ev.split} split, which data does not define", ("eval", "split"))
    for i, name in enumerate(ev.metrics or []):
        if name not in metrics and name not in losses and name not in ctx.broken:
            ctx.error(
                "E-NAME",
                f"eval: unknown metric {name!r}",
                ("eval", "metrics", i),
                hint=did_you_mean(name, [*metrics, *losses]),
            )
    reported: set[str] = set()
    if ev.samples is not None:
        node = ctx.names.get(ev.samples.node)
        if node is None:
            several = ctx.several_outputs(ev.samples.node, ("eval", "samples", "node"), "eval.samples")
            if not several and ev.samples.node not in ctx.broken:
                ctx.error(
                    "E-NAME",
                    f"eval.samples: unknown node {ev.samples.node!r}",
                    ("eval", "samples", "node"),
                    hint=did_you_mean(ev.samples.node, ctx.known_names()),
                )
        else:
            reported = check_sample_conditions(ctx, ev.split, ev.samples.node, node)
    check_evaluated_fields(ctx, reported)


def check_evaluated_fields(ctx: CompileContext, reported: set[str]) -> None:
    """An evaluation feeds every data input from the split it evaluates (eval.split, and the
    monitor's split during training): a split from another source must have their fields. Inputs
    already ``reported`` (a conditional generator's, E-SAMPLES) are not reported twice."""
    from .. import monitor

    ev = ctx.spec.eval
    if ev is None or live_source(ctx) is not None:
        return
    splits: dict[str, tuple[object, ...]] = {ev.split: ("eval", "split")}
    m = monitor.resolve(ctx.spec)
    if m is not None and m.on_data and ctx.spec.train is not None and ctx.spec.train.eval_every:
        splits.setdefault(m.split, ("train", "monitor", "split") if m.declared_split else ("data", m.split))
    for split, where in splits.items():
        fields = ctx.data_fields.get(split)
        if fields is None:
            continue  # no such split: its own diagnostic
        missing = missing_fields(ctx.spec, fields, ctx.unfed | reported)
        if missing:
            who = "eval" if split == ev.split else "train.monitor"
            ctx.error(
                "E-DATA",
                f"{who} evaluates {lacking_fields(split, missing, fields)}",
                where,
                hint=f"give the {split} split a source with the same fields, e.g. {{from_split: train, fraction: 0.2}}",
            )


def missing_fields(spec: S.Spec, fields: Iterable[str], skip: Collection[str] = ()) -> dict[str, str]:
    """The data inputs that an evaluation of a split with these ``fields`` cannot feed (an evaluation
    feeds every data input from the split it evaluates), each with the field it reads; inputs in
    ``skip`` are left out. The compiler's rule for eval.split and the monitor's split, and
    ``onlytorch eval --split``'s (onlytorch.app.evaluate_checkpoint)."""
    have = set(fields)
    return {
        name: field
        for name, inp in spec.inputs.items()
        if inp.from_ and not inp.from_.startswith("noise.") and name not in skip
        for field in [inp.from_.partition(".")[2]]
        if field not in have
    }


def lacking_fields(split: str, missing: dict[str, str], fields: Iterable[str]) -> str:
    """What is said of a split that lacks the ``missing`` fields (see missing_fields)."""
    what = ", ".join(f"{n} reads {f!r}" for n, f in missing.items())
    return (
        f"the {split} split, which lacks fields that data inputs read ({what}; it has: {', '.join(fields)}): "
        "an evaluation feeds every data input from the split it evaluates"
    )


def check_sample_conditions(ctx: CompileContext, split: str, name: str, node: NodeId) -> set[str]:
    """A conditional generator (a sample node that reads data inputs) is fed eval.split's rows
    (onlytorch.evaluation.sample_conditions): that split must have the fields, whole per row.
    Returns the inputs reported."""
    where = ("eval", "samples", "node")
    reads = {a.name for a in ctx.g.forward_order([node]) if a.kind == "input"}
    data_inputs = {
        n: i for n, i in ctx.spec.inputs.items() if n in reads and i.from_ and not i.from_.startswith("noise.")
    }
    fields = ctx.data_fields.get(split)
    reported: set[str] = set()
    if fields is None or not data_inputs:
        return reported  # no data inputs, or eval.split (or the data) has its own diagnostic
    for inp_name, inp in data_inputs.items():
        field = (inp.from_ or "").partition(".")[2]
        if inp.window is not None:
            ctx.error(
                "E-SAMPLES",
                f"eval.samples: {name} reads input {inp_name}, a window of a sequence; "
                "a conditional generator is fed whole rows of the evaluated split",
                where,
                hint=f"generate from inputs without window, or leave {inp_name} out of {name}",
            )
        elif field not in fields and inp_name not in ctx.unfed:
            ctx.error(
                "E-SAMPLES",
                f"eval.samples: {name} reads input {inp_name} (field {field!r}), which the evaluated {split} "
                f"split does not have (it has: {', '.join(fields)}); samples are drawn with eval.split's fields",
                where,
                hint=f"set eval.split to a split that has {field!r}, or give the {split} split a source with it",
            )
        else:
            continue
        reported.add(inp_name)
    return reported


def finish_copies(ctx: CompileContext) -> dict[str, tuple[str, S.SyncSpec | None]]:
    targets = {}
    for m in ctx.modules.values():
        if m.kind != "copy":
            continue
        src = ctx.modules.get(m.spec.copy_of or "")
        if src is None or src.name in ctx.broken:
            continue
        if m.call is None:
            if not ctx.used_by_broken(m.name):
                ctx.error(
                    "W-UNUSED",
                    f"target module {m.name} is never called",
                    ("modules", m.name),
                    key=True,
                    width=len(m.name),
                )
            continue
        if len(src.params) != len(m.params) or any(a.shape != b.shape for a, b in zip(src.params, m.params)):
            ctx.error(
                "E-MODULE",
                f"{m.name} must be called with inputs shaped like {src.name}'s so that their parameters match",
                ("modules", m.name, "copy_of"),
            )
            continue
        nn.copy_parameters(ctx.g, src.params, m.params)
        targets[m.name] = (src.name, m.spec.sync)
    return targets
