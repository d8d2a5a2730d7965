"""The data source registry: every source's parameters, the fields it yields, and how it loads.

One table serves the spec validator (which needs a source's fields, their per-sample shapes and
dtypes, without loading anything) and the trainer (which loads the arrays). A spec's data entry
`{source: synthetic.ring, n: 8192, modes: 8}` is the source's name plus its parameters.

A source also answers every question the rest of the project has about it, so that no module
outside ``onlytorch.data`` tells sources apart by name: how many samples it holds and the memory
it takes (the footprint estimate), whether a generator's samples are scored against its mode
centres (``scored``), and, for a live source (``LiveSource``, filled by the trainer while it
trains), the compiler's checks of the graph nodes it runs, its lines of the compile report, the
object the trainer fills and draws batches from (``make_live``), the quantities its evaluation
reports with their directions and the one monitored by default (for ``onlytorch.monitor``), and
which of its training statistics the progress line shows and the report treats as counters.
"""

from __future__ import annotations

import abc
import ast
import math
import operator
import pathlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, cast

import numpy as np
import pydantic

from ..spec.numbers import number_problem
from ..suggest import did_you_mean_suffix

if TYPE_CHECKING:
    from ..compile import Compiled
    from ..monitor import Mode

FieldDtype = Literal["float", "int64"]


class DataError(Exception):
    """A data problem the user can fix; the message is one clear line.

    `param` names the offending source parameter when there is one, so that a spec validator can
    point at its YAML key.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass(frozen=True)
class Field:
    """One named array a source yields, described per sample."""

    shape: tuple[int, ...]  # per-sample shape, no batch dimension
    dtype: FieldDtype  # "float": the graph's float type (the consumer casts); "int64": labels, indices
    doc: str
    classes: int | None = None  # for an int64 label field: the number of classes, when known


# A per-sample shape as a field table writes it: integers and expressions of the source's integer
# parameters (("length", 1) is (length, 1)); or words, where the shape comes from outside the
# parameters (a file's arrays, an environment's observations).
ShapeRule = tuple[int | str, ...] | str


@dataclass(frozen=True)
class FieldRow:
    """One field a source yields, declared for every setting of its parameters: a row of its table
    in the reference (docs/spec.md) and, in a FieldTable, what its fields are made from.

    ``shape`` is a ShapeRule; ``dtype`` is "float" or "int64" (or words where the data decides,
    as a file's arrays do); ``when`` names the parameter that adds the field when it is set (not
    None); ``classes`` the number of classes of an int64 label field (an integer or an expression
    of the parameters, e.g. "side * side"); ``name`` in capitals stands for several fields named by
    the parameters or the data (a file's arrays)."""

    name: str
    dtype: str
    shape: ShapeRule
    doc: str
    when: str | None = None
    classes: int | str | None = None

    def shape_text(self) -> str:
        """The shape as the reference prints it: ``(length, 1)``, ``(2,)``, ``()``, or the words."""
        if isinstance(self.shape, str):
            return self.shape
        items = [str(d) for d in self.shape]
        return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"

    def present(self, p: Any) -> bool:
        """Whether the parameters p yield this field."""
        return self.when is None or getattr(p, self.when) is not None

    def field(self, p: Any) -> Field:
        """The field for the parameters p (a row with a fixed name, shape and dtype)."""
        if isinstance(self.shape, str) or self.dtype not in ("float", "int64"):
            raise TypeError(f"field row {self.name!r} is described in words; only its source's fields() knows it")
        shape = tuple(size_of(d, p) for d in self.shape)
        classes = None if self.classes is None else size_of(self.classes, p)
        return Field(shape, cast(FieldDtype, self.dtype), self.doc, classes)


@dataclass(frozen=True)
class FieldTable:
    """A source's fields declared as a table of FieldRows (each with its shape rule), callable as the
    Source's ``fields`` function: the validator, the trainer and the reference read the one
    declaration. A source whose fields depend on more than its parameters (a file, an
    environment) keeps its own ``fields`` function and gives its table as ``Source.table``."""

    rows: tuple[FieldRow, ...]

    def __call__(self, p: Any) -> dict[str, Field]:
        return {row.name: row.field(p) for row in self.rows if row.present(p)}


def size_of(rule: int | str, p: Any) -> int:
    """A size a field table writes (an integer, or arithmetic of the integer parameters: "length",
    "side * side") for the parameters p."""
    if isinstance(rule, int):
        return rule
    return _size(ast.parse(rule, mode="eval").body, p, rule)


_SIZE_OPS: dict[type, Callable[[int, int], int]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


def _size(node: ast.AST, p: Any, rule: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name):
        value = getattr(p, node.id, None)
        if type(value) is int:
            return value
    if isinstance(node, ast.BinOp) and type(node.op) in _SIZE_OPS:
        return _SIZE_OPS[type(node.op)](_size(node.left, p, rule), _size(node.right, p, rule))
    raise ValueError(f"field size {rule!r}: write integers and integer parameters joined by + - * // **")


@dataclass
class LoadContext:
    base_dir: pathlib.Path = pathlib.Path(".")  # relative file paths resolve against it: the spec's folder
    seed: int = 0  # generators are seeded by it: same seed, same arrays


class Params(pydantic.BaseModel):
    """Base of every source's parameter model: unknown parameters are errors, never ignored."""

    model_config = pydantic.ConfigDict(extra="forbid", frozen=True)

    @pydantic.field_validator("*", mode="before")
    @classmethod
    def _no_booleans_for_numbers(cls, v: Any, info: pydantic.ValidationInfo) -> Any:
        # pydantic reads true as 1, 3.0 and "3" as 3: `n: true` is a slip, not a request for one sample.
        field = cls.model_fields.get(info.field_name or "")
        problem = number_problem(field.annotation, v) if field is not None else None
        if problem:
            raise ValueError(problem)
        return v


@dataclass(frozen=True)
class Held:
    """A part of the memory a source takes in a run (an item of the footprint estimate): held for
    the whole run, or ``transient`` (a peak while it is made). ``param`` names the source parameter
    that sets its size, where the estimate points when it is too big."""

    what: str
    nbytes: int
    param: str
    transient: bool = False


class LiveData(Protocol):
    """What the trainer fills and draws from while it trains on a live source (see LiveSource)."""

    @property
    def batches_per_epoch(self) -> int: ...
    def begin_iteration(self) -> None: ...  # before an iteration's first batch: collect, step, ...
    def next_batch(self) -> dict[str, np.ndarray]: ...
    def stats(self) -> dict[str, float]: ...  # for the metrics log (rollout/...)
    def episodes(self, n: int, seed: int, greedy: bool) -> dict[str, float]: ...  # what evaluation reports
    def state(self) -> dict[str, np.ndarray]: ...  # its part of a checkpoint
    def check_state(self, state: dict[str, np.ndarray], where: str = "") -> None: ...
    def restore(self, state: dict[str, np.ndarray], where: str = "") -> None: ...


@dataclass(frozen=True)
class Source:
    """A data source, loaded before training (a LiveSource is filled while training). The methods
    are the questions the rest of the project asks a source; their ``p`` is the source's validated parameters, or a spec's data entry (a model
    derived from the parameter model, so it holds them too)."""

    name: str  # e.g. "synthetic.ring"
    params: type[pydantic.BaseModel]
    fields: Callable[[Any], dict[str, Field]]  # validated params; reads headers (checks a .csv whole)
    load: Callable[[Any, LoadContext], dict[str, np.ndarray]]  # every sample; first axis = sample
    doc: str
    extra: str | None = None  # the pip extra the source needs, e.g. "datasets"
    # How many samples it holds, when the parameters say so before loading (None: a file, whose
    # loader checks its size); without it, the parameter n.
    samples: Callable[[Any], int | None] | None = None
    # A mixture of Gaussians: its mode centres (one row each) and their std. A generator trained on
    # it has its samples scored for mode coverage (onlytorch.metrics.mode_coverage).
    modes: Callable[[Any], tuple[np.ndarray, float]] | None = None
    # The table of its fields for the reference, when ``fields`` is a function of more than the
    # parameters (a file's arrays, an environment's observations); a FieldTable ``fields`` is its own.
    table: FieldTable | None = None

    live: ClassVar[bool] = False  # see LiveSource

    @property
    def field_rows(self) -> tuple[FieldRow, ...]:
        """The declared table of its fields (empty when it declares none: a function alone)."""
        if isinstance(self.fields, FieldTable):
            return self.fields.rows
        return self.table.rows if self.table is not None else ()

    def parse(self, params: Mapping[str, Any], base_dir: pathlib.Path | None = None) -> pydantic.BaseModel:
        """Validate raw parameters; file paths are made absolute against base_dir when it is given."""
        try:
            return self.params.model_validate(dict(params), context={"base_dir": base_dir})
        except pydantic.ValidationError as e:
            raise DataError(_describe_validation(self, e), param=_first_param(e)) from None

    @property
    def scored(self) -> bool:
        """Whether a generator's samples are scored for mode coverage (see mode_centres)."""
        return self.modes is not None

    def mode_centres(self, p: Any) -> tuple[np.ndarray, float] | None:
        """The mode centres and std of a scored source, else None."""
        return self.modes(p) if self.modes is not None else None

    def sample_count(self, p: Any) -> int | None:
        """How many samples it holds, when its parameters say so."""
        if self.samples is not None:
            return self.samples(p)
        n = getattr(p, "n", None)
        return n if isinstance(n, int) and not isinstance(n, bool) else None

    def memory(self, p: Any, split: str, fields: Mapping[str, Field], itemsize: int) -> list[Held]:
        """The memory the split it feeds takes: its arrays, and the float64 arrays they are made
        from (cast to the graph's dtype afterwards). Nothing for a file: its loader checks its
        size before reading it (see safe_files)."""
        n = self.sample_count(p)
        if n is None:
            return []
        elems = sum(math.prod(f.shape) for f in fields.values())
        return [
            Held(f"data {split} ({self.name}, {n:,} samples)", n * row_bytes(fields, itemsize), "n"),
            Held(f"generating the {split} data", n * elems * 8, "n", transient=True),
        ]

    def describe(self, p: Any, compiled: Compiled) -> list[str]:
        """Its lines of the compile report as the train source (a live source: what it does each
        iteration, which nodes it runs); none by default."""
        return []


class LiveSource(Source, abc.ABC):
    """A source the trainer fills while it trains, by running graph nodes the spec names (a gym
    rollout or replay buffer): it has nothing to load beforehand, can only be the train source,
    and is evaluated by what make_live's object reports (episodes) rather than by a data split.
    A subclass declares how to build that object, and may add compiler checks and report lines."""

    live: ClassVar[bool] = True
    # What make_live's object's episodes() reports, each with its direction ("max": higher is
    # better, "min", or None where none holds for every use of the source): what a monitor may
    # name, and what onlytorch.monitor reads a direction from.
    quantities: ClassVar[Mapping[str, Mode | None]] = {}
    # The quantity that chooses best.npz when the spec declares no train.monitor (one of quantities
    # with a direction); None: best.npz only with a declared monitor.
    default_monitor: ClassVar[str | None] = None
    # The key of stats() that the progress line shows beside the losses (None: the losses alone).
    progress_stat: ClassVar[str | None] = None
    # Keys of stats() that count (steps taken, items held): in the report's table, not its pictures.
    counter_stats: ClassVar[tuple[str, ...]] = ()

    @abc.abstractmethod
    def make_live(self, p: Any, compiled: Compiled) -> LiveData:
        """The object the trainer fills and draws batches from, acting with compiled's graph."""

    def check_compiled(self, p: Any, ctx: Any) -> None:
        """Report what is wrong with the nodes it runs, through the compiler's context (``ctx``:
        onlytorch.compiler.context.CompileContext, its ``error`` and tables); called once the
        graph is built, when the train entry's fields are known."""


# The log-key prefix of a live source's training statistics (stats()) in the metrics log.
LIVE_LOG_PREFIX = "rollout"

SOURCES: dict[str, Source] = {}
# Called after every change of SOURCES: the spec schema rebuilds its data models (a source
# registered after the schema was built is accepted in specs from then on).
_LISTENERS: list[Callable[[], None]] = []


def register(source: Source) -> Source:
    """Add a source: specs can then use ``source: NAME``. A declaration that could not work is
    refused here, naming what to fix, rather than when a spec first uses it."""
    if not isinstance(source, Source):
        raise TypeError(f"register() takes a Source (or LiveSource), got {type(source).__name__}")
    if not isinstance(source.name, str) or not source.name:
        raise ValueError(f"a data source needs a name such as 'my.points', got {source.name!r}")
    if not (isinstance(source.params, type) and issubclass(source.params, Params)):
        raise TypeError(
            f"data source {source.name!r}: params must be a subclass of onlytorch.data.Params (a pydantic "
            "model that refuses unknown parameters), not {source.params!r}"
        )
    for what in ("fields", "load"):
        if not callable(getattr(source, what)):
            signature = "(params) -> {name: Field}" if what == "fields" else "(params, ctx) -> {name: array}"
            raise TypeError(f"data source {source.name!r}: {what} must be a function {signature}")
    if isinstance(source, LiveSource):
        _check_live(source)
    if source.name in SOURCES:
        raise ValueError(f"data source {source.name!r} registered twice")
    SOURCES[source.name] = source
    _changed()
    return source


def _check_live(source: LiveSource) -> None:
    bad = {k: v for k, v in source.quantities.items() if v not in ("max", "min", None)}
    if bad:
        raise ValueError(f"live source {source.name!r}: quantities map each name to 'max', 'min' or None, not {bad!r}")
    m = source.default_monitor
    if m is not None and source.quantities.get(m) is None:
        directed = [k for k, v in source.quantities.items() if v is not None]
        raise ValueError(
            f"live source {source.name!r}: default_monitor {m!r} must be one of its quantities with a "
            f"direction ({', '.join(directed) or 'it declares none'}), or None"
        )


def unregister(name: str) -> Source:
    """Remove a registered source (e.g. one a test declared); returns it."""
    source = SOURCES.pop(name)
    _changed()
    return source


def on_change(listener: Callable[[], None]) -> None:
    """Call listener after every register() and unregister()."""
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        hint = did_you_mean_suffix(name, SOURCES) or f" (known: {', '.join(sorted(SOURCES))})"
        raise DataError(f"unknown data source {name!r}{hint}") from None


def source_of(entry: Any) -> Source | None:
    """The registered source of a spec's data entry; None for none, a split or an unknown name."""
    name = getattr(entry, "source", None)
    return SOURCES.get(name) if isinstance(name, str) else None


def train_source(spec: Any) -> tuple[Source, Any] | None:
    """A spec's train source and its entry, or None when it has none (or an unknown one)."""
    entry = spec.data.train if spec.data is not None else None
    source = source_of(entry)
    return (source, entry) if source is not None else None


def live_train_source(spec: Any) -> Any:
    """A spec's train entry when its source is live (filled while training), else None."""
    found = train_source(spec)
    return found[1] if found is not None and found[0].live else None


def scored_modes(spec: Any) -> tuple[np.ndarray, float] | None:
    """The mode centres and std of a spec's train source when its samples are scored, else None."""
    found = train_source(spec)
    return found[0].mode_centres(found[1]) if found is not None else None


def live_source(spec: Any) -> LiveSource | None:
    """A spec's train source when it is live (filled while training), else None."""
    found = train_source(spec)
    return found[0] if found is not None and isinstance(found[0], LiveSource) else None


def live_quantities() -> dict[str, Mode | None]:
    """The quantities the registered live sources' evaluations report, with their directions."""
    out: dict[str, Mode | None] = {}
    for source in SOURCES.values():
        if isinstance(source, LiveSource):
            out.update(source.quantities)
    return out


def live_log_row(stats: Mapping[str, float]) -> dict[str, float]:
    """A live source's training statistics as metrics-log entries."""
    return {f"{LIVE_LOG_PREFIX}/{k}": v for k, v in stats.items()}


def progress_stats(spec: Any, stats: Mapping[str, float]) -> dict[str, float]:
    """The training statistic the progress line shows beside the losses (its log key and value),
    when the spec's live source declares one and has it yet."""
    source = live_source(spec)
    key = source.progress_stat if source is not None else None
    value = stats.get(key) if key is not None else None
    return {} if key is None or value is None else {f"{LIVE_LOG_PREFIX}/{key}": value}


def counter_log_keys() -> set[str]:
    """The log keys of the registered live sources' counters (see LiveSource.counter_stats): a
    run directory is reported without its spec's sources being resolved."""
    return {
        f"{LIVE_LOG_PREFIX}/{k}"
        for source in SOURCES.values()
        if isinstance(source, LiveSource)
        for k in source.counter_stats
    }


def live_source_names() -> list[str]:
    """The registered live sources' names, in registration order (for messages that list them)."""
    return [name for name, source in SOURCES.items() if source.live]


def make_live(compiled: Compiled) -> LiveData | None:
    """The live source that the trainer fills while it trains (None for data loaded up front)."""
    found = train_source(compiled.spec)
    if found is None or not isinstance(found[0], LiveSource):
        return None
    return found[0].make_live(found[1], compiled)


def row_bytes(fields: Mapping[str, Field], itemsize: int) -> int:
    """Bytes of one sample of these fields (float fields in the graph's dtype, int64 labels)."""
    return sum(math.prod(f.shape) * (8 if f.dtype == "int64" else itemsize) for f in fields.values())


def source_fields(entry: Mapping[str, Any], base_dir: pathlib.Path | None = None) -> dict[str, Field]:
    """The fields of a spec data entry `{source: NAME, **params}`, without loading its data."""
    source, params = _split_entry(entry)
    return source.fields(source.parse(params, base_dir))


def load_source(entry: Mapping[str, Any], ctx: LoadContext) -> dict[str, np.ndarray]:
    """Load a spec data entry `{source: NAME, **params}`; the arrays are checked against its fields."""
    source, raw = _split_entry(entry)
    params = source.parse(raw, ctx.base_dir)
    fields = source.fields(params)
    arrays = source.load(params, ctx)
    check_arrays(source.name, fields, arrays)
    return arrays


def check_arrays(what: str, fields: Mapping[str, Field], arrays: Mapping[str, np.ndarray]) -> int:
    """Check that arrays are exactly the declared fields (names, shapes, dtypes) and share a length."""
    if set(fields) != set(arrays):
        raise DataError(f"{what}: declares fields {sorted(fields)} but yields {sorted(arrays)}")
    n = common_length({k: np.shape(a) for k, a in arrays.items()}, what)
    for name, f in fields.items():
        a = arrays[name]
        dtype_ok = a.dtype == np.int64 if f.dtype == "int64" else np.issubdtype(a.dtype, np.floating)
        if a.shape[1:] != f.shape or not dtype_ok:
            raise DataError(
                f"{what}: field {name!r} is declared {f.shape} {f.dtype} per sample "
                f"but holds {a.shape[1:]} {a.dtype} per sample"
            )
    return n


def common_length(shapes: Mapping[str, tuple[int, ...]], what: str) -> int:
    """The first (sample) dimension that arrays of these shapes share; a DataError naming each length otherwise."""
    if not shapes:
        raise DataError(f"{what}: no arrays")
    for name, shape in shapes.items():
        if not shape:
            raise DataError(f"{what}: array {name!r} is a scalar; every array needs a first (sample) dimension")
    lengths = {name: shape[0] for name, shape in shapes.items()}
    if len(set(lengths.values())) > 1:
        listed = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise DataError(f"{what}: arrays differ in length (first dimension): {listed}")
    n = next(iter(lengths.values()))
    if n == 0:
        raise DataError(f"{what}: the arrays hold no samples")
    return n


def split(
    arrays: Mapping[str, np.ndarray], fractions: Mapping[str, float], seed: int
) -> dict[str, dict[str, np.ndarray]]:
    """Shuffle the samples (seeded) and cut them into parts by fraction; "train" gets the rest.

    `split(arrays, {"val": 0.1, "test": 0.1}, seed=0)` gives {"train": 80%, "val": 10%, "test": 10%}.
    """
    n = common_length({k: np.shape(a) for k, a in arrays.items()}, "split")
    for name, f in fractions.items():
        if name == "train":
            raise DataError('split: "train" gets what the other fractions leave; name only the others')
        if not 0.0 < f < 1.0:
            raise DataError(f"split: fraction {name!r} is {f}; it must lie strictly between 0 and 1", param=name)
    if sum(fractions.values()) > 1.0 + 1e-9:
        raise DataError(f"split: fractions sum to {sum(fractions.values()):g}, more than 1")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.rint(np.cumsum([0.0, *fractions.values()]) * n).astype(int)
    parts = {"train": order[bounds[-1] :]}
    for (name, f), lo, hi in zip(fractions.items(), bounds[:-1], bounds[1:]):
        if hi == lo:
            raise DataError(f"split: {name!r} ({f:g} of {n} samples) would hold no sample", param=name)
        parts[name] = order[lo:hi]
    return {part: {k: np.asarray(a)[idx] for k, a in arrays.items()} for part, idx in parts.items()}


def _split_entry(entry: Mapping[str, Any]) -> tuple[Source, dict[str, Any]]:
    if "source" not in entry:
        raise DataError("a data entry needs 'source: NAME' (one of: " + ", ".join(sorted(SOURCES)) + ")")
    params = dict(entry)
    return get_source(params.pop("source")), params


def _first_param(e: pydantic.ValidationError) -> str | None:
    loc = e.errors()[0]["loc"]
    return str(loc[0]) if loc else None


def _describe_validation(source: Source, e: pydantic.ValidationError) -> str:
    known = source.params.model_fields
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "parameters"
        if err["type"] == "extra_forbidden":
            name = str(err["loc"][0])
            hint = did_you_mean_suffix(name, known) or f" (parameters: {', '.join(known) or 'none'})"
            parts.append(f"unknown parameter {name!r}{hint}")
        else:
            parts.append(f"{where}: {err['msg']}")
    return f"{source.name}: " + "; ".join(parts)
