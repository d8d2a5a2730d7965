"""Spec -> Graph + training plan, with every problem reported at once.

``compile_spec`` loads the YAML (with positions), validates it against the pydantic models (entry
by entry, so that one broken entry does not hide the others' problems), builds the Graph (static
shape inference happens as nodes are built: a shape error points at the sub-expression that
failed), builds the modules, optimizers and schedules, and then analyses each phase of the
training schedule statically: which parameters each backward reaches under the phase's detach
set, whether a backward needs values an earlier ``retain_graph: false`` backward released, and
which ``retain_graph: true`` nothing uses."""

from __future__ import annotations

import ast
import contextlib
import fnmatch
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from . import footprint, monitor, nn
from .errors import GraphError, ShapeError
from .graph import Graph
from .node import NodeId
from .ops.registry import public_ops
from .plan import BackwardPlan
from .safe_files import MAX_SPEC_BYTES, RefusedFile, human_size, read_regular, short_repr
from .spec import expr as X
from .spec import schema as S
from .spec.diagnostics import Diagnostic, Path, Report, did_you_mean
from .spec.yaml_loader import Located, load

SPECIAL_FUNCTIONS = {
    "grad": "grad(y, x): d y / d x as a node (y a scalar), differentiable again",
    "scan": "scan(cell, xs, h0): run a cell over axis 1 of xs, returning all states stacked on axis 1",
}
LAYERS_WITH_PARAMS = ("linear", "batch_norm", "layer_norm", "embedding")


@dataclass
class ModuleInfo:
    name: str
    spec: S.ModuleSpec
    kind: str  # layers | cell | subgraph | copy
    call: Callable[..., NodeId] | None = None
    params: list[NodeId] = field(default_factory=list)
    states: list[NodeId] = field(default_factory=list)
    calls: int = 0


@dataclass
class BackwardInfo:
    loss: str
    targets: list[NodeId]
    retain_graph: bool
    weight: float
    loss_node: NodeId  # the node differentiated (weight * loss when weight != 1)
    reached: list[NodeId] = field(default_factory=list)
    plan: BackwardPlan | None = None


@dataclass
class PhaseInfo:
    name: str
    spec: S.PhaseSpec
    detach: list[NodeId]
    backward: list[BackwardInfo]
    step: list[str]
    cut: dict[str, list[str]] = field(default_factory=dict)  # detached node -> parameters it cuts off


@dataclass
class Compiled:
    spec: S.Spec
    graph: Graph
    inputs: dict[str, NodeId]
    names: dict[str, NodeId]  # every named node: inputs, nodes, losses, metrics
    losses: dict[str, NodeId]
    metrics: dict[str, NodeId]
    modules: dict[str, ModuleInfo]
    optimizers: dict[str, Any]
    schedules: dict[str, Any]
    optimizer_params: dict[str, list[NodeId]]
    phases: list[PhaseInfo]
    carries: dict[str, NodeId]  # input name -> node whose value it takes at the next step
    targets: dict[str, tuple[str, S.SyncSpec | None]]  # copy module -> (source, sync)
    base_dir: pathlib.Path


class _Poisoned(Exception):
    """A name whose definition already produced a diagnostic: dependents stay quiet."""


_SPEC_FILES = f"a spec is a regular YAML file of at most {human_size(MAX_SPEC_BYTES)} (see docs/inputs.md)"


def compile_file(
    path: str | pathlib.Path,
    overrides: list[tuple[str, Any]] | None = None,
    max_memory: int | None = None,
    allow_outside: bool = False,
) -> tuple[Compiled | None, Report]:
    """Compile the spec at path, with ``--set`` overrides (dotted path, value) applied first;
    ``max_memory`` bounds the memory estimate (bytes; default: the machine's, see footprint.py).
    The spec's data files must lie inside its folder unless ``allow_outside`` (docs/inputs.md)."""
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
    return compile_text(text, str(path), folder, overrides, max_memory, None if allow_outside else folder)


def compile_text(
    text: str,
    filename: str = "<spec>",
    base_dir: pathlib.Path | None = None,
    overrides: list[tuple[str, Any]] | None = None,
    max_memory: int | None = None,
    data_root: pathlib.Path | None = None,
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
        from .spec.overrides import apply

        problems = apply(located.data, list(overrides), written)
        report.extend(problems)
        if problems:
            return None, report
    compiler = _Compiler(located, report, base_dir or pathlib.Path.cwd(), max_memory)
    from .data.files import confined_to
    from .spec.overrides import strings_in

    trusted = strings_in([v for _, v in overrides or []])  # paths typed on the command line may lie anywhere
    confinement = confined_to(data_root, trusted) if data_root else contextlib.nullcontext()
    try:
        with confinement:
            compiled = compiler.run()
    except RecursionError:
        report.add(Diagnostic("E-CYCLE", "the spec nests too deeply to compile", (), 1, 1))
        compiled = None
    if written:
        from .spec.overrides import note_origin

        note_origin(report.items, written)
    if report.errors:
        return None, report
    return compiled, report


# ------------------------------------------------------------------ pydantic errors -> diagnostics


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path, list[Any]]:
    """Split a pydantic loc into the path through the data and the union tags it passed."""
    path: list[Any] = []
    skipped: list[Any] = []
    cur = data
    for part in loc:
        if (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        ):
            path.append(part)
            cur = cur[part]
        else:
            skipped.append(part)
    return tuple(path), skipped


def _allowed_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or k for k, f in model.model_fields.items()]
    return []


def _model_for(root: Any, located_data: Any, path: Path) -> Any:
    """The pydantic model that validates the mapping at path (for did-you-mean on keys)."""
    import typing

    cur: Any = root
    data = located_data
    for part in path:
        cur = _unwrap(cur, data)
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            fields = {(f.alias or k): f for k, f in cur.model_fields.items()}
            if part not in fields:
                return None
            f = fields[part]
            # pydantic moves a field's top-level Annotated metadata (a union's Discriminator) into
            # f.metadata: put it back, or _unwrap cannot pick the union member the data selects.
            cur = typing.Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        else:
            origin = typing.get_origin(cur)
            args = typing.get_args(cur)
            if origin is dict and args:
                cur = args[1]
            elif origin is list and args:
                cur = args[0]
            else:
                return None
        data = data[part] if isinstance(data, (dict, list)) else None
    return _unwrap(cur, data)


def _unwrap(tp: Any, data: Any) -> Any:
    import types
    import typing

    for _ in range(6):
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            args = typing.get_args(tp)
            inner, meta = args[0], args[1:]
            disc = next((m for m in meta if type(m).__name__ == "Discriminator"), None)
            if disc is not None and callable(getattr(disc, "discriminator", None)):
                tag = disc.discriminator(data)
                for member in typing.get_args(inner):
                    if typing.get_origin(member) is typing.Annotated:
                        m_args = typing.get_args(member)
                        if any(getattr(x, "tag", None) == tag for x in m_args[1:]):
                            return m_args[0]
                return None
            tp = inner
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = models[0] if models else members[0]
        else:
            return tp
    return tp


def _validation_diagnostics(err: ValidationError, located: Located, base: Path, model: Any) -> list[Diagnostic]:
    out = []
    root_data = located.data
    for sub in base:
        root_data = root_data[sub]
    for e in err.errors():
        rel, _tags = _data_path(root_data, tuple(e["loc"]))
        path = base + rel
        kind = e["type"]
        if kind == "extra_forbidden":
            key = e["loc"][-1]
            parent = path if key not in path[-1:] else path[:-1]
            line, col = located.at(parent + (key,), key=True)
            allowed = _allowed_keys(_model_for(model, root_data, rel[:-1] if rel and rel[-1] == key else rel))
            hint = did_you_mean(str(key), allowed)
            known = f" (known here: {', '.join(allowed)})" if allowed else ""
            out.append(
                Diagnostic(
                    "E-KEY", f"unknown key {key!r}{known}", parent + (key,), line, col, hint, width=len(str(key))
                )
            )
        elif kind == "missing":
            key = e["loc"][-1]
            line, col = located.at(path)
            where = ".".join(str(p) for p in path) or "the spec"
            out.append(Diagnostic("E-MISSING", f"{where} needs the key {key!r}", path, line, col))
        elif (
            kind in ("union_tag_invalid", "union_tag_not_found", "literal_error")
            and rel
            and rel[-1] in ("source", "type")
        ) or kind in ("union_tag_invalid", "union_tag_not_found"):
            value_path, options = _tag_problem(e, path, located)
            options = options or _tag_options(path)[1]
            line, col = located.at(value_path)
            got = _get(located.data, value_path)
            hint = did_you_mean(got, options) if isinstance(got, str) else None
            message = f"unknown {value_path[-1] if value_path else 'value'} {short_repr(got)}; use one of: {', '.join(options)}"
            if value_path == path and path and path[-1] not in ("source", "type"):
                # no tag at all (pydantic names no options then): say which key is missing, and its values
                key = _tag_options(path)[0]
                where = ".".join(str(p) for p in path)
                split = " (or {from_split: train, fraction: F})" if path[0] == "data" and path[-1] != "train" else ""
                if not isinstance(got, dict):
                    message = f"{where} must be a mapping with a {key!r} key, got {short_repr(got)}"
                else:
                    message = f"{where} needs the key {key!r}{split}"
                message += f"; {key} is one of: {', '.join(options)}" if options else ""
            out.append(Diagnostic("E-TYPE", message, value_path, line, col, hint))
        elif _is_layer_item(path) and not isinstance(_get(located.data, path), (str, dict)):
            # one diagnostic, not one per member of the layer union (str | dict)
            line, col = located.at(path)
            got = _get(located.data, path)
            out.append(
                Diagnostic(
                    "E-MODULE",
                    f"a layer is a name (relu) or a one-key mapping ({{linear: 64}}), got {got!r}",
                    path,
                    line,
                    col,
                )
            )
        else:
            line, col = located.at(path)
            msg = e["msg"].removeprefix("Value error, ")
            where = ".".join(str(p) for p in path)
            hint = None
            if kind == "literal_error":
                import re

                options = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
                got = _get(located.data, path)
                hint = did_you_mean(got, options) if isinstance(got, str) else None
            out.append(Diagnostic("E-TYPE", f"{where}: {msg}" if where else msg, path, line, col, hint))
    return out


def _is_layer_item(path: Path) -> bool:
    """Whether path is an item of a module's layer list (short form modules.M.i, or modules.M.layers.i)."""
    return (
        len(path) >= 3
        and path[0] == "modules"
        and isinstance(path[-1], int)
        and (len(path) == 3 or (len(path) == 4 and path[2] == "layers"))
    )


def _tag_problem(e: Any, path: Path, located: Located) -> tuple[Path, list[str]]:
    ctx = e.get("ctx") or {}
    expected = ctx.get("expected_tags") or ctx.get("expected") or ""
    options = [t.strip().strip("'") for t in str(expected).split(",") if t.strip()]
    target = _get(located.data, path)
    if isinstance(target, dict):
        for key in ("type", "source"):
            if key in target:
                return path + (key,), options
    return path, options


def _tag_options(path: Path) -> tuple[str, list[str]]:
    """The key that chooses the kind of the entry at path (source or type), and its values."""
    if path and path[0] == "data":
        return "source", list(S.SOURCE_MODELS)
    if "schedule" in path[1:] and path[0] == "optimizers":
        return "type", list(S.SCHEDULE_MODELS)
    if path and path[0] == "optimizers":
        return "type", list(S.OPTIMIZER_MODELS)
    return "type", []


def _get(data: Any, path: Path) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data


# ------------------------------------------------------------------ the compiler


class _Compiler:
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

    def quiet(self, path: Path) -> bool:
        """Whether a diagnostic at path would only repeat that the loader refused a value there."""
        return any(tuple(path[: len(r)]) == tuple(r) for r in self.refused)

    # -------------------------------------------------------------- helpers

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

    def check_params(self, module: str, what: str, shape: tuple[int, ...]) -> None:
        """Refuse a parameter before it is allocated: too many values, or past the memory limit."""
        _check_size(what, shape)
        info = self.modules.get(module)
        trained = info is None or info.kind != "copy"
        problem = self.budget.parameter(what, shape, self.g.dtype.itemsize, trained)
        if problem is not None:
            raise _LayerError(problem, footprint.HINT, code="E-MEMORY")

    def plan_layers(self, m: ModuleInfo, items: list[Any], x: NodeId, path: Path) -> bool:
        """Before a layer list allocates anything: the parameters of its linear layers and the layer
        outputs a backward keeps, as far as their sizes follow from the input (through layers that
        keep the last dimension), must fit the memory limit. False (with a diagnostic at the layer
        that passes it) when they do not."""
        if not x.shape or x.shape[-1] is None:
            return True
        dim, planned, outputs, widest = x.shape[-1], 0, 0, 0
        rows = footprint.elements(x.shape[:-1], self.budget.batch)
        itemsize = self.g.dtype.itemsize
        info = self.modules.get(m.name)
        copies = 1 if info is not None and info.kind == "copy" else self.budget.trained_copies
        for i, item in enumerate(items):
            try:
                kind, arg = self.layer_kind(item)
            except _LayerError:
                return True
            what = f"layer {i} of module {m.name} ({kind})"
            if kind == "linear":
                out = arg.get("out") if isinstance(arg, dict) else arg
                if not isinstance(out, int) or isinstance(out, bool) or out <= 0 or dim * out > MAX_ELEMENTS:
                    return True  # the layer's build reports it
                planned += (dim + 1) * out * itemsize * copies
                what = f"layer {i} of module {m.name} (linear {dim} -> {out})"
                dim = out
            elif kind not in ("batch_norm", "layer_norm", "dropout"):
                op = self.ops.get(kind)
                try:
                    same = arg is None and op is not None and op.shape_rule((None, dim))[0] == (None, dim)
                except Exception:  # a layer the build reports on
                    same = False
                if not same:
                    return True
            outputs += rows * dim * itemsize
            widest = max(widest, rows * dim * itemsize)
            # a backward through the widest output holds its gradient and its input's, of its size
            problem = self.budget.planned(what, planned, outputs + 2 * widest if copies > 1 else 0)
            if problem is not None:
                self.error("E-MEMORY", problem, self.layer_path(path, i), hint=footprint.HINT)
                return False
        return True

    def check_values(self, what: str, first: int) -> None:
        """Refuse the nodes built since index first when one alone passes the memory limit at the batch size."""
        problem = self.budget.values(what, self.g._nodes[first:])
        if problem is not None:
            raise _LayerError(problem, footprint.HINT, code="E-MEMORY")

    # -------------------------------------------------------------- schema

    def validate(self) -> S.Spec | None:
        data = self.loc.data
        try:
            return S.Spec.model_validate(data)
        except ValidationError as err:
            self.report.extend(d for d in _validation_diagnostics(err, self.loc, (), S.Spec) if not self.quiet(d.path))
        # Keep every entry that validates on its own, so the semantic checks still run on them.
        fields = S.Spec.model_fields
        kept: dict[str, Any] = {}
        for key, value in data.items():
            f = fields.get(key)
            if f is None:
                continue
            ann = f.annotation
            if key in ("inputs", "modules", "nodes", "losses", "metrics", "optimizers") and isinstance(value, dict):
                import typing

                item_type = (
                    typing.get_args(_unwrap(ann, value))[1] if typing.get_origin(_unwrap(ann, value)) is dict else Any
                )
                adapter = TypeAdapter(item_type)
                good = {}
                for name, item in value.items():
                    try:
                        good[name] = adapter.validate_python(item)
                    except ValidationError:
                        self.broken.add(str(name))
                    else:
                        if not isinstance(name, str) or not S.NAME.match(name):
                            self.broken.add(str(name))
                        else:
                            good[name] = good[name]
                kept[key] = {k: v for k, v in good.items() if k not in self.broken}
            else:
                try:
                    kept[key] = TypeAdapter(ann if ann is not None else Any).validate_python(value)
                except ValidationError:
                    salvaged = self.salvage(key, value)
                    if salvaged is None:
                        self.broken.add(f"<{key}>")
                        continue
                    kept[key] = salvaged
        kept.setdefault("version", 1)
        kept.setdefault("name", "spec")
        kept.setdefault("inputs", {})
        kept.setdefault("losses", {})
        try:
            return S.Spec.model_validate(kept)
        except ValidationError:
            return None

    def salvage(self, key: str, value: Any) -> BaseModel | None:
        """Section data or train without its broken optional keys and broken phases, so that one
        bad value (batch_size: 0, log_every: 0) does not hide the problems the later checks find.
        Each dropped key is marked broken as ``<section.key>``; None when nothing can be kept."""
        sections: dict[str, type[BaseModel]] = {"data": S.DataSpec, "train": S.TrainSpec}
        model = sections.get(key)
        if model is None or not isinstance(value, dict):
            return None
        by_alias = {(f.alias or k): f for k, f in model.model_fields.items()}
        value = dict(value)
        origin = {
            k: list(range(len(v))) for k, v in value.items() if isinstance(v, list)
        }  # item -> its index in the file
        for _ in range(4):
            try:
                return model.model_validate(value)
            except ValidationError as err:
                drop_keys: set[str] = set()
                drop_items: dict[str, set[int]] = {}
                for e in err.errors():
                    loc = e["loc"]
                    if not loc or not isinstance(loc[0], str) or loc[0] not in value or loc[0] not in by_alias:
                        return None  # a rule about the whole section, or a missing required key
                    k = loc[0]
                    if isinstance(value[k], list) and len(loc) > 1 and isinstance(loc[1], int):
                        drop_items.setdefault(k, set()).add(loc[1])
                    elif not by_alias[k].is_required():
                        drop_keys.add(k)
                    else:
                        return None
                for k in drop_keys:
                    del value[k]
                    self.broken.add(f"<{key}.{k}>")
                for k, items in drop_items.items():
                    value[k] = [v for i, v in enumerate(value[k]) if i not in items]
                    origin[k] = [o for i, o in enumerate(origin[k]) if i not in items]
                if key == "train" and "schedule" in origin:
                    self.phase_index = origin["schedule"]
        return None

    # -------------------------------------------------------------- run

    def run(self) -> Compiled | None:
        spec = self.validate()
        if spec is None:
            return None
        self.spec = spec
        self.g = Graph(seed=spec.seed, dtype=spec.dtype)
        self.budget = self.memory_budget(spec)
        self.ops = public_ops()
        self.names: dict[str, NodeId] = {}
        self.building: list[str] = []
        self.modules: dict[str, ModuleInfo] = {}
        self.sections = {"nodes": spec.nodes, "losses": spec.losses, "metrics": spec.metrics}
        self.check_duplicates()
        self.data_fields = self.check_data()
        self.inputs = self.build_inputs()
        for name, m in spec.modules.items():
            self.modules[name] = ModuleInfo(
                name, m, "copy" if m.copy_of else "layers" if m.layers is not None else "cell" if m.cell else "subgraph"
            )
        for section, name in self.build_order():
            with contextlib.suppress(_Poisoned):
                self.resolve(name, (section, name), 0, 1)
        losses = {k: self.names[k] for k in spec.losses if k in self.names}
        metrics = {k: self.names[k] for k in spec.metrics if k in self.names}
        self.check_losses(losses)
        self.check_metrics(metrics)
        carries = self.check_carries()
        self.check_live_source()
        targets = self.finish_copies()
        opt_params = self.select_optimizer_params()
        optimizers, schedules = self.build_optimizers(opt_params)
        phases = self.analyse_phases(losses, opt_params, optimizers)
        self.check_eval(losses, metrics)
        monitor.check(spec, self.broken, self.error)
        self.check_layers_unbuilt()
        self.check_unused(opt_params, phases, targets)
        if self.report.errors:
            return None
        compiled = Compiled(
            spec=spec,
            graph=self.g,
            inputs=self.inputs,
            names=self.names,
            losses=losses,
            metrics=metrics,
            modules=self.modules,
            optimizers=optimizers,
            schedules=schedules,
            optimizer_params=opt_params,
            phases=phases,
            carries=carries,
            targets=targets,
            base_dir=self.base_dir,
        )
        over = footprint.over_limit(compiled, footprint.estimate(compiled, self.data_fields), self.limit)
        if over is not None:
            self.error("E-MEMORY", over[0], over[1], key=len(over[1]) == 2, hint=footprint.HINT)
            return None
        from .spec.lint import lint_schedule  # legal but suspicious gradient setups (W- warnings)

        self.report.extend(lint_schedule(compiled, self.loc))
        return compiled

    # -------------------------------------------------------------- names

    def check_duplicates(self) -> None:
        seen: dict[str, str] = {}
        for section in ("inputs", "modules", "nodes", "losses", "metrics"):
            for name in getattr(self.spec, section):
                if name in seen:
                    self.error(
                        "E-DUP",
                        f"{name!r} is defined in both {seen[name]} and {section}",
                        (section, name),
                        key=True,
                        width=len(name),
                    )
                    self.broken.add(name)
                else:
                    seen[name] = section
        for name in self.spec.modules:
            if name in self.ops or name in SPECIAL_FUNCTIONS:
                self.error(
                    "E-DUP",
                    f"the module name {name!r} hides the function {name}(); rename the module",
                    ("modules", name),
                    key=True,
                    width=len(name),
                )
                self.broken.add(name)

    def build_order(self) -> list[tuple[str, str]]:
        """Every definition, each after the names it uses, so that resolve's recursion stays as deep
        as one expression however long a chain of nodes is. Circles are found here, without
        recursion, and reported where the walk (in file order) enters them."""
        where = {name: section for section, table in self.sections.items() for name in table}
        uses: dict[str, list[str]] = {}
        for name, section in where.items():
            try:
                tree = X.parse(self.sections[section][name])
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
                elif state[dep] == 1 and dep not in self.broken:
                    path_names = [n for n, _ in stack]
                    self.report_cycle(path_names[path_names.index(dep) :] + [dep], where)
        return [(where[n], n) for n in order]

    def report_cycle(self, cycle: list[str], where: dict[str, str]) -> None:
        shown = cycle if len(cycle) <= 9 else [*cycle[:4], "...", *cycle[-4:]]
        head = cycle[0]
        self.error(
            "E-CYCLE",
            "these definitions depend on each other in a circle: " + " -> ".join(shown),
            (where[head], head),
            key=True,
            width=len(head),
        )
        self.broken.update(cycle)

    def known_names(self) -> list[str]:
        return [*self.spec.inputs, *self.spec.nodes, *self.spec.losses, *self.spec.metrics]

    def resolve(self, name: str, path: Path, offset: int, width: int) -> NodeId:
        """The node called name, building its definition (and what it needs) on first use."""
        if name in self.names:
            return self.names[name]
        if name in self.broken:
            raise _Poisoned(name)
        section = next((s for s, t in self.sections.items() if name in t), None)
        if section is None:
            if name in self.spec.modules:
                raise X.ExprError("E-NAME", f"{name!r} is a module: call it, e.g. {name}(x)", offset, width)
            raise X.ExprError("E-NAME", f"unknown name {name!r}", offset, width, did_you_mean(name, self.known_names()))
        if name in self.building:
            cycle = self.building[self.building.index(name) :] + [name]
            self.error(
                "E-CYCLE",
                "these definitions depend on each other in a circle: " + " -> ".join(cycle),
                (section, name),
                key=True,
                width=len(name),
            )
            for n in cycle:
                self.broken.add(n)
            raise _Poisoned(name)
        self.building.append(name)
        own = (section, name)
        try:
            tree = X.parse(self.sections[section][name])
            node = X.evaluate(tree, self.scope(own, {}))
            if name in self.broken:  # a cycle through it was found while building it
                raise _Poisoned(name)
            node = (
                self.g.identity(node, name=name)
                if self.g._node(node).user_named or self.g._node(node).kind != "op"
                else self._rename(node, name)
            )
            self.names[name] = node
            return node
        except X.ExprError as e:
            self.expr_error(e, own)
            self.broken.add(name)
            raise _Poisoned(name) from None
        except _Poisoned:
            self.broken.add(name)
            raise
        finally:
            self.building.pop()

    def _rename(self, node: NodeId, name: str) -> NodeId:
        return NodeId(self.g, self.g._rename(self.g._node(node), name).index)

    def scope(self, path: Path, local: dict[str, NodeId]) -> X.Scope:
        def value(name: str, offset: int, width: int) -> NodeId:
            if name in local:
                return local[name]
            if name in self.inputs:
                return self.inputs[name]
            return self.resolve(name, path, offset, width)

        return X.Scope(self.g, value, lambda f, node, ev: self.call(f, node, ev, path), self.spec.dtype)

    # -------------------------------------------------------------- calls

    def call(self, fname: str, node: ast.Call, ev: Callable[[ast.expr], Any], path: Path) -> Any:
        start, width = X.span(node.func)
        if fname in self.modules or (fname in self.raw_modules and fname in self.broken):
            if fname in self.broken:
                raise _Poisoned(fname)
            args, kwargs = X.call_arguments(node, ev)
            if kwargs:
                raise X.ExprError("E-ARG", f"module {fname} takes its inputs by position", start, width)
            return self.call_module(self.modules[fname], args, start, width)
        if fname == "grad":
            args, kwargs = X.call_arguments(node, ev)
            if len(args) != 2 or kwargs or not all(isinstance(a, NodeId) for a in args):
                raise X.ExprError("E-ARG", "grad takes two nodes: grad(y, x), y a scalar", start, width)
            y, x = args
            if any(d not in (1,) for d in y.shape):
                raise X.ExprError(
                    "E-SHAPE",
                    f"grad(y, x) needs a scalar y, got shape {_fmt(y.shape)}: reduce it first, e.g. grad(sum(y), x)",
                    start,
                    width,
                )
            self.check_grad_size(y, start, width)
            before = len(self.g._nodes)
            try:
                out = self.g.grad(y, x, create_graph=True)
            except GraphError as e:
                raise X.ExprError("E-ARG", str(e), start, width) from None
            self.grad_nodes += len(self.g._nodes) - before
            self.check_grad_size(None, start, width)
            return out
        if fname == "scan":
            return self.call_scan(node, ev, start, width)
        op = self.ops.get(fname)
        if op is None:
            options = [*self.ops, *self.spec.modules, *SPECIAL_FUNCTIONS]
            raise X.ExprError("E-NAME", f"unknown function {fname!r}", start, width, did_you_mean(fname, options))
        args, kwargs = X.call_arguments(node, ev)
        problem = _attr_problem(op, args, kwargs)
        if problem:
            raise X.ExprError("E-ARG", problem, start, width)
        before = len(self.g._nodes)
        out = getattr(self.g, op.name)(*args, **kwargs)
        too_big = self.budget.values(f"{fname}(...)", self.g._nodes[before:])
        if too_big is not None:
            raise X.ExprError("E-MEMORY", too_big, start, width, footprint.HINT)
        return out

    def check_grad_size(self, y: NodeId | None, start: int, width: int) -> None:
        """Bound the gradient graphs grad(...) builds: each nested grad multiplies the graph, and a
        dozen levels would take minutes and gigabytes. Checked before building (the graph that y
        depends on is what the gradient walks) and after."""
        from .plan import ancestors

        walks = len(ancestors([self.g._node(y)])) if y is not None else 0
        if self.grad_nodes + walks > footprint.MAX_GRAD_NODES:
            how = f"would take them past it (it walks {walks:,} nodes)" if y is not None else "took them past it"
            raise X.ExprError(
                "E-GRAD-SIZE",
                f"the grad(...) calls of a spec may build at most {footprint.MAX_GRAD_NODES:,} gradient nodes; "
                f"{self.grad_nodes:,} are built and this grad {how}: "
                "grad nested this deep grows the graph about threefold per level",
                start,
                width,
                "nest grad(...) fewer times, or differentiate a smaller expression",
            )

    def call_scan(self, node: ast.Call, ev: Callable[[ast.expr], Any], start: int, width: int) -> NodeId:
        if len(node.args) != 3 or not isinstance(node.args[0], ast.Name) or node.keywords:
            raise X.ExprError("E-ARG", "scan takes a cell module and two nodes: scan(cell, xs, h0)", start, width)
        cell = node.args[0].id
        if cell not in self.modules:
            s, w = X.span(node.args[0])
            if cell in self.broken:
                raise _Poisoned(cell)
            raise X.ExprError("E-NAME", f"unknown module {cell!r}", s, w, did_you_mean(cell, self.modules))
        xs, h = ev(node.args[1]), ev(node.args[2])
        if not isinstance(xs, NodeId) or not isinstance(h, NodeId):
            raise X.ExprError("E-ARG", "scan takes a cell module and two nodes: scan(cell, xs, h0)", start, width)
        if len(xs.shape) < 2 or xs.shape[1] is None:
            raise X.ExprError(
                "E-SHAPE",
                f"scan runs over axis 1 of xs, which needs a fixed length; xs has shape {_fmt(xs.shape)}",
                start,
                width,
            )
        if xs.shape[1] > MAX_UNROLL:
            raise X.ExprError(
                "E-SHAPE",
                f"scan would unroll {xs.shape[1]} steps, more than {MAX_UNROLL}: feed the sequence in windows (input 'window')",
                start,
                width,
            )
        states = []
        for t in range(xs.shape[1]):
            h = self.call_module(self.modules[cell], [xs[:, t], h], start, width)
            states.append(h)
        return self.g.stack(states, axis=1)

    def call_module(self, m: ModuleInfo, args: list[Any], start: int, width: int) -> NodeId:
        # Numbers are constants; anything else (a list, a string) is not a module input.
        args = [
            self.g.constant(float(a)) if isinstance(a, (int, float)) and not isinstance(a, bool) else a for a in args
        ]
        if not all(isinstance(a, NodeId) for a in args):
            raise X.ExprError("E-ARG", f"module {m.name} takes nodes or numbers as inputs", start, width)
        if m.call is None:
            self.build_module(m, args, start, width)
            if m.call is None:
                self.broken.add(m.name)
                raise _Poisoned(m.name)
        m.calls += 1
        try:
            return m.call(*args)
        except X.ExprError:
            raise
        except GraphError as e:
            code = "E-SHAPE" if isinstance(e, ShapeError) else "E-ARG"
            raise X.ExprError(code, f"calling module {m.name}: {e}", start, width) from None
        except TypeError:
            raise X.ExprError(
                "E-ARG", f"module {m.name} takes a different number of inputs ({len(args)} given)", start, width
            ) from None

    # -------------------------------------------------------------- modules

    def build_module(self, m: ModuleInfo, args: list[NodeId], start: int, width: int) -> None:
        spec = m.spec
        source = m
        if m.kind == "copy":
            src_name = spec.copy_of
            if src_name not in self.modules:
                if src_name not in self.broken:
                    self.error(
                        "E-NAME",
                        f"copy_of: unknown module {src_name!r}",
                        ("modules", m.name, "copy_of"),
                        hint=did_you_mean(str(src_name), self.modules),
                    )
                return
            source = self.modules[src_name]
            if source.kind == "copy":
                self.error(
                    "E-MODULE",
                    "copy_of must name a module with its own layers, not another copy",
                    ("modules", m.name, "copy_of"),
                )
                return
            spec = source.spec
        path: Path = ("modules", source.name)
        before = len(self.g._nodes)
        if spec.layers is not None:
            m.call = self.build_layers(m, spec.layers, args, path)
        elif spec.cell is not None:
            if len(args) != 2:
                raise X.ExprError("E-ARG", f"cell {m.name} is called as {m.name}(x, h)", start, width)
            cls = nn.GRUCell if spec.cell == "gru" else nn.RNNCell
            x = args[0]
            if not x.shape or x.shape[-1] is None:
                raise X.ExprError(
                    "E-SHAPE",
                    f"cell {m.name}: its input needs a fixed last dimension, got {_fmt(x.shape)}",
                    start,
                    width,
                )
            try:
                self.check_params(m.name, f"cell {m.name}", (x.shape[-1] + (spec.hidden or 1), 3 * (spec.hidden or 1)))
            except _LayerError as e:
                raise X.ExprError(e.code, str(e), start, width, e.hint) from None
            cell = cls(self.g, x.shape[-1], spec.hidden or 1, name=m.name)
            m.params = cell.parameters()
            m.call = cell
        else:
            m.call = self.build_subgraph(m, spec, path)
        if m.call is not None and not m.params:
            m.params = [NodeId(self.g, n.index) for n in self.g._nodes[before:] if n.kind == "parameter"]
            m.states = [NodeId(self.g, n.index) for n in self.g._nodes[before:] if n.kind == "state"]

    def build_layers(
        self, m: ModuleInfo, items: list[Any], args: list[NodeId], path: Path
    ) -> Callable[..., NodeId] | None:
        if len(args) != 1:
            self.error("E-ARG", f"module {m.name} is a layer list and takes one input, got {len(args)}", path)
            return None
        layers: list[Callable[[NodeId], NodeId]] = []
        x = args[0]
        if not self.plan_layers(m, items, x, path):
            return None
        for i, item in enumerate(items):
            ipath = self.layer_path(path, i)
            try:
                layer = self.layer(m.name, i, item, x, ipath)
                before = len(self.g._nodes)
                x = layer(x)
                self.check_values(f"layer {i} of module {m.name}", before)
            except GraphError as e:
                self.error(
                    "E-SHAPE" if isinstance(e, ShapeError) else "E-MODULE", f"layer {i} of module {m.name}: {e}", ipath
                )
                return None
            except _LayerError as e:
                self.error(e.code, str(e), ipath, hint=e.hint)
                return None
            layers.append(layer)
        first = [True]

        def call(x: NodeId) -> NodeId:
            if first[0]:  # the first call built the layers on this very input
                first[0] = False
                return x_out
            for layer in layers:
                x = layer(x)
            return x

        x_out = x
        return call

    def layer_path(self, path: Path, i: int) -> Path:
        """Where layer i of the module at path is written: under 'layers', or in the short form's list."""
        short = isinstance(_get(self.loc.data, path), list)
        return path + (i,) if short else path + ("layers", i)

    def check_layers_unbuilt(self) -> None:
        """The layer list of a module no expression built (never called, or its caller broke): its
        layer names are still checked, so that a typo there is not hidden."""
        for m in self.modules.values():
            if m.call is not None or m.name in self.broken or m.kind != "layers" or not m.spec.layers:
                continue
            for i, item in enumerate(m.spec.layers):
                try:
                    self.layer_kind(item)
                except _LayerError as e:
                    self.error("E-MODULE", str(e), self.layer_path(("modules", m.name), i), hint=e.hint)

    def layer_kind(self, item: Any) -> tuple[Any, Any]:
        """(kind, argument) of a layer item; raises _LayerError for a malformed item or an unknown layer."""
        if isinstance(item, str):
            kind, arg = item, None
        elif isinstance(item, dict) and len(item) == 1:
            kind, arg = next(iter(item.items()))
        else:
            raise _LayerError(f"a layer is a name (relu) or a one-key mapping ({{linear: 64}}), got {item!r}")
        if kind in LAYERS_WITH_PARAMS:
            return kind, arg
        op = self.ops.get(kind)
        if (
            op is None
            or len(op.input_names) != 1
            or op.variadic
            or (op.build is None and op.vjp_rule is None and kind != "dropout")
        ):
            options = [
                *LAYERS_WITH_PARAMS,
                *(k for k, v in self.ops.items() if len(v.input_names) == 1 and not v.variadic),
            ]
            raise _LayerError(f"unknown layer {kind!r}", did_you_mean(str(kind), options))
        return kind, arg

    def layer(self, module: str, i: int, item: Any, x: NodeId, path: Path) -> Callable[[NodeId], NodeId]:
        g = self.g
        kind, arg = self.layer_kind(item)
        name = f"{module}.{i}"
        if kind == "linear":
            opts = {"out": arg} if not isinstance(arg, dict) else dict(arg)
            out = opts.pop("out", None)
            bias = opts.pop("bias", True)
            init = opts.pop("init", "lecun_uniform")
            if opts:
                raise _LayerError(f"linear takes out, bias and init; unknown: {', '.join(map(str, opts))}")
            if not isinstance(out, int) or isinstance(out, bool) or out <= 0:
                raise _LayerError(f"linear needs a positive output size, e.g. {{linear: 64}}; got {out!r}")
            if not x.shape or x.shape[-1] is None:
                raise _LayerError(f"linear needs an input with a fixed last dimension, got {_fmt(x.shape)}")
            self.check_params(module, "linear", (x.shape[-1], out))
            too_big = self.budget.output("its output", (*x.shape[:-1], out), self.g.dtype.itemsize)
            if too_big is not None:  # refused before nn.Linear allocates the weights
                raise _LayerError(f"linear {out}: {too_big}", footprint.HINT, code="E-MEMORY")
            return nn.Linear(g, x.shape[-1], out, bias=bool(bias), name=name, init=str(init))
        if kind in ("batch_norm", "layer_norm"):
            opts = dict(arg) if isinstance(arg, dict) else {}
            if arg is not None and not isinstance(arg, dict):
                raise _LayerError(f"{kind} takes options as a mapping, e.g. {{{kind}: {{eps: 1.0e-5}}}}")
            if not x.shape or x.shape[-1] is None:
                raise _LayerError(f"{kind} needs an input with a fixed last dimension, got {_fmt(x.shape)}")
            self.check_params(module, kind, (x.shape[-1],))
            try:
                if kind == "batch_norm":
                    return nn.BatchNorm(g, x.shape[-1], name=name, **opts)
                return nn.LayerNorm(g, x.shape[-1], name=name, **opts)
            except TypeError as e:
                raise _LayerError(f"{kind}: {e}") from None
        if kind == "embedding":
            opts = dict(arg) if isinstance(arg, dict) else {}
            if set(opts) != {"num", "dim"} or not all(
                isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in opts.values()
            ):
                raise _LayerError("embedding takes {num: N, dim: D}, two positive integers")
            self.check_params(module, "embedding", (opts["num"], opts["dim"]))
            return nn.Embedding(g, opts["num"], opts["dim"], name=name)
        op = self.ops[kind]
        method = getattr(g, op.name)
        if isinstance(arg, dict) and not all(isinstance(k, str) for k in arg):
            raise _LayerError(f"{kind} takes options by name, e.g. {{{kind}: {{name: value}}}}")
        problem = _attr_problem(
            op,
            [None, *(arg if isinstance(arg, list) else [] if arg is None or isinstance(arg, dict) else [arg])],
            arg if isinstance(arg, dict) else {},
        )
        if problem:
            raise _LayerError(problem)
        if arg is None:
            return lambda v: method(v)
        if isinstance(arg, dict):
            return lambda v: method(v, **arg)
        if isinstance(arg, list):
            return lambda v: method(v, *arg)
        return lambda v: method(v, arg)

    def build_subgraph(self, m: ModuleInfo, spec: S.ModuleSpec, path: Path) -> Callable[..., NodeId] | None:
        params: dict[str, NodeId] = {}
        for pname, p in spec.params.items():  # all of them checked before any is allocated
            try:
                self.check_params(m.name, f"parameter {pname}", tuple(p.shape))
            except _LayerError as e:
                self.error(e.code, f"module {m.name}: {e}", path + ("params", pname, "shape"), hint=e.hint)
                return None
        for pname, p in spec.params.items():
            try:
                init_args: dict[str, Any] = dict(p.init_args)
                params[pname] = self.g.parameter(f"{m.name}.{pname}", shape=tuple(p.shape), init=p.init, **init_args)
            except GraphError as e:
                self.error("E-MODULE", f"parameter {pname} of module {m.name}: {e}", path + ("params", pname))
                return None
        arg_names = list(spec.args or [])
        trees: dict[str, ast.expr] = {}
        for key, text in [*spec.nodes.items(), ("<output>", spec.output or "")]:
            where = path + (("nodes", key) if key != "<output>" else ("output",))
            try:
                trees[key] = X.parse(text)
            except X.ExprError as e:
                self.expr_error(e, where)
                return None

        def call(*args: NodeId) -> NodeId:
            if len(args) != len(arg_names):
                raise TypeError
            local = dict(params)
            local.update(zip(arg_names, args))
            for key, tree in trees.items():
                where = path + (("nodes", key) if key != "<output>" else ("output",))
                try:
                    local[key] = X.evaluate(tree, self.scope(where, local))
                except X.ExprError as e:
                    self.expr_error(e, where)
                    raise _Poisoned(m.name) from None
            return local["<output>"]

        return call

    def finish_copies(self) -> dict[str, tuple[str, S.SyncSpec | None]]:
        targets = {}
        for m in self.modules.values():
            if m.kind != "copy":
                continue
            src = self.modules.get(m.spec.copy_of or "")
            if src is None or src.name in self.broken:
                continue
            if m.call is None:
                if not self.used_by_broken(m.name):
                    self.error(
                        "W-UNUSED",
                        f"target module {m.name} is never called",
                        ("modules", m.name),
                        key=True,
                        width=len(m.name),
                    )
                continue
            if len(src.params) != len(m.params) or any(a.shape != b.shape for a, b in zip(src.params, m.params)):
                self.error(
                    "E-MODULE",
                    f"{m.name} must be called with inputs shaped like {src.name}'s so that their parameters match",
                    ("modules", m.name, "copy_of"),
                )
                continue
            nn.copy_parameters(self.g, src.params, m.params)
            targets[m.name] = (src.name, m.spec.sync)
        return targets

    # -------------------------------------------------------------- data and inputs

    def check_data(self) -> dict[str, dict[str, Any]]:
        """The fields each split yields (name -> Field), from the data registry."""
        from .data.sources import DataError, get_source

        data = self.spec.data
        if data is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for split in ("train", "val", "test"):
            src = getattr(data, split)
            if src is None:
                continue
            if isinstance(src, S.SplitSpec):
                if "train" in out:
                    out[split] = out["train"]
                continue
            try:
                source = get_source(src.source)
                params = source.parse(src.model_dump(exclude={"source"}), self.base_dir)
                out[split] = source.fields(params)
                self.check_source_size(split, src, out[split])
            except DataError as e:
                where = (
                    ("data", split, e.param)
                    if e.param and e.param in (self.loc.data["data"][split] or {})
                    else ("data", split)
                )
                self.error("E-DATA", str(e), where)
        return out

    def check_source_size(self, split: str, src: Any, fields: dict[str, Any]) -> None:
        """A data source that alone would pass the memory limit (n, a replay capacity, rollout steps)."""
        for item in footprint.source_items(split, src, fields, self.g.dtype.itemsize):
            if item.nbytes > self.limit.nbytes:
                self.error(
                    "E-MEMORY",
                    f"{item.what} needs about {footprint.human_size(item.nbytes)}, "
                    f"more than the limit of {self.limit.describe()}",
                    item.path,
                    hint=footprint.HINT,
                )
                return

    def build_inputs(self) -> dict[str, NodeId]:
        inputs: dict[str, NodeId] = {}
        self.unfed: set[str] = set()
        for name, spec in self.spec.inputs.items():
            if name in self.broken:
                continue
            path = ("inputs", name)
            shape = (None, *spec.shape)
            dtype = "int64" if spec.dtype == "int64" else None
            if spec.from_ is not None:
                self.check_input_source(name, spec, path)
            inputs[name] = self.g.input(name, shape=shape, dtype=dtype)
            self.names[name] = inputs[name]
            too_big = self.budget.values(f"input {name}", [self.g._node(inputs[name])])
            if too_big is not None:
                where = path + ("shape",) if "shape" in (self.loc.data.get("inputs", {}).get(name) or {}) else path
                self.error("E-MEMORY", too_big, where, hint=footprint.HINT)
                self.broken.add(name)  # what reads it stays quiet
                del inputs[name], self.names[name]
        return inputs

    def check_input_source(self, name: str, spec: S.InputSpec, path: Path) -> None:
        errors = len(self.report.errors)
        self._check_input_source(name, spec, path)
        if len(self.report.errors) > errors:
            self.unfed.add(name)  # its data problem is reported: later checks stay quiet about it

    def _check_input_source(self, name: str, spec: S.InputSpec, path: Path) -> None:
        src = spec.from_ or ""
        where = path + ("from",)
        if src in ("noise.normal", "noise.uniform"):
            if spec.dtype != "float":
                self.error("E-TYPE", f"input {name}: noise is float, not {spec.dtype}", path + ("dtype",))
            return
        split, _, fname = src.partition(".")
        if src.startswith("noise."):
            self.error(
                "E-DATA",
                f"unknown noise {src!r}; use noise.normal or noise.uniform",
                where,
                hint=did_you_mean(src, ["noise.normal", "noise.uniform"]),
            )
            return
        if not fname or split not in ("train", "val", "test"):
            self.error(
                "E-DATA", f"'from' takes SPLIT.FIELD (e.g. train.x), noise.normal or noise.uniform; got {src!r}", where
            )
            return
        if self.spec.data is None:
            if "<data>" not in self.broken:
                self.error("E-DATA", f"input {name} reads {src!r}, but the spec has no data section", where)
            return
        if split not in self.data_fields:
            if getattr(self.spec.data, split, None) is None and f"<data.{split}>" not in self.broken:
                self.error("E-DATA", f"input {name} reads the {split} split, which data does not define", where)
            return
        fields = self.data_fields[split]
        if fname not in fields:
            self.error(
                "E-DATA",
                f"the {split} data has no field {fname!r} (it has: {', '.join(fields)})",
                where,
                hint=did_you_mean(fname, fields),
            )
            return
        f = fields[fname]
        want_shape = list(f.shape)
        if spec.window is not None:
            if len(f.shape) < 1 or f.shape[0] % spec.window:
                self.error(
                    "E-SHAPE",
                    f"input {name}: window {spec.window} must divide the length of {src}'s axis 1 (per-sample shape {list(f.shape)})",
                    path + ("window",),
                )
                return
            want_shape = [spec.window, *f.shape[1:]]
        if list(spec.shape) != want_shape:
            where = path + ("shape",) if "shape" in (self.loc.data.get("inputs", {}).get(name) or {}) else path
            per = f"windows of {src} have" if spec.window else f"{src} has"
            self.error(
                "E-SHAPE",
                f"input {name} has shape {list(spec.shape)}, but {per} per-sample shape {want_shape}",
                where,
                hint=f"use shape: {want_shape}",
            )
        want = "int64" if f.dtype == "int64" else "float"
        if want != spec.dtype:
            self.error(
                "E-TYPE",
                f"input {name} is {spec.dtype}, but {src} holds {want} values",
                path,
                hint=f"use dtype: {want}",
            )

    def check_carries(self) -> dict[str, NodeId]:
        carries = {}
        for name, spec in self.spec.inputs.items():
            if spec.carry is None or name not in self.inputs:
                continue
            path = ("inputs", name, "carry")
            node = self.names.get(spec.carry)
            if node is None:
                if spec.carry not in self.broken:
                    self.error(
                        "E-NAME",
                        f"carry: unknown node {spec.carry!r}",
                        path,
                        hint=did_you_mean(spec.carry, self.known_names()),
                    )
                continue
            inp = self.inputs[name]
            if tuple(node.shape) != tuple(inp.shape):
                self.error(
                    "E-SHAPE",
                    f"input {name} {_fmt(inp.shape)} carries {spec.carry} {_fmt(node.shape)}: the shapes must be equal",
                    path,
                )
                continue
            carries[name] = node
        return carries

    def live_source(self) -> Any:
        """The train source when it is a gym source (filled while training), else None."""
        from .data.sources import live_train_source

        return live_train_source(self.spec)

    def check_live_source(self) -> None:
        """A gym source runs nodes of the graph: they must exist, have the right types and
        shapes, and read nothing but the observations (and noise)."""
        from .data.policy import observation_inputs
        from .data.sources import SOURCES

        data = self.spec.data
        if data is None:
            return
        for split in ("val", "test"):
            src = getattr(data, split)
            if src is not None and not isinstance(src, S.SplitSpec) and SOURCES[src.source].live:
                self.error(
                    "E-DATA",
                    f"{src.source} can only be the train source: evaluation runs whole episodes instead "
                    "(eval.episodes)",
                    ("data", split, "source"),
                )
        src = self.live_source()
        if src is None:
            for key in ("episodes", "policy"):
                if self.spec.eval is not None and key in self.spec.eval.model_fields_set:
                    self.error(
                        "E-ARG", f"eval.{key} needs a gym training source (gym.rollout or gym.replay)", ("eval", key)
                    )
            return
        if "<data.train>" in self.broken or "train" not in self.data_fields:
            return
        path: Path = ("data", "train")
        obs = [n for n in observation_inputs(self.spec) if n in self.inputs]
        if not obs and not self.unfed:
            self.error(
                "E-DATA",
                f"{src.source}: no input reads the observations; declare one, e.g. "
                f"obs: {{shape: {list(self.data_fields['train']['obs'].shape)}, from: train.obs}}",
                path + ("source",),
            )
        allowed = {
            *obs,
            *self.unfed,
            *(n for n, i in self.spec.inputs.items() if i.from_ and i.from_.startswith("noise.")),
        }
        for key, want in (("action", "action"), ("log_prob", "float"), ("value", "float")):
            name = getattr(src, key, None)
            if name is None:
                continue
            where = path + (key,)
            node = self.names.get(name)
            if node is None:
                if name in self.modules:
                    self.error(
                        "E-NAME",
                        f"{src.source}: {key}: {name!r} is a module, not a node",
                        where,
                        hint=f"name a node that calls it, e.g. nodes: {{{key}_out: {name}(...)}}",
                    )
                elif name not in self.broken:
                    self.error(
                        "E-NAME",
                        f"{src.source}: {key}: unknown node {name!r}",
                        where,
                        hint=did_you_mean(name, self.known_names()),
                    )
                continue
            shape = tuple(node.shape)
            if want == "action":
                if self.g._node(node).dtype.kind != "i" or shape != (None,):
                    self.error(
                        "E-TYPE",
                        f"{src.source}: action node {name} must be integer actions of shape (N,), "
                        f"not {self.g._node(node).dtype} {_fmt(shape)}",
                        where,
                        hint="e.g. categorical_sample(logits) or argmax(q, axis=1)",
                    )
            elif self.g._node(node).dtype.kind != "f":
                self.error(
                    "E-TYPE", f"{src.source}: {key} node {name} must be float, not {self.g._node(node).dtype}", where
                )
            elif shape not in ((None,), (None, 1)):
                self.error(
                    "E-SHAPE",
                    f"{src.source}: {key} node {name} must have shape (N,) or (N, 1), not {_fmt(shape)}",
                    where,
                )
            plan_nodes = self.g._forward_plan([self.g._node(node)]).nodes
            moded = sorted(
                {a.op.name.removesuffix("_mask") for a in plan_nodes if a.op is not None and a.op.mode_dependent}
            )
            if moded:
                self.error(
                    "W-MODE",
                    f"{src.source}: {key} node {name} goes through {', '.join(moded)}: it is computed in eval mode "
                    "while acting (under no_grad) but in train mode while training, so the two differ"
                    + (
                        "; the recorded log-probabilities will not match the training ones" if key == "log_prob" else ""
                    ),
                    where,
                    hint="leave dropout and batch norm out of the policy and the critic",
                )
            reads = {a.name for a in plan_nodes if a.kind == "input"}
            if reads - allowed:
                self.error(
                    "E-ARG",
                    f"{src.source}: {key} node {name} reads {', '.join(sorted(reads - allowed))}, which the rollout "
                    "cannot feed: while acting, only the observations (inputs from train.obs) and noise have values",
                    where,
                )
        train = self.spec.train
        if train is not None and train.epochs is not None:
            self.error(
                "E-ARG",
                f"train.epochs counts passes over a fixed data set; with {src.source} give train.steps (iterations)",
                ("train", "epochs"),
            )
        if train is not None and src.source == "gym.replay":
            for pi, ph in enumerate(train.schedule):
                if ph.epochs is not None:
                    self.error(
                        "E-ARG",
                        f"phase {ph.name}: epochs needs a fixed set of samples; a replay buffer serves one random "
                        "minibatch per repetition (use repeat)",
                        ("train", "schedule", self.phase_index[pi] if self.phase_index else pi, "epochs"),
                    )

    # -------------------------------------------------------------- losses, metrics, eval

    def check_losses(self, losses: dict[str, NodeId]) -> None:
        for name, node in list(losses.items()):
            if any(d != 1 for d in node.shape):
                self.error(
                    "E-LOSS",
                    f"loss {name} must be a scalar, but has shape {_fmt(node.shape)}",
                    ("losses", name),
                    hint="reduce it, e.g. mean(...)",
                )
                del losses[name]  # no backward can run on it; the phases that use it stay quiet
                self.broken.add(name)

    def check_metrics(self, metrics: dict[str, NodeId]) -> None:
        for name, node in metrics.items():
            if any(d != 1 for d in node.shape):
                self.error(
                    "E-LOSS",
                    f"metric {name} must be a scalar, but has shape {_fmt(node.shape)}",
                    ("metrics", name),
                    hint="reduce it, e.g. mean(...)",
                )

    def check_eval(self, losses: dict[str, NodeId], metrics: dict[str, NodeId]) -> None:
        ev = self.spec.eval
        if ev is None:
            return
        if (
            self.spec.data is not None
            and self.live_source() is None
            and getattr(self.spec.data, ev.split) is None
            and f"<data.{ev.split}>" not in self.broken
        ):
            self.error("E-DATA", f"eval uses the {ev.split} split, which data does not define", ("eval", "split"))
        for i, name in enumerate(ev.metrics or []):
            if name not in metrics and name not in losses and name not in self.broken:
                self.error(
                    "E-NAME",
                    f"eval: unknown metric {name!r}",
                    ("eval", "metrics", i),
                    hint=did_you_mean(name, [*metrics, *losses]),
                )
        if ev.samples is not None:
            node = self.names.get(ev.samples.node)
            if node is None:
                if ev.samples.node not in self.broken:
                    self.error(
                        "E-NAME",
                        f"eval.samples: unknown node {ev.samples.node!r}",
                        ("eval", "samples", "node"),
                        hint=did_you_mean(ev.samples.node, self.known_names()),
                    )
            else:
                data_inputs = [
                    n
                    for n, i in self.spec.inputs.items()
                    if i.from_ and not i.from_.startswith("noise.") and n in self.inputs
                ]
                reads = {a.name for a in self.g._forward_plan([self.g._node(node)]).nodes if a.kind == "input"}
                if reads & set(data_inputs):
                    self.error(
                        "E-ARG",
                        f"eval.samples: {ev.samples.node} reads data inputs ({', '.join(sorted(reads & set(data_inputs)))}); samples must come from noise only",
                        ("eval", "samples", "node"),
                    )

    # -------------------------------------------------------------- optimizers

    def select(self, patterns: list[str], path: Path) -> list[NodeId] | None:
        """Parameters named by module names, parameter names or globs."""
        params = self.g.parameters()
        by_name = {p.name: p for p in params}
        out: dict[str, NodeId] = {}
        ok = True
        for i, pat in enumerate(patterns):
            hit: list[NodeId] = []
            if pat in self.modules:
                hit = list(self.modules[pat].params)
                if not hit and self.modules[pat].call is None:
                    if not self.used_by_broken(pat):
                        self.error("W-UNUSED", f"module {pat} is never called, so it has no parameters", path + (i,))
                    continue
            elif pat in self.broken:
                ok = False
                continue
            else:
                mods = [m for m in self.modules if fnmatch.fnmatchcase(m, pat)]
                hit = [p for m in mods for p in self.modules[m].params] + [
                    p for n, p in by_name.items() if fnmatch.fnmatchcase(n, pat)
                ]
                if not hit:
                    self.error(
                        "E-NAME",
                        f"{pat!r} names no module or parameter",
                        path + (i,),
                        hint=did_you_mean(pat, [*self.modules, *by_name]),
                    )
                    ok = False
            for p in hit:
                out.setdefault(p.name, p)
        return list(out.values()) if ok else None

    def select_optimizer_params(self) -> dict[str, list[NodeId]]:
        copies = {p.name for m in self.modules.values() if m.kind == "copy" for p in m.params}
        out = {}
        for name, opt in self.spec.optimizers.items():
            params = self.select(list(opt.params), ("optimizers", name, "params"))
            if params is None:
                self.broken.add(name)
                continue
            bad = [p.name for p in params if p.name in copies]
            if bad:
                self.error(
                    "E-PHASE",
                    f"optimizer {name} would train target-copy parameters ({', '.join(bad[:3])}); a copy_of module follows its source by sync",
                    ("optimizers", name, "params"),
                )
            out[name] = params
        return out

    def build_optimizers(self, opt_params: dict[str, list[NodeId]]) -> tuple[dict[str, Any], dict[str, Any]]:
        from .optim import OPTIMIZERS, SCHEDULES

        optimizers: dict[str, Any] = {}
        schedules: dict[str, Any] = {}
        for name, opt in self.spec.optimizers.items():
            path: Path = ("optimizers", name)
            hyper = opt.model_dump(exclude={"type", "params", "schedule"})
            if "betas" in hyper and hyper["betas"] is not None:
                hyper["betas"] = tuple(hyper["betas"])
            sched = opt.schedule.model_dump(exclude={"type"}) if opt.schedule is not None else None
            # The hyper-parameters are checked on a scratch parameter first, so that they are
            # checked even when the optimizer's own parameters cannot be selected.
            scratch = Graph()
            try:
                probe = OPTIMIZERS[opt.type](scratch, [scratch.parameter("p", shape=(1,), init="zeros")], **hyper)
            except GraphError as e:
                self.error("E-TYPE", f"optimizer {name}: {e}", self._hyper_path(path, str(e)))
                continue
            if opt.schedule is not None:
                try:
                    SCHEDULES[opt.schedule.type](probe, **(sched or {}))
                except GraphError as e:
                    self.error(
                        "E-TYPE", f"schedule of optimizer {name}: {e}", self._hyper_path(path + ("schedule",), str(e))
                    )
                    continue
            if name not in opt_params or not opt_params[name]:
                continue
            try:
                optimizers[name] = OPTIMIZERS[opt.type](self.g, opt_params[name], **hyper)
            except GraphError as e:
                self.error("E-TYPE", f"optimizer {name}: {e}", path)
                continue
            if opt.schedule is not None:
                try:
                    schedules[name] = SCHEDULES[opt.schedule.type](optimizers[name], **(sched or {}))
                except GraphError as e:
                    self.error(
                        "E-TYPE", f"schedule of optimizer {name}: {e}", self._hyper_path(path + ("schedule",), str(e))
                    )
        return optimizers, schedules

    def _hyper_path(self, path: Path, message: str) -> Path:
        """The key of the hyper-parameter a message names (``lr``, ``betas``, ...), else path."""
        import re

        given = _get(self.loc.data, path)
        if isinstance(given, dict):
            for key in given:
                if key not in ("type", "params", "schedule") and re.search(rf"\b{re.escape(str(key))}\b", message):
                    return path + (key,)
        return path

    # -------------------------------------------------------------- phases

    def analyse_phases(
        self, losses: dict[str, NodeId], opt_params: dict[str, list[NodeId]], optimizers: dict[str, Any]
    ) -> list[PhaseInfo]:
        train = self.spec.train
        if train is None:
            return []
        phases = []
        seen: set[str] = set()
        for pi, ph in enumerate(train.schedule):
            path: Path = ("train", "schedule", self.phase_index[pi] if self.phase_index else pi)
            if ph.name in seen:
                self.error("E-DUP", f"two phases are called {ph.name!r}", path + ("name",))
            elif (reserved := monitor.reserved_phase_name(ph.name)) is not None:
                self.error("E-DUP", reserved, path + ("name",), hint="give the phase another name")
            if ph.epochs is not None and "repeat" in ph.model_fields_set:
                self.error(
                    "E-ARG",
                    f"phase {ph.name}: give 'repeat' (runs per iteration) or 'epochs' (passes over the data), not both",
                    path + ("epochs",),
                    key=True,
                )
            seen.add(ph.name)
            ok = True
            detach = []
            for i, d in enumerate(ph.detach):
                if d in self.names:
                    detach.append(self.names[d])
                elif d not in self.broken:
                    self.error(
                        "E-NAME",
                        f"detach: unknown node {d!r}",
                        path + ("detach", i),
                        hint=did_you_mean(d, self.known_names()),
                    )
                    ok = False
                else:
                    ok = False
            steps = []
            for i, o in enumerate(ph.step):
                if o in self.broken:
                    ok = False
                elif o not in self.spec.optimizers:
                    self.error(
                        "E-NAME",
                        f"step: unknown optimizer {o!r}",
                        path + ("step", i),
                        hint=did_you_mean(o, self.spec.optimizers),
                    )
                    ok = False
                elif o not in optimizers:
                    ok = False
                else:
                    steps.append(o)
            default_wrt = list({p.name: p for o in steps for p in opt_params.get(o, [])}.values())
            backwards = []
            for bi, b in enumerate(ph.backward):
                bpath = path + ("backward", bi)
                if b.loss not in losses:
                    if b.loss not in self.broken:
                        hint = did_you_mean(b.loss, self.spec.losses)
                        what = "is a metric, not a loss" if b.loss in self.spec.metrics else "is not a loss"
                        self.error("E-NAME", f"backward: {b.loss!r} {what}", bpath + ("loss",), hint=hint)
                    ok = False
                    continue
                if b.wrt is not None:
                    targets = self.select(list(b.wrt), bpath + ("wrt",))
                    if targets is None:
                        ok = False
                        continue
                else:
                    targets = default_wrt
                    if not targets and ok:
                        self.error(
                            "E-PHASE",
                            f"phase {ph.name}: backward of {b.loss} has no targets: give 'wrt', or 'step' an optimizer",
                            bpath,
                        )
                        ok = False
                        continue
                loss_node = losses[b.loss] if b.weight == 1.0 else self.g.mul(losses[b.loss], b.weight)
                backwards.append(BackwardInfo(b.loss, targets, b.retain_graph, b.weight, loss_node))
            info = PhaseInfo(ph.name, ph, detach, backwards, steps)
            if ok:
                self.analyse_phase(info, path, opt_params)
            phases.append(info)
        return phases

    def analyse_phase(self, info: PhaseInfo, path: Path, opt_params: dict[str, list[NodeId]]) -> None:
        g = self.g
        for d in info.detach:
            g.detach_node(d)
        try:
            for b in info.backward:
                b.plan = g._backward_plan(g._node(b.loss_node), [g._node(t) for t in b.targets])
                b.reached = [t for t, gn in zip(b.targets, b.plan.grads) if gn is not None]
        finally:
            for d in info.detach:
                g.attach_node(d)
        # What each detach cuts: parameters a backward's loss reaches without it but not with it.
        everything = g.parameters()
        for d in info.detach:
            cut: list[str] = []
            for b in info.backward:
                with_cut = {p.name for p in _reach(g, b.loss_node, everything, info.detach)}
                free = _reach(g, b.loss_node, everything, [x for x in info.detach if x != d])
                cut += [p.name for p in free if p.name not in with_cut and p.name not in cut]
            info.cut[g._node(d).name] = cut
        reached = {p.name for b in info.backward for p in b.reached}
        for i, o in enumerate(info.step):
            names = [p.name for p in opt_params.get(o, [])]
            if names and not any(n in reached for n in names):
                cuts = [d for d, ps in info.cut.items() if any(n in ps for n in names)]
                why = f": {', '.join(cuts)} {'is' if len(cuts) == 1 else 'are'} detached" if cuts else ""
                self.error(
                    "E-PHASE",
                    f"phase {info.name} steps {o}, but no backward of the phase reaches its parameters{why}",
                    path + ("step", i),
                    hint="check the phase's detach list and the backward's wrt",
                )
        bpath = path + ("backward",)
        for k, b in enumerate(info.backward):
            if b.plan is None:
                continue
            released = {n.index for n in b.plan.path}
            later_need = []
            for j in range(k + 1, len(info.backward)):
                pj = info.backward[j].plan
                if pj is None:
                    continue
                needs = {n.index for n in pj.needed} | {g._node(info.backward[j].loss_node).index}
                later_need.append((j, needs))
            if not b.retain_graph:
                for j, needs in later_need:
                    hit = sorted(released & needs)
                    if hit:
                        shown = ", ".join(repr(g._nodes[i].name) for i in hit[:3])
                        self.error(
                            "E-RELEASED",
                            f"phase {info.name}: backward {j + 1} ({info.backward[j].loss}) needs values that backward {k + 1} ({b.loss}) releases: {shown}",
                            bpath + (j,),
                            hint=f"add retain_graph: true to backward {k + 1}",
                        )
                        break
            elif not any(released & needs for _, needs in later_need):
                self.error(
                    "W-RETAIN",
                    f"phase {info.name}: retain_graph on backward {k + 1} ({b.loss}) keeps values no later backward of the phase needs (wasted memory)",
                    bpath + (k, "retain_graph"),
                    hint="remove retain_graph: true",
                )

    def check_unused(
        self, opt_params: dict[str, list[NodeId]], phases: list[PhaseInfo], targets: dict[str, Any]
    ) -> None:
        trained: set[str] = set()
        for ph in phases:
            reached = {p.name for b in ph.backward for p in b.reached}
            for o in ph.step:
                trained |= {p.name for p in opt_params.get(o, []) if p.name in reached}
        copies = {p.name for m in self.modules.values() if m.kind == "copy" for p in m.params}
        if self.spec.train is not None and not self.report.errors:
            idle: dict[str, list[str]] = {}  # module -> its parameters no phase updates
            for p in self.g.parameters():
                if p.name not in trained and p.name not in copies:
                    idle.setdefault(p.name.split(".", 1)[0], []).append(p.name)
            for module, names in idle.items():
                where = ("modules", module) if module in self.spec.modules else ("optimizers",)
                what = f"parameter {names[0]} is" if len(names) == 1 else f"parameters {', '.join(names)} are"
                self.error(
                    "W-UNUSED",
                    f"{what} never updated by any phase",
                    where,
                    key=module in self.spec.modules,
                    width=len(module),
                )
        for name, m in self.modules.items():
            if m.call is None and name not in self.broken and m.kind != "copy" and not self.used_by_broken(name):
                self.error("W-UNUSED", f"module {name} is never called", ("modules", name), key=True, width=len(name))

    def used_by_broken(self, module: str) -> bool:
        """Whether a definition that failed names this module, or a misspelling of it (so that it may
        be uncalled only because of that failure)."""
        import difflib
        import re

        def word(text: str) -> bool:
            tokens = set(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", text))
            if module in tokens:
                return True
            unknown = tokens - self.raw_modules - set(self.ops) - set(SPECIAL_FUNCTIONS) - set(self.known_names())
            return bool(difflib.get_close_matches(module, unknown, n=1, cutoff=0.6))

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


class _LayerError(Exception):
    def __init__(self, message: str, hint: str | None = None, code: str = "E-MODULE") -> None:
        super().__init__(message)
        self.hint = hint
        self.code = code


MAX_ELEMENTS = 2**27  # per parameter: validate allocates and initialises every parameter
MAX_UNROLL = 4096  # scan steps: each one is a copy of the cell in the static graph


def _check_size(what: str, shape: tuple[int, ...]) -> None:
    """Refuse a parameter too large to allocate (a typo such as linear: 1000000000), before numpy tries."""
    n = 1
    for d in shape:
        n *= d
    if n > MAX_ELEMENTS:
        raise _LayerError(
            f"{what} would need a parameter of {n:,} values (shape {tuple(shape)}); the limit is {MAX_ELEMENTS:,}"
        )


def _attr_problem(op: Any, args: list[Any], kwargs: dict[str, Any]) -> str | None:
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


def _reach(g: Graph, loss: NodeId, targets: list[NodeId], detach: list[NodeId]) -> list[NodeId]:
    """The targets a backward of loss reaches with exactly the given nodes detached."""
    saved = {i for i in g._detached}
    for n in list(g._detached):
        g.attach_node(NodeId(g, n))
    for d in detach:
        g.detach_node(d)
    try:
        plan = g._backward_plan(g._node(loss), [g._node(t) for t in targets])
        return [t for t, gn in zip(targets, plan.grads) if gn is not None]
    finally:
        for n in list(g._detached):
            g.attach_node(NodeId(g, n))
        for i in saved:
            g.detach_node(NodeId(g, i))


def _fmt(shape: tuple[Any, ...]) -> str:
    from .ops.shapes import fmt

    return fmt(shape)
