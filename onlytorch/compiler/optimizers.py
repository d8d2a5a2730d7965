"""The optimizers section: the parameters each optimizer updates (module names, parameter names or
globs), its hyper-parameters and schedule checked (against the classes' declarations, nothing
built), and the optimizers and schedules built."""

from __future__ import annotations

import fnmatch
from typing import Any

from ..errors import GraphError
from ..node import NodeId
from ..spec.diagnostics import Path, did_you_mean
from ..spec.pydantic_errors import value_at
from .context import CompileContext


def select(ctx: CompileContext, patterns: list[str], path: Path) -> list[NodeId] | None:
    """Parameters named by module names, parameter names or globs."""
    params = ctx.g.parameters()
    by_name = {p.name: p for p in params}
    out: dict[str, NodeId] = {}
    ok = True
    for i, pat in enumerate(patterns):
        hit: list[NodeId] = []
        if pat in ctx.modules:
            hit = list(ctx.modules[pat].params)
            if not hit and ctx.modules[pat].call is None:
                if not ctx.used_by_broken(pat):
                    ctx.error("W-UNUSED", f"module {pat} is never called, so it has no parameters", path + (i,))
                continue
        elif pat in ctx.broken:
            ok = False
            continue
        else:
            mods = [m for m in ctx.modules if fnmatch.fnmatchcase(m, pat)]
            hit = [p for m in mods for p in ctx.modules[m].params] + [
                p for n, p in by_name.items() if fnmatch.fnmatchcase(n, pat)
            ]
            if not hit:
                ctx.error(
                    "E-NAME",
                    f"{pat!r} names no module or parameter",
                    path + (i,),
                    hint=did_you_mean(pat, [*ctx.modules, *by_name]),
                )
                ok = False
        for p in hit:
            out.setdefault(p.name, p)
    return list(out.values()) if ok else None


def select_optimizer_params(ctx: CompileContext) -> dict[str, list[NodeId]]:
    copies = {p.name for m in ctx.modules.values() if m.kind == "copy" for p in m.params}
    out = {}
    for name, opt in ctx.spec.optimizers.items():
        params = select(ctx, list(opt.params), ("optimizers", name, "params"))
        if params is None:
            ctx.broken.add(name)
            continue
        bad = [p.name for p in params if p.name in copies]
        if bad:
            ctx.error(
                "E-PHASE",
                f"optimizer {name} would train target-copy parameters ({', '.join(bad[:3])}); a copy_of module follows its source by sync",
                ("optimizers", name, "params"),
            )
        out[name] = params
    return out


def build_optimizers(ctx: CompileContext, opt_params: dict[str, list[NodeId]]) -> tuple[dict[str, Any], dict[str, Any]]:
    from ..optim import OPTIMIZERS, SCHEDULES

    optimizers: dict[str, Any] = {}
    schedules: dict[str, Any] = {}
    for name, opt in ctx.spec.optimizers.items():
        path: Path = ("optimizers", name)
        hyper = opt.model_dump(exclude={"type", "params", "schedule"})
        if "betas" in hyper and hyper["betas"] is not None:
            hyper["betas"] = tuple(hyper["betas"])
        sched = opt.schedule.model_dump(exclude={"type"}) if opt.schedule is not None else None
        # The hyper-parameters are checked against the classes' declarations first (nothing is
        # built), so that they are checked even when the optimizer's own parameters cannot be
        # selected.
        cls = OPTIMIZERS[opt.type]
        try:
            checked = cls.check_hyper(hyper)
        except GraphError as e:
            ctx.error("E-TYPE", f"optimizer {name}: {e}", _hyper_path(ctx, path, str(e)))
            continue
        if opt.schedule is not None:
            try:
                SCHEDULES[opt.schedule.type].check_for(sched or {}, cls, checked["lr"])
            except GraphError as e:
                ctx.error(
                    "E-TYPE", f"schedule of optimizer {name}: {e}", _hyper_path(ctx, path + ("schedule",), str(e))
                )
                continue
        if name not in opt_params or not opt_params[name]:
            continue
        try:
            optimizers[name] = OPTIMIZERS[opt.type](ctx.g, opt_params[name], **hyper)
        except GraphError as e:
            ctx.error("E-TYPE", f"optimizer {name}: {e}", path)
            continue
        if opt.schedule is not None:
            try:
                schedules[name] = SCHEDULES[opt.schedule.type](optimizers[name], **(sched or {}))
            except GraphError as e:
                ctx.error(
                    "E-TYPE", f"schedule of optimizer {name}: {e}", _hyper_path(ctx, path + ("schedule",), str(e))
                )
    return optimizers, schedules


def _hyper_path(ctx: CompileContext, path: Path, message: str) -> Path:
    """The key of the hyper-parameter a message names (``lr``, ``betas``, ...), else path."""
    import re

    given = value_at(ctx.loc.data, path)
    if isinstance(given, dict):
        for key in given:
            if key not in ("type", "params", "schedule") and re.search(rf"\b{re.escape(str(key))}\b", message):
                return path + (key,)
    return path
