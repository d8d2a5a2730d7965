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


def private_uses(where: str, module: ast.Module, private: set[str]) -> list[str]:
    """Reads and writes of the private names: ``x._name`` (not on self/cls), ``getattr(x, "_name")``
    and its kin, and ``vars(x)`` / ``x.__dict__`` (a way around both)."""
    found = []
    for node in ast.walk(module):
        if isinstance(node, ast.Attribute) and node.attr in private:
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                found.append(f"{where}:{node.lineno}: .{node.attr}")
        elif isinstance(node, ast.Attribute) and node.attr == "__dict__":
            base = node.value
            if not (isinstance(base, ast.Name) and base.id in ("self", "cls")):
                found.append(f"{where}:{node.lineno}: .__dict__")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            args = node.args
            if name in ("getattr", "setattr", "hasattr", "delattr") and len(args) >= 2:
                key = args[1]
                if isinstance(key, ast.Constant) and key.value in private:
                    found.append(f"{where}:{node.lineno}: {name}(..., {key.value!r})")
            elif name == "vars" and args:
                found.append(f"{where}:{node.lineno}: vars(...)")
    return found


def test_the_private_member_check_sees_indirect_uses() -> None:
    text = "g._nodes\ngetattr(g, '_nodes')\nsetattr(g, '_detached', 1)\nvars(g)['_by_name']\ng.__dict__\nself._nodes\n"
    uses = private_uses("x.py", ast.parse(text), {"_nodes", "_detached", "_by_name"})
    assert sorted(uses) == sorted(
        [
            "x.py:1: ._nodes",
            "x.py:2: getattr(..., '_nodes')",
            "x.py:3: setattr(..., '_detached')",
            "x.py:4: vars(...)",
            "x.py:5: .__dict__",
        ]
    )


def test_graph_private_members_stay_in_the_core() -> None:
    private = graph_private_members()
    assert "_nodes" in private or "_records" in private or len(private) > 3  # the check sees Graph's members
    found = []
    for path in SOURCES:
        if rel(path) in CORE:
            continue
        found += private_uses(rel(path), tree(path), private)
    assert not found, "Graph's private members used outside the engine core:\n" + "\n".join(found)


def imports(path: pathlib.Path, text: str | None = None) -> set[str]:
    """The project modules a file imports when it runs (imports under ``if TYPE_CHECKING:`` aside,
    lazy imports inside functions included). ``from pkg import name`` of a name that is not a
    submodule needs pkg's __init__ to have run that far: it counts as importing pkg itself (marked
    with a trailing "!", which import_graph keeps even when pkg is an ancestor of the file)."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out: set[str] = set()
    submodules = {module_name(p) for p in SOURCES}

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
                if any(f"{target}.{a.name}" not in submodules for a in child.names):
                    out.add(target + "!")
            visit(child)

    visit(tree(path) if text is None else ast.parse(text))
    return out


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in SOURCES}
    edges: dict[str, set[str]] = {}
    for name, path in modules.items():
        deps = set()
        for target in imports(path):
            if target.endswith("!"):  # a name defined in that module (its __init__, for a package)
                if target[:-1] in modules and target[:-1] != name:
                    deps.add(target[:-1])
                continue
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


def test_a_name_from_a_package_init_counts_as_importing_the_package() -> None:
    """run.py once did ``from . import __version__``: a loop through onlytorch/__init__ (which imports
    app, which imports run) that the graph must see; importing submodules from a package does not
    need its __init__ to have finished."""
    run = ROOT / "onlytorch" / "run.py"
    assert "onlytorch!" in imports(run, "from . import __version__, monitor\n")
    assert "onlytorch!" not in imports(run, "from . import metrics_log, monitor\n")
    assert "onlytorch.spec.schema!" in imports(run, "from .spec.schema import Spec\n")
    edges = import_graph()
    assert all("onlytorch" not in deps for m, deps in edges.items() if m.startswith("onlytorch."))


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
