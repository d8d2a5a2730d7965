"""Names before lowering: a name defined twice (or hiding a function), and the order to build the
definitions in, each after the names it uses, with the circles among them reported."""

from __future__ import annotations

import ast

from ..spec import expr as X
from ..spec.expr import SPECIAL_FUNCTIONS
from .context import CompileContext


def check_duplicates(ctx: CompileContext) -> None:
    seen: dict[str, str] = {}
    for section in ("inputs", "modules", "nodes", "losses", "metrics"):
        for name in getattr(ctx.spec, section):
            if name in seen:
                ctx.error(
                    "E-DUP",
                    f"{name!r} is defined in both {seen[name]} and {section}",
                    (section, name),
                    key=True,
                    width=len(name),
                )
                ctx.broken.add(name)
            else:
                seen[name] = section
    for name in ctx.spec.modules:
        if name in ctx.ops or name in SPECIAL_FUNCTIONS:
            ctx.error(
                "E-DUP",
                f"the module name {name!r} hides the function {name}(); rename the module",
                ("modules", name),
                key=True,
                width=len(name),
            )
            ctx.broken.add(name)


def build_order(ctx: CompileContext) -> list[tuple[str, str]]:
    """Every definition, each after the names it uses, so that resolve's recursion stays as deep
    as one expression however long a chain of nodes is. Circles are found here, without
    recursion, and reported where the walk (in file order) enters them."""
    where = {name: section for section, table in ctx.sections.items() for name in table}
    uses: dict[str, list[str]] = {}
    for name, section in where.items():
        try:
            tree = X.parse(ctx.sections[section][name])
        except X.ExprError:
            uses[name] = []
            continue
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Name) and id(n) not in called and n.id in where and n.id != name
        ]
        uses[name] = [n.id for n in sorted(names, key=lambda n: n.col_offset)]  # in evaluation order
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for root in where:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(uses[root]))]
        while stack:
            name, deps = stack[-1]
            dep = next(deps, None)
            if dep is None:
                stack.pop()
                state[name] = 2
                order.append(name)
            elif dep not in state:
                state[dep] = 1
                stack.append((dep, iter(uses[dep])))
            elif state[dep] == 1 and dep not in ctx.broken:
                path_names = [n for n, _ in stack]
                report_cycle(ctx, path_names[path_names.index(dep) :] + [dep], where)
    return [(where[n], n) for n in order]


def report_cycle(ctx: CompileContext, cycle: list[str], where: dict[str, str]) -> None:
    shown = cycle if len(cycle) <= 9 else [*cycle[:4], "...", *cycle[-4:]]
    head = cycle[0]
    ctx.error(
        "E-CYCLE",
        "these definitions depend on each other in a circle: " + " -> ".join(shown),
        (where[head], head),
        key=True,
        width=len(head),
    )
    ctx.broken.update(cycle)
