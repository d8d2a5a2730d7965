"""A drawing of a spec's graph (Mermaid or Graphviz DOT): inputs, named nodes, losses and
metrics; modules as clusters with their parameters (a module called twice is one cluster with
two edges in: shared weights); stop_gradient edges dashed; nodes a phase detaches marked with
the phase's name (and its active range); target copies linked to their source; a note listing
the phases that do not simply run at every iteration on the default batch (range, accumulate, batch)."""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .. import phases
from ..ops.shapes import fmt
from ..spec import expr as X
from ..spec import names as N
from ..spec import schema as S

if TYPE_CHECKING:
    from .result import Compiled

# The highlight colours, written as #rrggbb: Graphviz knows no 3-digit form (it warns "#c60 is
# not a known color" and draws the node black), Mermaid's CSS takes both.
LOSS_COLOUR = "#cc0000"
DETACHED_COLOUR = "#cc6600"


@dataclass
class Drawing:
    nodes: dict[str, tuple[str, str]] = field(default_factory=dict)  # id -> (kind, label)
    edges: list[tuple[str, str, str]] = field(default_factory=list)  # (from, to, style: plain|stop|grad|sync)
    clusters: dict[str, list[str]] = field(default_factory=dict)  # module -> its parameter labels
    # "phase NAME: iterations 0-999; accumulate 4" for each phase with a range, accumulate or batch
    # that is not the default (none when every phase runs at every iteration on the default batch)
    schedule: list[str] = field(default_factory=list)


def _flows(
    node: ast.AST, modules: set[str], edges: list[tuple[str, str, str]], style: str = "plain"
) -> list[tuple[str, str]]:
    """The (source, style) pairs whose values flow into this sub-expression's value. A module
    call consumes its arguments (edges into the module are added) and yields the module itself;
    everything inside stop_gradient is marked 'stop', inside grad 'grad'."""
    if isinstance(node, ast.Name):
        return [(node.id, style)]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
        f = node.func.id
        args: list[ast.AST] = list(node.args)
        module = f if f in modules else None
        if f == "scan" and args and isinstance(args[0], ast.Name):
            module, args = args[0].id, args[1:]
        if f == "param" and args and isinstance(args[0], ast.Constant) and isinstance(args[0].value, str):
            owner = args[0].value.split(".", 1)[0]  # a parameter read by name: it flows from its module
            return [("@" + owner, style)] if owner in modules else []
        inner_style = "stop" if f in ("stop_gradient", "detach") else "grad" if f == "grad" else style
        inner = [flow for a in args for flow in _flows(a, modules, edges, inner_style)]
        if module is not None:
            edges.extend((src, "@" + module, how) for src, how in inner)
            return [("@" + module, inner_style)]
        return inner
    return [flow for child in ast.iter_child_nodes(node) for flow in _flows(child, modules, edges, style)]


def _params_read(spec: S.ModuleSpec, modules: set[str]) -> list[str]:
    """The modules whose parameters a subgraph module reads with param("M....") (weight tying)."""
    out = spec.output
    texts = [*spec.nodes.values(), *(out.values() if isinstance(out, dict) else [out or ""])]
    owners: list[str] = []
    for text in texts:
        try:
            tree = X.parse(text)
        except X.ExprError:
            continue
        for n in ast.walk(tree):
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "param" and n.args:
                arg = n.args[0]
                owner = str(arg.value).split(".", 1)[0] if isinstance(arg, ast.Constant) else ""
                if owner in modules and owner not in owners:
                    owners.append(owner)
    return owners


def build(compiled: Compiled) -> Drawing:
    spec = compiled.spec
    d = Drawing()
    for name, node in compiled.inputs.items():
        d.nodes[name] = ("input", f"{name} {fmt(node.shape)}")
    detached: dict[str, list[str]] = {}
    for index, ph in enumerate(compiled.phases):
        rng = phases.describe(ph.spec)
        for n in ph.detach:
            detached.setdefault(n.name, []).append(ph.name + (f" ({rng})" if rng else ""))
        notes = phases.notes(ph.spec, index)
        if notes:
            d.schedule.append(f"phase {ph.name}: {'; '.join(notes)}")
    modules = set(spec.modules)
    for name, m in compiled.modules.items():
        d.nodes["@" + name] = ("module", name)
        d.clusters[name] = [f"{p.name.removeprefix(name + '.')} {fmt(p.shape)}" for p in m.params]
        if m.kind == "copy" and m.spec.copy_of:
            d.edges.append(("@" + m.spec.copy_of, "@" + name, "sync"))
        d.edges.extend(("@" + owner, "@" + name, "plain") for owner in _params_read(m.spec, modules - {name}))
    for kind, table in (("node", spec.nodes), ("loss", spec.losses), ("metric", spec.metrics)):
        for name, text in ((n, t) for key, t in table.items() for n in N.defined(key)):  # mu, logvar: enc(x)
            built = compiled.names.get(name)
            shape = fmt(built.shape) if built is not None else ""
            several = compiled.records.get(name, {})  # a node holding several outputs: each one's shape
            if several:
                shape = ", ".join(f"{k} {fmt(v.shape)}" for k, v in several.items())
            label = f"{name} {shape}"
            if name in detached:
                label += " | detached in " + ", ".join(detached[name])
            d.nodes[name] = (kind, label)
            try:
                tree = X.parse(text)
            except X.ExprError:
                continue
            for src, style in _flows(tree, modules, d.edges):
                d.edges.append((src, name, style))
    for name, spec_in in spec.inputs.items():
        if spec_in.carry:
            d.edges.append((spec_in.carry, name, "carry"))
    seen = set()
    d.edges = [e for e in d.edges if e[0] in d.nodes and e[1] in d.nodes and not (e in seen or seen.add(e))]  # type: ignore[func-returns-value]
    return d


def _id(name: str) -> str:
    return "m_" + name[1:] if name.startswith("@") else "n_" + name


def mermaid(compiled: Compiled) -> str:
    d = build(compiled)
    shapes = {
        "input": ("([", "])"),
        "node": ("[", "]"),
        "loss": ("[[", "]]"),
        "metric": ("{{", "}}"),
        "module": ("[/", "/]"),
    }
    lines = ["flowchart LR"]
    for name, params in d.clusters.items():
        lines.append(f'  subgraph cluster_{name}["module {name}"]')
        a, b = shapes["module"]
        lines.append(f'    {_id("@" + name)}{a}"{name}"{b}')
        if params:
            lines.append(f'    p_{name}["{"<br/>".join(params)}"]')
        lines.append("  end")
    for name, (kind, label) in d.nodes.items():
        if kind == "module":
            continue
        a, b = shapes[kind]
        lines.append(f'  {_id(name)}{a}"{label}"{b}')
    arrows = {
        "plain": "-->",
        "stop": "-. stop_gradient .->",
        "grad": "== grad ==>",
        "sync": "-. sync .->",
        "carry": "-. carry .->",
    }
    for src, dst, style in d.edges:
        lines.append(f"  {_id(src)} {arrows[style]} {_id(dst)}")
    if d.schedule:
        lines.append(f'  schedule_note["{"<br/>".join(["schedule", *d.schedule])}"]')
    for name, (kind, label) in d.nodes.items():
        if kind == "loss":
            lines.append(f"  style {_id(name)} stroke:{LOSS_COLOUR},stroke-width:2px")
        if "detached in" in label:
            lines.append(f"  style {_id(name)} stroke:{DETACHED_COLOUR},stroke-dasharray:5 5")
    return "\n".join(lines) + "\n"


def dot(compiled: Compiled) -> str:
    d = build(compiled)
    shapes = {"input": "ellipse", "node": "box", "loss": "doubleoctagon", "metric": "note", "module": "component"}
    lines = ["digraph spec {", "  rankdir=LR;", '  node [fontname="Helvetica"];']
    for name, params in d.clusters.items():
        lines.append(f"  subgraph cluster_{name} {{")
        lines.append(f'    label="module {name}"; style=rounded;')
        lines.append(f'    {_id("@" + name)} [label="{name}", shape=component];')
        if params:
            joined = "\\n".join(params)
            lines.append(f'    p_{name} [label="{joined}", shape=plaintext];')
        lines.append("  }")
    for name, (kind, label) in d.nodes.items():
        if kind == "module":
            continue
        extra = (
            f', color="{DETACHED_COLOUR}", style=dashed'
            if "detached in" in label
            else (f', color="{LOSS_COLOUR}"' if kind == "loss" else "")
        )
        lines.append(f'  {_id(name)} [label="{label}", shape={shapes[kind]}{extra}];')
    styles = {
        "plain": "",
        "stop": ' [style=dashed, label="stop_gradient"]',
        "grad": ' [style=bold, label="grad"]',
        "sync": ' [style=dotted, label="sync"]',
        "carry": ' [style=dotted, label="carry"]',
    }
    for src, dst, style in d.edges:
        lines.append(f"  {_id(src)} -> {_id(dst)}{styles[style]};")
    if d.schedule:
        joined = "\\n".join(["schedule", *d.schedule])
        lines.append(f'  schedule_note [label="{joined}", shape=note];')
    lines.append("}")
    return "\n".join(lines) + "\n"
