"""The state one compilation shares between its passes (``CompileContext``): the located YAML, the
report diagnostics go to, the Graph being built with its named nodes and modules, the names whose
definitions failed (so that their dependents stay quiet), and the running memory budget. Also the
helpers every pass uses to report: ``error``, ``expr_error``, ``quiet``, ``known_names``,
``used_by_broken``."""

from __future__ import annotations

import pathlib
import re
from typing import TYPE_CHECKING, Any

from .. import footprint
from ..graph import Graph
from ..node import NodeId
from ..ops.registry import public_ops
from ..spec import expr as X
from ..spec import names as N
from ..spec import schema as S
from ..spec.diagnostics import Diagnostic, Path, Report
from ..spec.expr import SPECIAL_FUNCTIONS
from ..spec.yaml_loader import Located
from ..suggest import closest

if TYPE_CHECKING:
    from ..ops.registry import OpDef
    from .result import ModuleInfo


class Poisoned(Exception):
    """A name whose definition already produced a diagnostic: dependents stay quiet."""


class CompileContext:
    """One compilation's shared state. Set up in two steps: what the located YAML gives
    (``__init__``), then, once the schema pass returns a spec, the Graph and the tables the later
    passes fill (``start``)."""

    spec: S.Spec
    g: Graph
    budget: footprint.Budget
    ops: dict[str, OpDef]
    names: dict[str, NodeId]  # every named node built so far: inputs, nodes, losses, metrics
    records: dict[str, X.Outputs]  # the named nodes that hold a call's several outputs (z: enc(x))
    unpacked: dict[str, str]  # a name an unpacking key of nodes defines -> that key (mu -> "mu, logvar")
    groups: dict[str, X.Outputs]  # an unpacking key -> the outputs it unpacked, once built
    calls_made: dict[tuple[str, tuple[int, ...]], X.Outputs]  # (module, argument nodes) -> its outputs
    subgraph_params: dict[str, dict[str, NodeId]]  # subgraph module -> its own parameters, once made
    lent: set[str]  # parameters param(...) made before their module's first call (not the caller's)
    building: list[str]  # the definitions being built, innermost last (cycles among them)
    modules: dict[str, ModuleInfo]
    sections: dict[str, dict[str, str]]  # nodes / losses / metrics: name -> expression
    data_fields: dict[str, dict[str, Any]]  # split -> field name -> Field (check_data)
    inputs: dict[str, NodeId]
    unfed: set[str]  # inputs whose data problem is reported: later checks stay quiet about them
    cli_init: list[str]  # checkpoints given with --init (init_check.py), after the spec's init entries
    loaded: set[str]  # parameters and states init entries load (init_check.py): kept as loaded is no mistake

    def __init__(self, located: Located, report: Report, base_dir: pathlib.Path, max_memory: int | None = None) -> None:
        self.loc = located
        self.limit = footprint.Limit.resolve(max_memory)
        self.grad_nodes = 0  # nodes the spec's grad(...) calls added (bounded by footprint.MAX_GRAD_NODES)
        self.report = report
        self.base_dir = base_dir
        self.broken: set[str] = set()  # names whose definitions failed: no cascades from them
        self.phase_index: list[int] | None = None  # where each kept phase is in the file, when broken ones were dropped
        # values the loader refused (a !!python/... tag): they are None now, which is not news
        self.refused = [d.path for d in located.diagnostics if d.code in ("E-YAML-TAG", "E-YAML")]
        raw_modules = located.data.get("modules") if isinstance(located.data, dict) else None
        self.raw_modules = {str(k) for k in raw_modules} if isinstance(raw_modules, dict) else set()
        self.data_fields = {}
        self.inputs = {}
        self.unfed = set()
        self.cli_init = []
        self.loaded = set()

    def start(self, spec: S.Spec) -> None:
        """The validated spec: a fresh Graph and the tables the lowering fills."""
        self.spec = spec
        self.g = Graph(seed=spec.seed, dtype=spec.dtype)
        self.budget = self.memory_budget(spec)
        self.ops = public_ops()
        self.names = {}
        self.records = {}
        self.unpacked = {name: key for key in spec.nodes if N.unpacking(key) for name in N.defined(key)}
        self.groups = {}
        self.calls_made = {}
        self.subgraph_params = {}
        self.lent = set()
        self.building = []
        self.modules = {}
        self.sections = {"nodes": spec.nodes, "losses": spec.losses, "metrics": spec.metrics}

    # -------------------------------------------------------------- reporting

    def quiet(self, path: Path) -> bool:
        """Whether a diagnostic at path would only repeat that the loader refused a value there."""
        return any(tuple(path[: len(r)]) == tuple(r) for r in self.refused)

    def error(
        self, code: str, message: str, path: Path, key: bool = False, hint: str | None = None, width: int = 1
    ) -> None:
        if self.quiet(path):
            return
        line, col = self.loc.at(path, key=key)
        self.report.add(Diagnostic(code, message, path, line, col, hint, width))

    def expr_error(self, e: X.ExprError, path: Path) -> None:
        if self.quiet(path):
            return
        line, col = self.loc.expression_column(path, e.offset)
        self.report.add(Diagnostic(e.code, e.message, path, line, col, e.hint, e.width))

    def several_outputs(self, name: str, path: Path, what: str) -> bool:
        """Report (E-OUTPUT) a name that holds several outputs where one tensor is named (``what``
        says where: "carry", "eval.samples"); True when it does."""
        if name not in self.records:
            return False
        several = self.records[name].values
        first = next(iter(several))
        self.error(
            "E-OUTPUT",
            f"{what}: {name} holds several outputs ({', '.join(several)}); {what} names one tensor",
            path,
            hint=f'name a node that picks one, e.g. nodes: {{{name}_{first}: {name}["{first}"]}}',
        )
        return True

    def known_names(self) -> list[str]:
        return [*self.spec.inputs, *N.node_names(self.spec.nodes), *self.spec.losses, *self.spec.metrics]

    def key_of(self, section: str, name: str) -> Path:
        """Where name is defined: its own key, or the unpacking key that defines it (mu, logvar: ...)."""
        return (section, self.unpacked[name]) if section == "nodes" and name in self.unpacked else (section, name)

    def used_by_broken(self, module: str) -> bool:
        """Whether a definition that failed names this module, or a misspelling of it (so that it may
        be uncalled only because of that failure)."""

        def word(text: str) -> bool:
            tokens = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            if module in tokens:
                return True
            unknown = tokens - self.raw_modules - set(self.ops) - set(SPECIAL_FUNCTIONS) - set(self.known_names())
            return closest(module, unknown) is not None

        raw = self.loc.data if isinstance(self.loc.data, dict) else {}
        for section in ("nodes", "losses", "metrics", "modules"):
            table = raw.get(section)
            if f"<{section}>" in self.broken:
                return True
            if not isinstance(table, dict):
                continue
            for name, text in table.items():
                if str(name) != module and str(name) in self.broken and word(str(text)):
                    return True
        return False

    # -------------------------------------------------------------- memory

    def memory_budget(self, spec: S.Spec) -> footprint.Budget:
        """The running memory checks; a trained parameter costs its value, its gradient and the
        state of the hungriest optimizer of the spec."""
        copies = 1
        if spec.train is not None and spec.optimizers:
            state = max(
                footprint.state_buffers(o.type, o.model_dump(exclude={"type", "params", "schedule"}))
                for o in spec.optimizers.values()
            )
            copies = 2 + state
        batch = spec.data.batch_size if spec.data is not None else 1
        return footprint.Budget(self.limit, batch, copies)


def attr_problem(op: Any, args: list[Any], kwargs: dict[str, Any]) -> str | None:
    """A message when an op's attribute gets a value of the wrong kind (a string for a number, ...),
    judged by the kind of its default; the engine checks the rest when it builds the node."""
    if op.variadic:
        given = dict(kwargs)
    else:
        given = dict(zip(op.attr_defaults, args[len(op.input_names) :]))
        given.update(kwargs)
    for key, value in given.items():
        default = op.attr_defaults.get(key)
        if isinstance(default, bool):
            ok, want = isinstance(value, bool), "True or False"
        elif isinstance(default, float):
            ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
        elif isinstance(default, str):
            ok, want = isinstance(value, str), "a string"
        else:
            continue
        if not ok:
            return f"{op.name}: {key} must be {want}, got {value!r}"
    return None
