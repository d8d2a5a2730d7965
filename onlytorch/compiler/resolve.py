"""Names before lowering: a name defined twice (or hiding a function), and the order to build the
definitions in, each after the names it uses, with the circles among them reported."""

from __future__ import annotations

import ast

from ..spec import expr as X
from ..spec import names as N
from ..spec.diagnostics import Path
from ..spec.expr import SPECIAL_FUNCTIONS
from .context import CompileContext


def check_duplicates(ctx: CompileContext) -> None:
    seen: dict[str, Path] = {}  # name -> (section, the key that defines it)
    for section in ("inputs", "modules", "nodes", "losses", "metrics"):
        for key in getattr(ctx.spec, section):
            for name in N.defined(key) if section == "nodes" else [key]:
                if name in seen:
                    _defined_twice(ctx, name, seen[name], (section, key))
                else:
                    seen[name] = (section, key)
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
    for mname, m in ctx.spec.modules.items():  # a subgraph's own nodes, unpacking keys among them
        mine: dict[str, Path] = {}
        for key in m.nodes:
            for name in N.defined(key):
                where = ("modules", mname, "nodes", key)
                if name in mine:
                    _defined_twice(ctx, name, mine[name], where, module=mname)
                else:
                    mine[name] = where


def _defined_twice(ctx: CompileContext, name: str, first: Path, again: Path, module: str | None = None) -> None:
    """E-DUP at the second definition of name (each key that defines it: a plain key, or a key that
    unpacks several outputs into names); the names of a broken unpacking key stay quiet."""
    (section, key), (first_section, first_key) = again[-2:], first[-2:]
    unpacking = [k for k in (first_key, key) if N.unpacking(k) is not None]
    if again == first:
        message = f"{name!r} is named twice in {key!r}"
    elif section == first_section:
        table = f"module {module}'s nodes" if module else section
        message = f"{name!r} is defined twice in {table}: by {first_key!r} and by {key!r}"
    else:
        message = f"{name!r} is defined in both {first_section} and {section}"
        message += f" (by {unpacking[0]!r})" if unpacking else ""
    hint = "rename one of them; _ skips an output nobody uses" if unpacking else None
    ctx.error("E-DUP", message, again, key=True, hint=hint, width=len(key))
    if module is not None:
        ctx.broken.add(module)
        return
    ctx.broken.add(name)
    for k in unpacking:
        ctx.broken.update([k, *N.defined(k)])


def build_order(ctx: CompileContext) -> list[tuple[str, str]]:
    """Every definition, each after the names it uses, so that resolve's recursion stays as deep
    as one expression however long a chain of nodes is. Circles are found here, without
    recursion, and reported where the walk (in file order) enters them. A definition that reads a
    parameter with param("M.NAME") comes, where it can, after the definitions that call M (a
    layer list makes its parameters at its first call): an order wish, never a circle."""
    where = {name: section for section, table in ctx.sections.items() for name in table}
    where.update({name: "nodes" for name in ctx.unpacked})  # each name an unpacking key defines
    trees: dict[str, ast.expr | None] = {}
    for name, section in where.items():
        try:
            trees[name] = X.parse(ctx.sections[section][name]) if name not in ctx.unpacked else None
        except X.ExprError:
            trees[name] = None
    uses: dict[str, list[tuple[str, bool]]] = {}  # name -> (dependency, whether it is a use by name)
    for name, tree in trees.items():
        if tree is None:
            uses[name] = [(ctx.unpacked[name], True)] if name in ctx.unpacked else []
            continue
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        names = [
            n
            for n in ast.walk(tree)
            if isinstance(n, ast.Name) and id(n) not in called and n.id in where and n.id != name
        ]
        uses[name] = [(n.id, True) for n in sorted(names, key=lambda n: n.col_offset)]  # in evaluation order
    for name, later in _param_order(ctx, trees).items():
        uses[name] += [(d, False) for d in later]
    order: list[str] = []
    state: dict[str, int] = {}  # 1: being visited, 2: done
    for root in where:
        if root in state:
            continue
        state[root] = 1
        stack = [(root, iter(uses[root]), True)]
        while stack:
            name, deps, _ = stack[-1]
            dep, hard = next(deps, (None, True))
            if dep is None:
                stack.pop()
                state[name] = 2
                order.append(name)
            elif dep not in state:
                state[dep] = 1
                stack.append((dep, iter(uses[dep]), hard))
            elif state[dep] == 1 and hard and dep not in ctx.broken:
                path_names = [n for n, _, _ in stack]
                at = path_names.index(dep)
                if all(h for _, _, h in stack[at + 1 :]):  # a circle of uses by name, not an order wish
                    report_cycle(ctx, path_names[at:] + [dep], where)
    return [(where[n], n) for n in order]


def _param_order(ctx: CompileContext, trees: dict[str, ast.expr | None]) -> dict[str, list[str]]:
    """For each definition that reads param("M...."), directly or through a subgraph module it
    calls, the other definitions that call M (directly or through subgraph modules)."""
    modules = ctx.spec.modules

    def scan_tree(tree: ast.expr) -> tuple[set[str], set[str]]:
        calls, params = set(), set()
        for n in ast.walk(tree):
            if not isinstance(n, ast.Call) or not isinstance(n.func, ast.Name):
                continue
            if n.func.id in modules:
                calls.add(n.func.id)
            elif n.func.id == "scan" and n.args and isinstance(n.args[0], ast.Name):
                calls.add(n.args[0].id)
            elif n.func.id == "param" and n.args and isinstance(n.args[0], ast.Constant):
                params.add(str(n.args[0].value).split(".", 1)[0])
        return calls, params

    inner: dict[str, tuple[set[str], set[str]]] = {}
    for mname, m in modules.items():
        texts = [*m.nodes.values(), *(m.output.values() if isinstance(m.output, dict) else [m.output or ""])]
        calls, params = set(), set()
        for text in texts:
            try:
                c, p = scan_tree(X.parse(text))
            except X.ExprError:
                continue
            calls |= c
            params |= p
        inner[mname] = (calls, params)

    def closure(calls: set[str]) -> set[str]:
        seen, todo = set(), list(calls)
        while todo:
            mname = todo.pop()
            if mname in seen or mname not in inner:
                continue
            seen.add(mname)
            todo.extend(inner[mname][0])
        return seen

    builds: dict[str, set[str]] = {}
    needs: dict[str, set[str]] = {}
    for name, tree in trees.items():
        calls, params = scan_tree(tree) if tree is not None else (set(), set())
        builds[name] = closure(calls)
        needs[name] = params.union(*(inner[mname][1] for mname in builds[name]))
    return {
        name: [other for other in trees if other != name and builds[other] & wanted]
        for name, wanted in needs.items()
        if wanted
    }


def report_cycle(ctx: CompileContext, cycle: list[str], where: dict[str, str]) -> None:
    shown = [f"({n})" if N.unpacking(n) else n for n in cycle]  # an unpacking key: (mu, logvar)
    shown = shown if len(shown) <= 9 else [*shown[:4], "...", *shown[-4:]]
    at = ctx.key_of(where[cycle[0]], cycle[0])
    ctx.error(
        "E-CYCLE",
        "these definitions depend on each other in a circle: " + " -> ".join(shown),
        at,
        key=True,
        width=len(at[-1]),
    )
    ctx.broken.update(cycle)
