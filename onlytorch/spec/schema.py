"""The spec language's schema: these pydantic models ARE the language. The JSON Schema
(``onlytorch schema``) and the key tables of the docs are generated from them.

Data sources, optimizers and schedules contribute their own models, built here from the
registries that implement them (``onlytorch.data.SOURCES``, ``onlytorch.optim.OPTIMIZERS``,
``SCHEDULES``), so the language cannot drift from what the engine accepts."""

from __future__ import annotations

import inspect
import re
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    Tag,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic.fields import FieldInfo

from ..safe_files import short_repr
from . import names as N
from . import weights as W
from .logging_spec import LoggingSpec
from .numbers import MAX_INT, _int_slot, exact_int_problem, float_problem, number_problem  # noqa: F401  (the number rule: see numbers.py)

NAME = N.NAME  # one definition of a name (spec/names.py, with the keys that unpack several outputs)
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")  # a spec's name: the run directory runs/NAME


def exactly_one(owner: str, given: dict[str, bool], detail: str | None = None) -> None:
    """The one "exactly one of" rule of the language: raise (pydantic turns it into a located E-TYPE)
    unless exactly one of the named keys is given. ``given``: key as written -> whether it is set;
    ``detail``: the alternatives in words when they are not plain keys."""
    on = [k for k, v in given.items() if v]
    if len(on) == 1:
        return
    if detail is not None:
        raise ValueError(f"{owner} is exactly one of: {detail}" + (f"; got {', '.join(on)}" if on else ""))
    keys = " and ".join(f"'{k}'" for k in given) if len(given) == 2 else ", ".join(f"'{k}'" for k in given)
    raise ValueError(f"{owner} takes exactly one of {keys}")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    @field_validator("*", mode="before")
    @classmethod
    def _exact_integers(cls, v: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        problem = number_problem(field.annotation, v) if field is not None else None
        if problem:
            raise ValueError(problem)
        return v


# ---------------------------------------------------------------- data


def _source_models(known: dict[str, type[BaseModel]] | None = None) -> dict[str, type[BaseModel]]:
    """A model per registered source (its parameters and ``source: NAME``); those of ``known`` are kept."""
    from ..data.sources import SOURCES

    models: dict[str, type[BaseModel]] = {}
    for name, src in SOURCES.items():
        old = (known or {}).get(name)
        models[name] = (
            old
            if old is not None and issubclass(old, src.params)
            else create_model(
                "Source_" + re.sub(r"\W", "_", name),
                __base__=src.params,
                __doc__=src.doc,
                source=(Literal[name], Field(description="the data source")),  # type: ignore[valid-type, arg-type]
            )
        )
    return models


SOURCE_MODELS = _source_models()


class SplitSpec(Strict):
    """A part of the train source held out (seeded) for validation or testing."""

    from_split: Literal["train"] = Field(description="the source to carve the samples out of")
    fraction: float = Field(gt=0, lt=1, description="the share of its samples")


def _source_tag(v: Any) -> str | None:
    if isinstance(v, dict):
        if "from_split" in v:
            return "split"
        src = v.get("source")
        return src if isinstance(src, str) else None
    return getattr(v, "source", None) or ("split" if isinstance(v, SplitSpec) else None)


def _source_unions() -> tuple[Any, Any]:
    """The tagged unions of SOURCE_MODELS: a train source, and a held-out one (which may be a split)."""
    tagged = [Annotated[m, Tag(k)] for k, m in SOURCE_MODELS.items()]
    return (
        Annotated[Union[tuple(tagged)], Discriminator(_source_tag)],  # type: ignore[valid-type]  # noqa: UP007
        Annotated[Union[(Annotated[SplitSpec, Tag("split")], *tagged)], Discriminator(_source_tag)],  # type: ignore[valid-type]
    )


if TYPE_CHECKING:  # built from registries at import: to the type checker, any model
    SourceSpec = Any
    HeldOutSpec = Any
else:
    SourceSpec, HeldOutSpec = _source_unions()


class DataSpec(Strict):
    """Where the samples come from. Inputs read fields as ``train.x``; during evaluation the same
    input reads that field of the evaluated split."""

    train: SourceSpec = Field(description="the training source")  # type: ignore[valid-type, arg-type]
    val: HeldOutSpec | None = Field(None, description="a validation source, or {from_split: train, fraction: 0.1}")  # type: ignore[valid-type, arg-type]
    test: HeldOutSpec | None = Field(None, description="a test source, or {from_split: train, fraction: 0.2}")  # type: ignore[valid-type, arg-type]
    batch_size: int = Field(64, gt=0, description="samples per step")
    shuffle: bool = Field(True, description="reshuffle the training samples every epoch (seeded)")


def _refresh_sources() -> None:
    """Rebuild the data models from the source registry, which calls this after every change: a
    source registered after the schema was built is accepted in specs from then on (and one
    unregistered refused again)."""
    global SourceSpec, HeldOutSpec
    models = _source_models(SOURCE_MODELS)
    SOURCE_MODELS.clear()  # in place: readers hold this dict
    SOURCE_MODELS.update(models)
    SourceSpec, HeldOutSpec = _source_unions()
    for name, annotation in (("train", SourceSpec), ("val", HeldOutSpec | None), ("test", HeldOutSpec | None)):
        old = DataSpec.model_fields[name]
        DataSpec.model_fields[name] = FieldInfo.from_annotated_attribute(
            annotation, Field(old.default, description=old.description)
        )
    DataSpec.model_rebuild(force=True)
    Spec.model_rebuild(force=True)  # the one model that holds a DataSpec


def _watch_sources() -> None:
    from ..data.sources import on_change

    on_change(_refresh_sources)


_watch_sources()


# ---------------------------------------------------------------- inputs


class InputSpec(Strict):
    """A value fed to the graph each step: a data field, noise, or a carried node value."""

    shape: list[Annotated[int, Field(gt=0, lt=2**31)]] = Field(
        default_factory=list, description="per-sample shape (the batch dimension is implicit)"
    )
    dtype: Literal["float", "int64"] = Field("float", description="'int64' for labels and indices")
    from_: str | None = Field(
        None,
        alias="from",
        description="'SPLIT.FIELD' (a data field, e.g. train.x), 'noise.normal' or 'noise.uniform' (resampled every step)",
    )
    window: int | None = Field(
        None,
        gt=0,
        description="feed a sequence field in consecutive windows of this many steps along its time axis "
        "(truncated BPTT); a new batch starts after the last window, and carried inputs restart at zeros",
    )
    carry: str | None = Field(
        None,
        description="a node whose last value becomes this input's value at the next step, with no gradient path "
        "(truncated BPTT); starts as zeros",
    )

    @model_validator(mode="after")
    def _one_source(self) -> InputSpec:
        exactly_one("an input", {"from": self.from_ is not None, "carry": self.carry is not None})
        if self.window is not None and (self.from_ is None or self.from_.startswith("noise.")):
            raise ValueError("'window' applies to a data field ('from: train.x')")
        return self


# ---------------------------------------------------------------- modules


class SyncSpec(Strict):
    """How a target copy follows its source: a hard copy every N iterations, or Polyak averaging.
    Both happen at the end of a training iteration (``train.steps`` counts iterations), after all
    its phases and their repeats."""

    every: int | None = Field(
        None, gt=0, description="copy the source's values every this many iterations (train.steps counts them)"
    )
    tau: float | None = Field(
        None, gt=0, le=1, description="after every iteration: target = tau * source + (1 - tau) * target"
    )

    @model_validator(mode="after")
    def _one(self) -> SyncSpec:
        exactly_one("sync", {"every": self.every is not None, "tau": self.tau is not None})
        return self


class ParamSpec(Strict):
    """A parameter of a subgraph module."""

    shape: list[Annotated[int, Field(gt=0, lt=2**31)]] = Field(description="its shape")
    init: str = Field(
        "xavier_uniform",
        description="an initialiser: zeros, ones, constant, normal, uniform, xavier_uniform, xavier_normal, kaiming_uniform, kaiming_normal, lecun_uniform",
    )
    init_args: dict[str, float | str] = Field(
        default_factory=dict, description="the initialiser's arguments, e.g. {std: 0.1}"
    )


class _LayerItemJsonSchema:
    """The JSON Schema of a layer item, read from the layer registry when the schema is generated:
    validation itself only takes a name or a mapping, and the compiler checks the layer and its
    options with located messages."""

    def __get_pydantic_json_schema__(self, core_schema: Any, handler: Any) -> dict[str, Any]:
        return layer_item_json_schema()


LayerItem = Annotated[Union[str, dict[str, Any]], _LayerItemJsonSchema()]  # noqa: UP007


def layer_item_json_schema() -> dict[str, Any]:
    """A layer's name, one ``{LAYER: options}`` mapping per declared layer (its options model, the
    bare value its short option takes, or null when every option has a default), or a one-input
    function with its arguments."""
    from ..nn.layers import LAYERS, is_op_layer
    from ..ops.registry import public_ops

    alternatives: list[dict[str, Any]] = [
        {"type": "string", "description": "a layer without options: relu, tanh, batch_norm, ..."}
    ]
    for name, defn in LAYERS.items():
        options = defn.options.model_json_schema()
        options.pop("title", None)
        values: list[dict[str, Any]] = [options]
        if defn.short is not None:
            short = dict(options["properties"][defn.short])
            short.pop("title", None)
            values.insert(0, short)
        if not options.get("required"):
            values.append({"type": "null"})
        alternatives.append(
            {
                "type": "object",
                "description": f"{name}: {defn.doc}",
                "properties": {name: {"anyOf": values}},
                "required": [name],
                "additionalProperties": False,
            }
        )
    ops = sorted(k for k, op in public_ops().items() if k not in LAYERS and is_op_layer(op))
    alternatives.append(
        {
            "type": "object",
            "description": "a one-input function and its arguments, e.g. {leaky_relu: 0.2}, {dropout: {p: 0.1}}",
            "propertyNames": {"enum": ops},
            "minProperties": 1,
            "maxProperties": 1,
        }
    )
    return {"anyOf": alternatives}


def _cell_names() -> Any:
    """The allowed values of a module's ``cell``: the names of the cell registry, in its order."""
    from ..nn.cells import CELLS

    return Literal[tuple(CELLS)] if CELLS else type(None)  # type: ignore[valid-type]


def _cell_description() -> str:
    from ..nn.cells import CELLS

    names = list(CELLS)
    listed = " or ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    return f"a recurrent cell called as cell(x, h), or cell(x, h, c) for a cell with several states: {listed}"


if TYPE_CHECKING:  # built from the cell registry at import: to the type checker, a name
    CellName = str
else:
    CellName = _cell_names()


class ModuleSpec(Strict):
    """A module: a list of layers (the short form is the list itself), a recurrent cell, a
    subgraph with arguments, or a target copy of another module. Calling a module twice shares
    its weights."""

    layers: list[LayerItem] | None = Field(
        None, description="layers applied in order, e.g. [{linear: 64}, relu, {linear: 1}]"
    )
    cell: CellName | None = Field(None, description=_cell_description())
    hidden: int | None = Field(None, gt=0, description="the hidden size of a cell")
    args: list[str] | None = Field(None, description="a subgraph's argument names")
    params: dict[str, ParamSpec] = Field(default_factory=dict, description="a subgraph's own parameters")
    nodes: dict[str, str] = Field(default_factory=dict, description="a subgraph's intermediate nodes (expressions)")
    output: str | dict[str, str] | None = Field(
        None,
        description="a subgraph's result: an expression, or a mapping of named outputs {mu: EXPR, logvar: EXPR} "
        "(select one with M(x)['mu']; a scan cell's outputs named like its state arguments are its next states)",
    )
    copy_of: str | None = Field(
        None, description="build a target copy of this module (same layers, own parameters, no gradient)"
    )
    sync: SyncSpec | None = Field(None, description="how a target copy follows its source")

    @model_validator(mode="before")
    @classmethod
    def _short_form(cls, v: Any) -> Any:
        return {"layers": v} if isinstance(v, list) else v

    @field_validator("nodes")
    @classmethod
    def _node_keys(cls, v: dict[str, str]) -> dict[str, str]:
        return N.check_keys(v, unpack=True, only_unpacking=True)  # mu, logvar: enc(a)

    @model_validator(mode="after")
    def _one_kind(self) -> ModuleSpec:
        exactly_one(
            "a module",
            {
                "layers": self.layers is not None,
                "cell": self.cell is not None,
                "output": self.output is not None,
                "copy_of": self.copy_of is not None,
            },
            "a layer list, 'cell', a subgraph ('args' + 'output'), or 'copy_of'",
        )
        if self.cell is not None and self.hidden is None:
            raise ValueError("a cell needs 'hidden' (its hidden size)")
        if self.output is not None and self.args is None:
            raise ValueError("a subgraph needs 'args' (its argument names)")
        if isinstance(self.output, dict):
            if not self.output:
                raise ValueError("a subgraph's output mapping needs at least one named output")
            bad = [k for k in self.output if not k.isidentifier()]
            if bad:
                raise ValueError(f"an output name is a word (letters, digits, _), got {bad[0]!r}")
        if self.copy_of is None and self.sync is not None:
            raise ValueError("'sync' belongs to a 'copy_of' module")
        return self


def _follow_cell_registry() -> None:
    """After ``nn.cell``/``nn.unregister_cell``: rebuild the ``cell`` field (its allowed values and
    the description that lists them) and the models that hold it, as for the data sources."""
    global CellName
    CellName = _cell_names()
    annotation: Any = CellName | None
    ModuleSpec.model_fields["cell"] = FieldInfo.from_annotated_attribute(
        annotation, Field(None, description=_cell_description())
    )
    ModuleSpec.model_rebuild(force=True)
    Spec.model_rebuild(force=True)  # the one model that holds a ModuleSpec


def _watch_cells() -> None:
    from ..nn.cells import on_change

    on_change(_follow_cell_registry)


_watch_cells()


# ---------------------------------------------------------------- optimizers and schedules

# The fields come from each class's ``hypers`` table (onlytorch/optim/hyper.py): name, default,
# description and range are declared there once. The ranges are documented (in the description
# and as JSON-Schema keywords) but checked by the compiler, which names the value at fault with
# the engine's own message.
_HYPER_TYPES: dict[str, Any] = {
    "float": float,
    "bool": bool,
    "int": int,
    "pair": list[float],
    "optional float": float | None,
    "str": str,
}


def _first_paragraph(cls: type, fallback: str) -> str:
    return " ".join(inspect.cleandoc(cls.__doc__ or fallback).split("\n\n")[0].split())


def _hyper_fields(cls: Any) -> dict[str, Any]:
    """Pydantic fields from a class's hyper-parameter table (fixed entries are no field)."""
    fields: dict[str, Any] = {}
    for h in cls.hypers:
        if h.fixed is not None:
            continue
        default = ... if h.required else (list(h.default) if isinstance(h.default, tuple) else h.default)
        extra = h.rule.json() or None
        fields[h.name] = (
            _HYPER_TYPES[h.rule.kind],
            Field(default, description=h.description(), json_schema_extra=extra),
        )
    return fields


def _tagged_union(models: dict[str, type[BaseModel]]) -> Any:
    return Annotated[
        Union[tuple(Annotated[m, Tag(k)] for k, m in models.items())],  # type: ignore[valid-type]  # noqa: UP007
        Discriminator(lambda v: v.get("type") if isinstance(v, dict) else getattr(v, "type", None)),
    ]


def _schedule_models() -> dict[str, type[BaseModel]]:
    from ..optim import SCHEDULES

    return {
        name: create_model(
            "Schedule_" + name,
            __base__=Strict,
            __doc__=_first_paragraph(cls, name),
            type=(Literal[name], Field(description="the schedule")),  # type: ignore[valid-type, arg-type]
            **_hyper_fields(cls),
        )
        for name, cls in SCHEDULES.items()
    }


SCHEDULE_MODELS = _schedule_models()
if TYPE_CHECKING:  # built from registries at import: to the type checker, any model
    ScheduleSpec = Any
else:
    ScheduleSpec = _tagged_union(SCHEDULE_MODELS)


def _optimizer_models() -> dict[str, type[BaseModel]]:
    from ..optim import OPTIMIZERS

    models: dict[str, type[BaseModel]] = {}
    for name, cls in OPTIMIZERS.items():
        fields = _hyper_fields(cls)
        lr = fields.pop("lr")
        models[name] = create_model(
            "Optimizer_" + name,
            __base__=Strict,
            __doc__=_first_paragraph(cls, name),
            type=(Literal[name], Field(description="the optimizer")),  # type: ignore[valid-type, arg-type]
            params=(
                list[str],
                Field(
                    min_length=1,
                    description="module names, parameter names or globs (D, D.*, backbone*) whose parameters it updates",
                ),
            ),
            lr=lr,
            schedule=(
                ScheduleSpec | None,
                Field(None, description="a learning-rate schedule, stepped after every optimizer step"),
            ),
            **fields,
        )
    return models


OPTIMIZER_MODELS = _optimizer_models()
if TYPE_CHECKING:  # built from registries at import: to the type checker, any model
    OptimizerSpec = Any
else:
    OptimizerSpec = _tagged_union(OPTIMIZER_MODELS)


def _follow_optimizer_registries() -> None:
    """After ``optim.register``/``unregister``: rebuild the optimizer and schedule models (in the
    same dicts), their unions and the ``Spec`` field that holds them."""
    SCHEDULE_MODELS.clear()
    SCHEDULE_MODELS.update(_schedule_models())
    globals()["ScheduleSpec"] = _tagged_union(SCHEDULE_MODELS)
    OPTIMIZER_MODELS.clear()
    OPTIMIZER_MODELS.update(_optimizer_models())
    globals()["OptimizerSpec"] = union = _tagged_union(OPTIMIZER_MODELS)
    Spec.model_fields["optimizers"].annotation = dict[str, union]  # type: ignore[valid-type]
    Spec.model_rebuild(force=True)


def _listen_to_optimizer_registries() -> None:
    from ..optim import on_registry_change

    on_registry_change(_follow_optimizer_registries)


_listen_to_optimizer_registries()


# ---------------------------------------------------------------- training schedule


# ---------------------------------------------------------------- loss weights (see spec/weights.py)

WEIGHT_NUMBER_TAG = W.NUMBER_TAG
WEIGHT_SCHEDULE_MODELS = W.schedule_models(Strict, _hyper_fields, _first_paragraph)
if TYPE_CHECKING:  # built from registries at import: to the type checker, a number or any model
    WeightSpec = Any
else:
    WeightSpec = W.union(WEIGHT_SCHEDULE_MODELS)


def _follow_weight_schedules() -> None:
    fresh = W.schedule_models(Strict, _hyper_fields, _first_paragraph)
    W.follow(WEIGHT_SCHEDULE_MODELS, fresh, (BackwardSpec, PhaseSpec, TrainSpec, Spec))


W.listen(_follow_weight_schedules)


class BackwardSpec(Strict):
    """One backward call: d(weight * loss) / d(wrt), accumulated into the gradients."""

    loss: str = Field(description="the loss to differentiate")
    wrt: list[str] | None = Field(
        None,
        description="module or parameter names (globs allowed); default: the parameters of the optimizers this phase steps",
    )
    retain_graph: bool = Field(
        False, description="keep the values this backward goes through, for a later backward of the phase"
    )
    weight: WeightSpec = Field(1.0, description=W.DESCRIPTION)  # type: ignore[valid-type]

    @field_validator("weight", mode="before")
    @classmethod
    def _weight_number(cls, v: Any) -> Any:
        return W.checked_number(v)


class PhaseSpec(Strict):
    """One phase of a training iteration: detach, backward, step."""

    name: str = Field(description="the phase's name (in logs and metrics)")
    repeat: int = Field(1, gt=0, description="run the phase this many times per iteration (e.g. 5 critic steps)")
    epochs: int | None = Field(
        None,
        gt=0,
        description="instead of repeat: run the phase once per minibatch for this many passes over the training "
        "data, reshuffled each pass (PPO's epochs over each rollout)",
    )
    detach: list[str] = Field(default_factory=list, description="nodes detached during this phase only")
    backward: list[BackwardSpec] = Field(min_length=1, description="the backward calls, in order")
    step: list[str] = Field(default_factory=list, description="the optimizers to step after the backward calls")
    zero_grad: Literal["before", "after", "never"] = Field(
        "before",
        description="when this phase clears gradients: before its backward calls, after its steps, or never (they "
        "carry over to later phases)",
    )
    start: int = Field(
        0,
        ge=0,
        description="the first iteration the phase runs (iterations count from 0: the trainer's step before "
        "the iteration runs)",
    )
    until: int | None = Field(
        None, ge=0, description="the first iteration the phase no longer runs; default: it runs to the end"
    )
    every: int | None = Field(
        None, gt=0, description="run only at iterations i where (i - start) % every == 0; default: every iteration"
    )
    accumulate: int = Field(
        1,
        gt=0,
        description="micro-batches per optimizer step, each a batch (the first follows `batch`, the others draw), a "
        "forward and the backward calls with the loss scaled by 1/accumulate; then the optimizers step once",
    )
    batch: Literal["new", "same"] | None = Field(
        None,
        description="new: draw the next batch; same: reuse the batch the previous phase of this iteration saw "
        "(draws when no phase has yet); default: new for the first phase, same for the others",
    )

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> Any:
        # A run records its resolved spec's hash (resume refuses a changed spec): left out at their
        # defaults, start and accumulate leave a spec that does not use them hashing as before.
        data = handler(self)
        if isinstance(data, dict):
            for key, default in (("start", 0), ("accumulate", 1)):
                if data.get(key) == default:
                    del data[key]
        return data


class MonitorSpec(Strict):
    """What chooses best.npz: a quantity the evaluation reports, the split it is measured on and
    whether lower or higher is better. A direction is never guessed from a name: a loss is always
    minimised and onlytorch's own scores (modes_covered, high_quality, return_mean, ...) have theirs,
    but a metric of the spec needs ``mode``."""

    metric: str = Field(description="a loss, a metric, or a score the evaluation computes (modes_covered, return_mean)")
    split: Literal["train", "val", "test"] | None = Field(
        None, description="the split it is measured on; default: val when data declares it, else eval.split"
    )
    mode: Literal["min", "max"] | None = Field(
        None, description="min: lower is better, max: higher is better; required for a metric of the spec"
    )


class EarlyStoppingSpec(Strict):
    """End the run when the monitored quantity (``train.monitor``) stops improving, as Keras's and
    Lightning's EarlyStopping do: an evaluation improves when its value beats the best so far by more
    than ``min_delta`` in the monitor's direction (min: value + min_delta < best; max: value - min_delta
    > best; the first evaluation always does, a NaN never); after ``patience`` evaluations in a row
    without improvement the run ends, status early_stopped. best.npz is chosen as without it."""

    patience: int = Field(gt=0, description="evaluations in a row without improvement that end the run")
    min_delta: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="how much better than the best an evaluation must be to count as an improvement",
    )


class TrainSpec(Strict):
    """How long to train and what one iteration does."""

    steps: int | None = Field(None, gt=0, description="iterations to run")
    epochs: int | None = Field(None, gt=0, description="or passes over the training data")
    schedule: list[PhaseSpec] = Field(min_length=1, description="the phases of one iteration, in order")
    log_every: int = Field(50, gt=0, description="write metrics every this many iterations")
    log_train: Literal["mean", "last"] = Field(
        "mean",
        description="what a train row of metrics.jsonl holds: mean = each loss's mean over the iterations since "
        "the previous row and each train metric's mean over the samples of their batches, each metric computed "
        "on the training forward (train mode, before the step, as Keras does; after the step in eval mode "
        "where no phase's forward computes it cheaply); last = the last iteration's values (its last batch's "
        "metrics after the step, under no_grad in eval mode)",
    )
    eval_every: int | None = Field(None, gt=0, description="evaluate under no_grad every this many iterations")
    checkpoint_every: int | None = Field(None, gt=0, description="write a checkpoint every this many iterations")
    monitor: MonitorSpec | None = Field(
        None,
        description="what chooses checkpoints/best.npz; default: return_mean for a gym source, modes_covered for "
        "scored generator samples, else the first loss",
    )
    early_stopping: EarlyStoppingSpec | None = Field(
        None,
        description="end the run when train.monitor stops improving (counted in evaluations: needs eval_every)",
    )

    @model_validator(mode="after")
    def _length(self) -> TrainSpec:
        exactly_one("train", {"steps": self.steps is not None, "epochs": self.epochs is not None})
        return self


class SamplesSpec(Strict):
    """Samples of a generator node, drawn from fresh noise under no_grad: saved with the run, drawn
    by the report, and scored for mode coverage when the training data is a mixture of Gaussians
    (synthetic.ring, synthetic.grid). A conditional generator (a node that also reads data inputs,
    e.g. a class label) is fed the evaluated split's rows in order: sample i gets row i, starting
    again from the first row when the split has fewer than n rows."""

    node: str = Field(
        description="the generated samples: a node computed from noise inputs, and from data inputs for a "
        "conditional generator (fed the evaluated split's fields, which samples.npz keeps)"
    )
    n: int = Field(2500, gt=0, description="how many samples to draw (the split's rows are cycled or cut to n)")


class EvalSpec(Strict):
    """Evaluation, always under no_grad (eval mode: dropout off, batch-norm running statistics)."""

    split: Literal["train", "val", "test"] = Field("test", description="the split to evaluate")
    metrics: list[str] | None = Field(None, description="the metrics (and losses) to report; default: all metrics")
    samples: SamplesSpec | None = Field(None, description="draw generated samples (GANs)")
    episodes: int | None = Field(
        None,
        gt=0,
        description="with a gym training source: whole episodes to run (default 20), one per environment copy",
    )
    policy: Literal["greedy", "sampled"] = Field(
        "greedy",
        description="with a gym training source: act with the most likely action, or draw it as in training",
    )


class InitSpec(Strict):
    """Start modules from a checkpoint of another run instead of their initialisers (a fresh run
    only: ``--resume`` restores the run's own checkpoint). Shapes are checked when the spec is
    validated, from the checkpoint's array headers."""

    checkpoint: str = Field(
        description="a checkpoint (.npz) written by onlytorch train; a relative path is relative to the spec's "
        "folder, and must stay inside it unless --allow-outside (see docs/inputs.md)"
    )
    modules: dict[str, str] | None = Field(
        None,
        description="{MODULE_IN_CHECKPOINT: MODULE_HERE, ...}: which modules to load, and under which name; "
        "default: every module of the spec that the checkpoint holds under the same name with the same parameters",
    )


class Spec(Strict):
    """A whole training setup."""

    version: Literal[1] = Field(description="the spec language version")
    name: str = Field(
        description="the run's name, and its directory runs/NAME: 1 to 100 letters, digits, '.', '_' or '-', "
        "starting with a letter or digit"
    )
    description: str | None = Field(None, description="what the spec demonstrates")
    seed: int = Field(0, ge=0, description="seeds initialisation, data order, noise and dropout")
    dtype: Literal["float32", "float64"] = Field("float32", description="the graph's float type")
    data: DataSpec | None = Field(None, description="data sources and batching")
    inputs: dict[str, InputSpec] = Field(description="values fed each step")
    modules: dict[str, ModuleSpec] = Field(default_factory=dict, description="modules with parameters")
    nodes: dict[str, str] = Field(default_factory=dict, description="named intermediate nodes (expressions)")
    losses: dict[str, str] = Field(description="scalar losses (expressions)")
    metrics: dict[str, str] = Field(
        default_factory=dict, description="scalars reported during training and evaluation (expressions)"
    )
    optimizers: dict[str, OptimizerSpec] = Field(
        default_factory=dict, description="optimizers and the parameters they update"
    )  # type: ignore[valid-type, arg-type]
    train: TrainSpec | None = Field(None, description="the training schedule")
    eval: EvalSpec | None = Field(None, description="what evaluation reports")
    init: list[InitSpec] | None = Field(
        None,
        description="modules to start from checkpoints of other runs (pretrain then fine-tune, a teacher), in "
        "order: a later entry wins for a module two entries load",
    )
    logging: LoggingSpec | None = Field(None, description="experiment trackers: TensorBoard, MLflow")

    @field_validator("name")
    @classmethod
    def _run_name(cls, v: str) -> str:
        if not RUN_NAME.match(v):
            raise ValueError(
                f"{short_repr(v)} is not a valid run name: it becomes the directory runs/NAME, so it must be 1 to 100 "
                "letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        return v

    @field_validator("inputs", "modules", "nodes", "losses", "metrics", "optimizers")
    @classmethod
    def _names(cls, v: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        # a key of nodes may unpack several outputs (mu, logvar: enc(x)); the bad keys ride along in
        # the error so that the diagnostics point at each bad key, not at the mapping
        return N.check_keys(v, unpack=info.field_name == "nodes")


def json_schema() -> dict[str, Any]:
    schema = Spec.model_json_schema(by_alias=True)
    # A module may also be written as its layer list alone (ModuleSpec's short form).
    layers = schema["$defs"]["ModuleSpec"]["properties"]["layers"]["anyOf"][0]
    schema["properties"]["modules"]["additionalProperties"] = {"anyOf": [layers, {"$ref": "#/$defs/ModuleSpec"}]}
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "onlytorch spec"
    return schema
