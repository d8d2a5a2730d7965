"""The last pass: parameters no phase updates and modules nothing calls (W-UNUSED)."""

from __future__ import annotations

from typing import Any

from ..node import NodeId
from .context import CompileContext
from .result import PhaseInfo


def check_unused(
    ctx: CompileContext, opt_params: dict[str, list[NodeId]], phases: list[PhaseInfo], targets: dict[str, Any]
) -> None:
    trained: set[str] = set()
    for ph in phases:
        reached = {p.name for b in ph.backward for p in b.reached}
        for o in ph.step:
            trained |= {p.name for p in opt_params.get(o, []) if p.name in reached}
    copies = {p.name for m in ctx.modules.values() if m.kind == "copy" for p in m.params}
    copies |= ctx.loaded  # loaded from a checkpoint and kept as it is: a teacher
    if ctx.spec.train is not None and not ctx.report.errors:
        idle: dict[str, list[str]] = {}  # module -> its parameters no phase updates
        for p in ctx.g.parameters():
            if p.name not in trained and p.name not in copies:
                idle.setdefault(p.name.split(".", 1)[0], []).append(p.name)
        for module, names in idle.items():
            where = ("modules", module) if module in ctx.spec.modules else ("optimizers",)
            what = f"parameter {names[0]} is" if len(names) == 1 else f"parameters {', '.join(names)} are"
            ctx.error(
                "W-UNUSED",
                f"{what} never updated by any phase",
                where,
                key=module in ctx.spec.modules,
                width=len(module),
            )
    for name, m in ctx.modules.items():
        # a module whose parameters param(...) reads without calling it is used
        idle_module = m.call is None and not m.params and m.kind != "copy"
        if idle_module and name not in ctx.broken and not ctx.used_by_broken(name):
            ctx.error("W-UNUSED", f"module {name} is never called", ("modules", name), key=True, width=len(name))
