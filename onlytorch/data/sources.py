"""The data source registry: every source's parameters, the fields it yields, and how it loads.

One table serves the spec validator (which needs a source's fields, their per-sample shapes and
dtypes, without loading anything) and the trainer (which loads the arrays). A spec's data entry
`{source: synthetic.ring, n: 8192, modes: 8}` is the source's name plus its parameters.
"""

from __future__ import annotations

import difflib
import pathlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pydantic

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
        from ..spec.schema import number_problem  # the spec language's one rule (imported late: no cycle)

        field = cls.model_fields.get(info.field_name or "")
        problem = number_problem(field.annotation, v) if field is not None else None
        if problem:
            raise ValueError(problem)
        return v


@dataclass(frozen=True)
class Source:
    name: str  # e.g. "synthetic.ring"
    params: type[pydantic.BaseModel]
    fields: Callable[[Any], dict[str, Field]]  # validated params; reads headers (checks a .csv whole)
    load: Callable[[Any, LoadContext], dict[str, np.ndarray]]  # every sample; first axis = sample
    doc: str
    extra: str | None = None  # the pip extra the source needs, e.g. "datasets"
    # A live source (a gym rollout or replay buffer) is filled by the trainer while it trains,
    # by running graph nodes the spec names; it has nothing to load beforehand.
    live: bool = False

    def parse(self, params: Mapping[str, Any], base_dir: pathlib.Path | None = None) -> pydantic.BaseModel:
        """Validate raw parameters; file paths are made absolute against base_dir when it is given."""
        try:
            return self.params.model_validate(dict(params), context={"base_dir": base_dir})
        except pydantic.ValidationError as e:
            raise DataError(_describe_validation(self, e), param=_first_param(e)) from None


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    if source.name in SOURCES:
        raise ValueError(f"data source {source.name!r} registered twice")
    SOURCES[source.name] = source
    return source


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        hint = did_you_mean(name, SOURCES) or f" (known: {', '.join(sorted(SOURCES))})"
        raise DataError(f"unknown data source {name!r}{hint}") from None


def live_train_source(spec: Any) -> Any:
    """A spec's train source when it is live (a gym source, filled while training), else None."""
    data = spec.data
    src = data.train if data is not None else None
    live = src is not None and getattr(src, "source", None) in SOURCES and SOURCES[src.source].live
    return src if live else None


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


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """'; did you mean 'x'?' for the closest known name, or ''."""
    near = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {near[0]!r}?" if near else ""


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
            hint = did_you_mean(name, known) or f" (parameters: {', '.join(known) or 'none'})"
            parts.append(f"unknown parameter {name!r}{hint}")
        else:
            parts.append(f"{where}: {err['msg']}")
    return f"{source.name}: " + "; ".join(parts)
