"""Loading a sweep file: every problem reported at once, located ``file:line:col`` in the sweep file
(or, for the base spec's own problems, in the spec file), with the spec language's machinery: the
located YAML loader (unsafe tags refused), pydantic errors as diagnostics with a did-you-mean,
``--set``'s path rules (``spec.overrides.apply``) for every path of ``set`` and ``space``, and
the monitor rules of ``onlytorch.monitor`` for the metric.

``load_sweep(path) -> (Sweep | None, Report)``: the Sweep when there is no error."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import pathlib
import re
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from ..safe_files import MAX_SPEC_BYTES, RefusedFile, expand_user, read_regular, short_repr
from ..spec.diagnostics import Diagnostic, Path, Report, cut
from ..spec.overrides import apply
from ..spec.pydantic_errors import validation_diagnostics
from ..spec.schema import RUN_NAME
from ..spec.yaml_loader import Located, load
from ..suggest import did_you_mean
from .checks import chosen_on_test, pruner_problem
from .distributions import check_entry
from .schema import KINDS, PRUNERS, SAMPLERS, SweepSpec
from .space import Param, flow, grid_size

__all__ = ["SpecDiagnostic", "Sweep", "SweepReport", "load_sweep"]

MAX_CHECKED_CHOICES = 50  # choices of one entry whose values are checked against the base spec
SEED_PATH = ("seed",)
MONITOR_PATH = ("train", "monitor")


@dataclass(frozen=True)
class Sweep:
    """A valid sweep file, resolved against its base spec. ``fixed``: ``key=value`` overrides for
    every trial (``set``, then the monitor when the file gives one); ``split``: the monitor's split
    (train, val, test) or what it is measured on otherwise (episodes, samples)."""

    file: pathlib.Path
    sha256: str
    name: str
    spec: pathlib.Path
    fixed: list[str]
    params: list[Param]
    trials: int
    seeds: list[int]
    sampler: dict[str, Any]
    pruner: dict[str, Any]
    metric: str
    split: str | None
    mode: Literal["min", "max"]
    direction: Literal["minimize", "maximize"]
    objective: Literal["best", "final"]
    max_failures: int

    def identity(self) -> dict[str, Any]:
        """What must not change between runs into one sweep directory (not ``trials``: asking for
        more trials continues the study), as plain JSON data."""
        return json.loads(
            json.dumps(
                {
                    "spec": str(self.spec),
                    "fixed": self.fixed,
                    "params": [p.to_json() for p in self.params],
                    "seeds": self.seeds,
                    "sampler": self.sampler,
                    "pruner": self.pruner,
                    "metric": self.metric,
                    "split": self.split,
                    "mode": self.mode,
                    "objective": self.objective,
                }
            )
        )


@dataclass
class SpecDiagnostic(Diagnostic):
    """A problem of the base spec (E-SWEEP-SPEC), located in the spec file rather than the sweep file."""

    file: str = ""
    source: list[str] = field(default_factory=list)

    def render(self, filename: str, lines: list[str]) -> str:
        return super().render(self.file, self.source)

    def to_json(self, filename: str) -> dict[str, Any]:
        return super().to_json(self.file)


class SweepReport(Report):
    """The report of a sweep file: its own diagnostics in file order, then the base spec's."""

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (isinstance(d, SpecDiagnostic), d.line or 0, d.column or 0, d.code))


def load_sweep(path: str | os.PathLike[str]) -> tuple[Sweep | None, Report]:
    """The sweep file at path and its report; the Sweep is None when the report holds errors."""
    report = SweepReport(os.fspath(path), "")
    try:
        raw = read_regular(path, MAX_SPEC_BYTES, "the sweep file")
    except RefusedFile as e:
        report.add(Diagnostic("E-YAML", f"cannot read the sweep file: {e.reason}"))
        return None, report
    except OSError as e:
        report.add(Diagnostic("E-YAML", f"cannot read the sweep file: {e.strerror or e}"))
        return None, report
    try:
        report.text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        report.text = raw.decode("utf-8", errors="replace")
        line = raw.count(b"\n", 0, e.start) + 1
        column = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        report.add(
            Diagnostic("E-YAML", f"the sweep file is not UTF-8 text: byte {raw[e.start]:#04x}", (), line, column)
        )
        return None, report
    located = load(report.text)
    report.extend(located.diagnostics)
    if any(d.code == "E-YAML" for d in located.diagnostics):
        return None, report
    if not isinstance(located.data, dict):
        at_line, at_col = located.at(())
        report.add(
            Diagnostic("E-TYPE", "a sweep file is a mapping (version, spec, space, ...)", (), at_line or 1, at_col or 1)
        )
        return None, report
    checker = _Checker(pathlib.Path(os.fspath(path)), raw, located, report)
    return checker.run(), report


def spec_problems(data: dict[str, Any]) -> list[Diagnostic]:
    """What the spec language's models say about spec data (unlocated): what a value put at a path
    breaks. Cheap (a millisecond): no compile."""
    from ..spec.schema import Spec

    try:
        Spec.model_validate(data)
    except ValidationError as err:
        return validation_diagnostics(err, Located(data=data), (), Spec)
    return []


class _Checker:
    """The checks of one sweep file, in order; each adds its diagnostics to the report."""

    def __init__(self, path: pathlib.Path, raw: bytes, located: Located, report: Report) -> None:
        self.path, self.raw, self.loc, self.report = path, raw, located, report
        self.data: dict[str, Any] = located.data
        self.model: SweepSpec | None = None
        self.broken: set[str] = set()  # top-level keys whose value did not validate
        self.bad_entries: set[str] = set()  # space entries that did not validate (or fail a later check)
        self.base: dict[str, Any] | None = None  # the base spec's data, with the good set entries applied
        self.spec_path: pathlib.Path | None = None
        self.spec_text = ""
        self.spec_name = ""
        self.good_set: list[tuple[str, Any]] = []
        self.params: list[Param] = []
        self.written: dict[str, list[tuple[Path, str]]] = {}  # what each good set entry writes in the spec
        self.space_written: set[tuple[Any, ...]] = set()  # the parts of the spec the space entries write
        self.monitor_given = isinstance(self.data.get("monitor"), dict)

    # ------------------------------------------------------------ helpers

    def error(self, code: str, message: str, path: Path, key: bool = False, hint: str | None = None) -> None:
        line, col = self.loc.at(path, key=key)
        width = len(str(path[-1])) if key and path else 1
        self.report.add(Diagnostic(code, message, path, line, col, hint, width=width))

    # ------------------------------------------------------------ the passes

    def run(self) -> Sweep | None:
        self.model = self.validate()
        if self.model is None:
            return None
        self.check_distributions(self.model)
        if "spec" in self.broken or not self.read_base_spec(self.model.spec):
            return None
        if self.base is not None:  # else the spec is no YAML mapping: compiling it says so, in it
            self.check_set(self.model)
            self.check_space(self.model)
        compiled = self.compile(self.model)
        if compiled is None:
            return None
        return self.plan(self.model, compiled)

    def validate(self) -> SweepSpec | None:
        """The pydantic models; what validates on its own is kept for the later checks."""
        try:
            return SweepSpec.model_validate(self.data)
        except ValidationError as err:
            errors = err.errors()
            for d in validation_diagnostics(err, self.loc, (), SweepSpec):
                self.report.add(self._recode(d))
        space = self.data.get("space")
        for e in errors:
            loc = e["loc"]
            if len(loc) >= 2 and loc[0] == "space" and isinstance(space, dict) and loc[1] in space:
                self.bad_entries.add(str(loc[1]))
            elif loc:
                self.broken.add(str(loc[0]))
        kept = {k: v for k, v in self.data.items() if k not in self.broken}
        if isinstance(kept.get("space"), dict):
            kept["space"] = {k: v for k, v in kept["space"].items() if k not in self.bad_entries}
        kept.setdefault("version", 1)
        kept.setdefault("spec", "")
        if "spec" not in self.data:
            self.broken.add("spec")
        try:
            return SweepSpec.model_validate(kept)
        except ValidationError:
            return None

    def _recode(self, d: Diagnostic) -> Diagnostic:
        """pydantic's diagnostics in the sweep's words: a space entry that is not a mapping (a value, not a
        distribution), a sampler or pruner type, an option of another type (at that option's key)."""
        if d.code == "E-MISSING" and not d.path:
            d.message = d.message.replace("the spec needs", "the sweep file needs", 1)
        if len(d.path) == 2 and d.path[0] in ("sampler", "pruner") and d.path[1] == "type":
            options = SAMPLERS if d.path[0] == "sampler" else PRUNERS
            got = self.data[d.path[0]].get("type")
            d.message = f"{d.path[0]}: unknown type {short_repr(got)}; use one of: {', '.join(options)}"
        section = self.data.get(d.path[0]) if len(d.path) == 1 and d.path[0] in ("sampler", "pruner") else None
        if isinstance(section, dict):  # "KEY applies to ...": point at that key
            key = next((k for k in section if isinstance(k, str) and d.message.startswith(f"{d.path[0]}: {k}")), None)
            if key is not None:
                d.path = (d.path[0], key)
                d.line, d.column = self.loc.at(d.path, key=True)
                d.width = len(key)
        space = self.data.get("space")
        if len(d.path) == 2 and d.path[0] == "space" and isinstance(space, dict):
            value = space.get(d.path[1])
            if not isinstance(value, dict):
                d.code = "E-SWEEP-SPACE"
                d.message = (
                    f"space {d.path[1]}: a distribution is a mapping, {{loguniform: [low, high]}}, "
                    f"{{uniform: [low, high]}}, {{int: [low, high]}} or {{choice: [...]}}; got {short_repr(value)}"
                )
                d.hint = "a value every trial uses goes under set:"
        return d

    def check_distributions(self, model: SweepSpec) -> None:
        """Each space entry: exactly one kind, the options that kind takes, and bounds that make a range."""
        for key, dist in model.space.items():
            param, problem = check_entry(key, dist, self.loc)
            if problem is not None:
                code, message, path, at_key, hint = problem
                self.bad_entries.add(key)
                self.error(code, message, path, at_key, hint)
            elif param is not None:
                self.params.append(param)

    def read_base_spec(self, value: str) -> bool:
        """The base spec's text and data (E-SWEEP-SPEC at ``spec:`` when it cannot be read)."""
        where: Path = ("spec",)
        try:
            given = expand_user(value, "the base spec")
        except RefusedFile as e:
            self.error("E-SWEEP-SPEC", f"the base spec: {e.reason}", where)
            return False
        folder = self.path.parent
        full = given if given.is_absolute() else folder / given
        self.spec_name = os.path.normpath(str(full))
        try:
            raw = read_regular(full, MAX_SPEC_BYTES, "the base spec")
        except RefusedFile as e:
            self.error("E-SWEEP-SPEC", f"the base spec {short_repr(value)}: {e.reason}", where)
            return False
        except FileNotFoundError:
            self.error(
                "E-SWEEP-SPEC",
                f"the base spec {short_repr(value)} does not exist (looked for {self.spec_name}; a relative path is "
                "relative to the sweep file's folder)",
                where,
                hint=did_you_mean(given.name, _yaml_files(full.parent)),
            )
            return False
        except OSError as e:
            self.error("E-SWEEP-SPEC", f"the base spec {short_repr(value)} cannot be read: {e.strerror or e}", where)
            return False
        try:
            self.spec_text = raw.decode("utf-8")
        except UnicodeDecodeError:
            self.error("E-SWEEP-SPEC", f"the base spec {short_repr(value)} is not UTF-8 text", where)
            return False
        self.spec_path = full.resolve()
        located = load(self.spec_text)
        if isinstance(located.data, dict) and not any(d.code == "E-YAML" for d in located.diagnostics):
            self.base = located.data
        return True

    def _path_problem(self, section: str, key: str, value: Any, data: dict[str, Any]) -> list[tuple[Path, str]] | None:
        """Apply one path to data in place: None (reported as E-SWEEP-PATH) or what it wrote."""
        where: Path = (section, key)
        written: list[tuple[Path, str]] = []
        problems = apply(data, [(key, value)], written)
        if problems:
            d = problems[0]
            message = d.message.replace(f"--set {key}:", f"{section} {key}:", 1)
            self.error("E-SWEEP-PATH", message, where, key=True, hint=d.hint)
            return None
        if any(tuple(p[: len(SEED_PATH)]) == SEED_PATH for p, _ in written):
            self.error(
                "E-SWEEP-PATH",
                f"{section} {key}: a run's seed is set by the sweep's seeds, not by a path",
                where,
                key=True,
                hint="seeds: [0, 1, 2] (or seeds: K for 0..K-1)",
            )
            return None
        on_monitor = any(tuple(p[: len(MONITOR_PATH)]) == MONITOR_PATH for p, _ in written)
        if on_monitor and (section == "space" or self.monitor_given):
            why = (
                "the monitored metric is what trials are compared by, so it cannot vary between them"
                if section == "space"
                else "the sweep file's monitor: sets it for every trial"
            )
            self.error("E-SWEEP-PATH", f"{section} {key}: {why}", where, key=True, hint="write it under monitor:")
            return None
        return written

    def _kind_problem(self, section: str, key: str, samples: list[tuple[Any, Path]]) -> bool:
        """Whether a value of the entry breaks the base spec's schema (reported as E-TYPE at that value)."""
        assert self.base is not None
        for value, at in samples:
            data = copy.deepcopy(self.base)
            apply(data, [(key, value)])
            problems = spec_problems(data)
            if problems:
                d = problems[0]
                self.error(
                    "E-TYPE",
                    f"{section} {key}: the value {cut(flow(value), 60)} does not fit the base spec: {d.message}",
                    at,
                    hint=d.hint,
                )
                return True
        return False

    def check_set(self, model: SweepSpec) -> None:
        assert self.base is not None
        base_ok = not spec_problems(self.base)
        probe = copy.deepcopy(self.base)
        for key, value in model.set_.items():
            written = self._path_problem("set", key, value, probe)
            if written is None:
                continue
            if base_ok and self._kind_problem("set", key, [(value, ("set", key))]):
                continue
            self.written[key] = written
            self.good_set.append((key, value))
        for key, value in self.good_set:
            apply(self.base, [(key, value)])

    def check_space(self, model: SweepSpec) -> None:
        """Every space path exists in the base spec (after set), is set only once, and takes the values."""
        assert self.base is not None
        base_ok = not spec_problems(self.base)
        taken = {tuple(p): ("set", k) for k, ws in self.written.items() for p, _ in ws}
        for key, dist in model.space.items():
            sample = self._sample(key, dist)
            written = self._path_problem("space", key, sample, copy.deepcopy(self.base))
            if written is None:
                self.bad_entries.add(key)
                continue
            clash = next(
                (
                    (p, owner)
                    for w, _ in written
                    for p, owner in taken.items()
                    if p[: len(w)] == tuple(w) or tuple(w)[: len(p)] == p
                ),
                None,
            )
            if clash is not None:
                section, other = clash[1]
                self.bad_entries.add(key)
                self.error(
                    "E-SWEEP-PATH",
                    f"space {key}: the same part of the spec as {section} {other} (one would overwrite the other)",
                    ("space", key),
                    key=True,
                )
                continue
            taken.update({tuple(w): ("space", key) for w, _ in written})
            self.space_written.update(tuple(w) for w, _ in written)
            param = next((p for p in self.params if p.path == key), None)
            if param is not None and base_ok and self._kind_problem("space", key, self._samples(param)):
                self.bad_entries.add(key)
        self.params = [p for p in self.params if p.path not in self.bad_entries]

    def _sample(self, key: str, dist: Any) -> Any:
        for kind in KINDS:
            value = getattr(dist, "int_" if kind == "int" else kind)
            if value:
                return value[0]
        return 0

    def _samples(self, p: Param) -> list[tuple[Any, Path]]:
        at: Path = ("space", p.path)
        if p.kind == "choice":
            return [(c, (*at, "choice", i)) for i, c in enumerate((p.choices or [])[:MAX_CHECKED_CHOICES])]
        return [(p.low, (*at, p.kind, 0)), (p.high, (*at, p.kind, 1))]

    def compile(self, model: SweepSpec) -> Any:
        """The base spec compiled with set and the monitor: its own problems as E-SWEEP-SPEC in its file,
        the monitor's as E-SWEEP-METRIC at monitor:, those of a set value at that value."""
        from ..compile import compile_text

        assert self.spec_path is not None
        overrides: list[tuple[str, Any]] = list(self.good_set)
        if model.monitor is not None and "monitor" not in self.broken:
            overrides.append(("train.monitor", self.monitor_value(model)))
        folder = self.spec_path.parent
        compiled, spec_report = compile_text(self.spec_text, self.spec_name, folder, overrides, data_root=folder)
        errors = len(self.report.errors)
        lines = self.spec_text.splitlines()
        own = 0
        for d in spec_report.errors:
            if d.path[:2] == ("train", "monitor") and model.monitor is not None:
                sub = d.path[2] if len(d.path) > 2 and d.path[2] in ("metric", "split", "mode") else None
                code = "E-SWEEP-METRIC" if d.code in ("E-NAME", "E-MONITOR") else d.code
                message = _strip_origin(d.message).replace("train.monitor", "monitor", 1)
                self.error(code, message, ("monitor", sub) if sub else ("monitor",), hint=d.hint)
                continue
            origin = next(
                (k for k, ws in self.written.items() for p, _ in ws if tuple(d.path[: len(p)]) == tuple(p)), None
            )
            if origin is not None:
                self.error(d.code, f"set {origin}: {_strip_origin(d.message)}", ("set", origin), hint=d.hint)
                continue
            own += 1
            self.report.add(
                SpecDiagnostic(
                    "E-SWEEP-SPEC",
                    f"({d.code}) {d.message}",
                    d.path,
                    d.line,
                    d.column,
                    d.hint,
                    d.width,
                    file=self.spec_name,
                    source=lines,
                )
            )
        if own:
            self.error(
                "E-SWEEP-SPEC",
                f"the base spec {self.spec_name} is invalid ({own} error{'s' if own != 1 else ''}, shown in it below)",
                ("spec",),
                hint=f"onlytorch validate {self.spec_name}",
            )
        return None if len(self.report.errors) > errors else compiled

    @staticmethod
    def monitor_value(model: SweepSpec) -> dict[str, Any]:
        assert model.monitor is not None
        return {k: v for k, v in model.monitor.model_dump().items() if v is not None}

    def plan(self, model: SweepSpec, compiled: Any) -> Sweep | None:
        """Trials, seeds, sampler, pruner and the monitor, with what they need of each other."""
        from .. import monitor

        spec = compiled.spec
        mon = monitor.resolve(spec)
        if mon is None:
            self.error(
                "E-SWEEP-METRIC",
                f"the base spec {self.spec_name} "
                + ("evaluates nothing (it has no eval section)" if spec.eval is None else "monitors nothing")
                + ": a sweep has no metric to optimise",
                ("monitor",) if model.monitor is not None else ("spec",),
                hint="add an eval section (and train.eval_every) to the spec, or give monitor: {metric: M, mode: max}",
            )
        seeds = (
            list(range(model.seeds))
            if isinstance(model.seeds, int)
            else list(model.seeds)
            if model.seeds is not None
            else [spec.seed]
        )
        trials = self.trials(model, seeds)
        if mon is not None:
            self.check_pruner(model, spec, seeds)
        name = model.name or self.path.stem
        if model.name is None and not RUN_NAME.match(name):
            self.error(
                "E-TYPE",
                f"the sweep's name defaults to the file's name {short_repr(name)}, which is not a valid name (1 to 100 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit)",
                (),
                hint="add name: to the sweep file",
            )
        if mon is not None:
            self.check_test_split(model, spec, mon)
        if self.report.errors or mon is None or trials is None:
            return None
        fixed = [f"{k}={flow(v)}" for k, v in self.good_set]
        if model.monitor is not None:
            fixed.append(f"train.monitor={flow(self.monitor_value(model))}")
        sampler: dict[str, Any] = {"type": model.sampler.type, "seed": model.sampler.seed}
        if model.sampler.type in ("tpe", "cmaes"):
            default = 10 if model.sampler.type == "tpe" else 1
            n = model.sampler.n_startup_trials
            sampler["n_startup_trials"] = default if n is None else n
        assert self.spec_path is not None
        return Sweep(
            file=self.path.resolve(),
            sha256=hashlib.sha256(self.raw).hexdigest(),
            name=name,
            spec=self.spec_path,
            fixed=fixed,
            params=self.params,
            trials=trials,
            seeds=seeds,
            sampler=sampler,
            pruner=model.pruner.options(),
            metric=mon.metric,
            split=mon.split,
            mode=mon.mode,
            direction="minimize" if mon.mode == "min" else "maximize",
            objective=model.objective,
            max_failures=model.max_failures or trials,
        )

    def _space_writes(self, path: tuple[str, ...]) -> bool:
        """Whether a space entry writes path (or a section holding it, or a part of it)."""
        return any(w[: len(path)] == path or path[: len(w)] == w for w in self.space_written)

    def check_pruner(self, model: SweepSpec, spec: Any, seeds: list[int]) -> None:
        """E-SWEEP-PRUNE at the pruner's type (see checks.pruner_problem)."""
        if "pruner" in self.broken:
            return
        found = pruner_problem(model.pruner.type, spec, seeds, self._space_writes)
        if found is not None:
            where: Path = ("pruner", "type") if isinstance(self.data.get("pruner"), dict) else ("pruner",)
            self.error("E-SWEEP-PRUNE", found[0], where, hint=found[1])

    def check_test_split(self, model: SweepSpec, spec: Any, mon: Any) -> None:
        """W-SWEEP-TEST at monitor: (else spec:), a warning (see checks.chosen_on_test). A seed
        study chooses nothing; on a file with errors, the errors come first."""
        if not self.params or self.report.errors:
            return
        found = chosen_on_test(spec, mon, model.monitor.split if model.monitor is not None else None)
        if found is not None:
            given = model.monitor is not None and "monitor" not in self.broken
            self.error("W-SWEEP-TEST", found[0], ("monitor",) if given else ("spec",), hint=found[1])

    def trials(self, model: SweepSpec, seeds: list[int]) -> int | None:
        """The number of trials, checked against the space, the seeds and a grid."""
        searched = bool(model.space) or bool(self.bad_entries)  # a broken entry is reported already
        if not searched:
            if "space" in self.broken or "seeds" in self.broken:  # reported already
                return None
            if len(seeds) < 2:
                self.error(
                    "E-SWEEP-SPACE",
                    "nothing to search: the space is empty and every trial would run the one seed "
                    f"{seeds[0] if seeds else ''}",
                    ("space",) if "space" in self.data else (),
                    key="space" in self.data,
                    hint="add space entries (optimizers.opt.lr: {loguniform: [1.0e-4, 1.0e-2]}), or give seeds: K "
                    "for a seed study",
                )
                return None
            if model.trials not in (None, 1):
                self.error(
                    "E-SWEEP-SPACE",
                    f"a seed study (no space) is one trial over its seeds; trials: {model.trials} would repeat it",
                    ("trials",),
                    hint="leave trials out, or add a space",
                )
                return None
            return 1
        if self.bad_entries:
            return None
        if model.sampler.type == "grid":
            continuous = [p for p in self.params if p.kind == "loguniform" or (p.kind == "uniform" and p.step is None)]
            for p in continuous:
                self.error(
                    "E-SWEEP-GRID",
                    f"space {p.path}: the grid sampler needs a discrete range, and {p.kind} without step is continuous",
                    ("space", p.path, p.kind),
                    key=True,
                    hint="give a step ({uniform: [0.0, 0.5], step: 0.1}) or a choice of values",
                )
            if continuous:
                return None
            size = grid_size(self.params)
            if model.trials is not None and model.trials > size:
                self.error(
                    "E-SWEEP-GRID",
                    f"trials: {model.trials} is more than the grid's {size} points (each is tried once)",
                    ("trials",),
                    hint=f"trials: {size}, or leave trials out",
                )
                return None
            return model.trials or size
        if model.trials is None:
            if "trials" not in self.data:  # (a trials: whose value is refused is reported already)
                self.error(
                    "E-MISSING",
                    "a sweep with a space needs trials: how many trials to finish (complete or pruned)",
                    ("space",),
                    key=True,
                    hint="trials: 16",
                )
            return None
        return model.trials


def _strip_origin(message: str) -> str:
    """A compile message without the note the compiler adds for a value written by --set."""
    return re.sub(r" \(the value comes from --set .*\)$", "", message)


def _yaml_files(folder: pathlib.Path) -> list[str]:
    """The YAML files of a folder (for did-you-mean on a mistyped spec path); none when it cannot be listed."""
    try:
        names = []
        for i, entry in enumerate(os.scandir(folder)):
            if i >= 1000:
                break
            if entry.name.endswith((".yaml", ".yml")):
                names.append(entry.name)
        return names
    except OSError:
        return []
