"""The project's structure, checked (issue 11): sizes of files, classes and functions; Graph's
private members used only inside the engine core; no import loop; the spec language independent
of the compiler."""

from __future__ import annotations

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = sorted([*(ROOT / "onlytorch").rglob("*.py"), *(ROOT / "cli").rglob("*.py")])
# The engine core: the Graph facade and what implements it (building, backward, plans, execution).
CORE = {
    "onlytorch/graph.py",
    "onlytorch/builder.py",
    "onlytorch/autograd.py",
    "onlytorch/runtime.py",
    "onlytorch/executor.py",
    "onlytorch/codegen.py",
    "onlytorch/plan.py",
}

MAX_FILE_LINES = 800
MAX_CLASS_LINES = 500
MAX_FUNCTION_LINES = 130


def rel(path: pathlib.Path) -> str:
    return path.relative_to(ROOT).as_posix()


def tree(path: pathlib.Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[0] == "cli":
        parts[0] = "onlytorch_cli"
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def test_sources_found() -> None:
    assert len(SOURCES) > 40
    assert all(rel(c) in {rel(p) for p in SOURCES} for c in (ROOT / "onlytorch" / "graph.py",))


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_sizes(path: pathlib.Path) -> None:
    lines = path.read_text().count("\n")
    assert lines <= MAX_FILE_LINES, f"{rel(path)} has {lines} lines (at most {MAX_FILE_LINES})"
    for node in ast.walk(tree(path)):
        size = (node.end_lineno or node.lineno) - node.lineno + 1 if hasattr(node, "lineno") else 0
        if isinstance(node, ast.ClassDef):
            assert size <= MAX_CLASS_LINES, f"{rel(path)}: class {node.name} has {size} lines"
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert size <= MAX_FUNCTION_LINES, f"{rel(path)}:{node.lineno}: function {node.name} has {size} lines"


def graph_private_members() -> set[str]:
    """Every private name Graph defines: its methods and the attributes its methods assign on self."""
    names: set[str] = set()
    for node in ast.walk(tree(ROOT / "onlytorch" / "graph.py")):
        if isinstance(node, ast.ClassDef) and node.name == "Graph":
            for item in ast.walk(node):
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.startswith("_"):
                    names.add(item.name)
                if (
                    isinstance(item, ast.Attribute)
                    and isinstance(item.value, ast.Name)
                    and item.value.id == "self"
                    and item.attr.startswith("_")
                ):
                    names.add(item.attr)
    return {n for n in names if not (n.startswith("__") and n.endswith("__"))}


def test_graph_private_members_stay_in_the_core() -> None:
    private = graph_private_members()
    assert "_nodes" in private or "_records" in private or len(private) > 3  # the check sees Graph's members
    found = []
    for path in SOURCES:
        if rel(path) in CORE:
            continue
        for node in ast.walk(tree(path)):
            if isinstance(node, ast.Attribute) and node.attr in private:
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                found.append(f"{rel(path)}:{node.lineno}: .{node.attr}")
    assert not found, "Graph's private members used outside the engine core:\n" + "\n".join(found)


def imports(path: pathlib.Path) -> set[str]:
    """The project modules a file imports when it runs (imports under ``if TYPE_CHECKING:`` aside)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for sub in child.orelse:
                    visit(sub)
                continue
            if isinstance(child, ast.Import):
                out.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, *([child.module] if child.module else [])])
                else:
                    target = child.module or ""
                out.add(target)
                out.update(f"{target}.{a.name}" for a in child.names)
            visit(child)

    visit(tree(path))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SOURCES}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for target in imports(path):
            # importing a.b.c imports a and a.b (their __init__) too
            parts = target.split(".")
            for i in range(1, len(parts) + 1):
                prefix = ".".join(parts[:i])
                if prefix in modules and prefix != name and not name.startswith(prefix + "."):
                    deps.add(prefix)
        edges[name] = deps
    return edges


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for m in sorted(edges.get(n, ())):
            if state.get(m) == 1:
                return [*stack[stack.index(m) :], m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


def test_no_import_loop() -> None:
    edges = import_graph()
    assert edges.get("onlytorch.graph")  # the check sees imports
    cycle = find_cycle(edges)
    assert cycle is None, "import loop: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_loop() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_spec_imports_no_compiler_or_engine_internals() -> None:
    edges = import_graph()
    spec_modules = [m for m in edges if m == "onlytorch.spec" or m.startswith("onlytorch.spec.")]
    assert spec_modules
    bad = {
        m: sorted(
            d
            for d in deps
            if d.startswith("onlytorch.compiler")
            or d
            in ("onlytorch.compile", "onlytorch.executor", "onlytorch.codegen", "onlytorch.plan", "onlytorch.runtime")
        )
        for m, deps in edges.items()
        if m in spec_modules
    }
    assert not {m: d for m, d in bad.items() if d}, bad


def test_the_run_time_state_has_one_owner() -> None:
    """The clock, pass id, byte counts, modes, anomaly flag, RNGs and graded set live on the Graph's
    Runtime; the Graph itself holds only its structure (nodes, names, plan caches)."""
    from onlytorch.graph import Graph
    from onlytorch.runtime import Runtime

    state = {"clock", "pass_id", "nbytes", "peak", "train", "grad_enabled", "anomaly", "graded", "rng", "init_rng"}
    assert state <= set(Runtime.__slots__)
    g = Graph(seed=0)
    assert isinstance(g.runtime, Runtime)
    own = {name.lstrip("_") for name in vars(g)}
    assert not own & (state | {"bytes", "pass"}), own & (state | {"bytes", "pass"})
