"""The layer registry: one declaration per layer with parameters (its options model, its builder,
its parameter shapes and output width, its docs), from which the spec schema, the compiler and the
docs read. Layers without parameters are not declared here: any one-input op of the op registry
is a layer (relu, tanh, dropout, ...).

A new layer with parameters is its op(s) plus one ``@layer`` declaration::

    class ScaleOptions(LayerOptions):
        init: str = Field("ones", description="the initialiser of the scale")

    @layer("scale", ScaleOptions, doc="x * w, one factor per feature",
           params=lambda d, o: {"weight": (d,)})
    def scale(g, x, o, name):
        ...  # returns a callable NodeId -> NodeId, usually a Module
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ..graph import Graph
from ..node import NodeId
from .modules import BatchNorm, Embedding, LayerNorm, Linear

Shape = tuple[int, ...]
StaticShape = tuple[int | None, ...]  # None: the batch axis
Builder = Callable[[Graph, NodeId, Any, str], Callable[[NodeId], NodeId]]


class LayerOptions(BaseModel):
    """The base of a layer's options model: unknown keys are refused, and a number is never read
    from true/false (``eps: true`` is a slip, not 1.0)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, v: Any, info: Any) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        annotation = field.annotation if field is not None else None
        if isinstance(v, bool) and annotation in (int, float):
            raise ValueError(f"must be a number, not {str(v).lower()}")
        if annotation is bool and not isinstance(v, bool):  # pydantic would read "no" as false
            raise ValueError(f"must be true or false, got {v!r}")
        return v


class LayerOptionError(Exception):
    """A layer item whose options do not fit its declaration; the message names the layer."""


@dataclass
class LayerDef:
    """One layer with parameters, as the spec language knows it.

    ``options``: its options model (the keys of ``{NAME: {...}}``); ``short``: the option a bare
    value fills (``{linear: 64}`` is ``out: 64``), or None when it takes a mapping only.
    ``build(g, x, opts, name)`` adds its parameters and returns the callable NodeId -> NodeId
    (an nn module). ``params(in_width, opts)``: its parameters' shapes, largest first (the first
    is checked against the size and memory limits before anything is allocated, all are counted
    by the memory plan of a layer list). ``width(in_width, opts)``: the last dimension of its
    output, or None when it does not follow from the input's (the memory plan stops there); no
    ``width`` at all: it keeps the input's last dimension.
    ``needs_width``: it needs an input with a fixed last dimension. ``usage``: when set, the one
    message for any problem with its options. ``forms`` and ``doc`` are the docs' table row.
    ``axis``: the input axis whose size is ``in_width`` (-1, the last, for features; 1 for the
    channels of (N, C, ...) layouts). ``shape(in_shape, opts)``: for a layer whose output shape
    is more than its input's with a new last dimension (a convolution), the output shape of an
    input of shape ``in_shape`` (batch axis None), raising ShapeError for an input it cannot take:
    its static shape rule, read by validate and the memory plan before anything is allocated."""

    name: str
    options: type[LayerOptions]
    build: Builder
    params: Callable[[Any, Any], dict[str, Shape]]
    width: Callable[[Any, Any], int | None] | None  # None: keeps the input's last dimension
    doc: str
    forms: tuple[str, ...]
    short: str | None = None
    needs_width: bool = True
    usage: str | None = None
    example: str | None = None  # the mapping form in the message for a bare value
    axis: int = -1
    shape: Callable[[Any, Any], StaticShape] | None = None

    def input_width(self, in_shape: tuple[int | None, ...]) -> int | None:
        """The size of the input axis the layer reads (``axis``), None when it has no fixed size."""
        if len(in_shape) < (self.axis + 1 if self.axis >= 0 else -self.axis):
            return None
        return in_shape[self.axis]

    def out_shape(self, in_shape: tuple[int | None, ...], opts: Any) -> tuple[int | None, ...] | None:
        """The output shape for an input of shape in_shape (its width at ``axis`` fixed), or None
        when it does not follow from the input's."""
        if self.shape is not None:
            return tuple(self.shape(in_shape, opts))
        if self.width is None:
            return tuple(in_shape)
        out = self.width(self.input_width(in_shape), opts)
        return None if out is None else (*in_shape[:-1], out)

    def parse(self, arg: Any) -> Any:
        """The options of an item ``{NAME: arg}`` (``arg`` None for the bare name), or
        LayerOptionError with the message validate reports."""
        if arg is None:
            given: dict[Any, Any] = {}
        elif isinstance(arg, dict):
            given = dict(arg)
        elif self.short is not None:
            given = {self.short: arg}
        else:
            raise LayerOptionError(
                self.usage
                or f"{self.name} takes options as a mapping, e.g. {self.example or '{' + self.name + ': {}}'}"
            )
        fields = list(self.options.model_fields)
        unknown = [k for k in given if k not in fields]
        if unknown:
            if self.usage:
                raise LayerOptionError(self.usage)
            takes = ", ".join(fields[:-1]) + f" and {fields[-1]}" if len(fields) > 1 else fields[0]
            raise LayerOptionError(f"{self.name} takes {takes}; unknown: {', '.join(map(str, unknown))}")
        try:
            return self.options.model_validate(given)
        except ValidationError as e:
            if self.usage:
                raise LayerOptionError(self.usage) from None
            raise LayerOptionError(_option_message(self.name, e)) from None

    def out_width(self, in_width: int | None, opts: Any) -> int | None:
        """The last dimension of its output for an input whose last dimension is in_width."""
        return in_width if self.width is None else self.width(in_width, opts)

    def planned(self, in_width: int, opts: Any) -> int:
        """The parameter values the memory plan counts for this layer."""
        total = 0
        for shape in self.params(in_width, opts).values():
            n = 1
            for d in shape:
                n *= d
            total += n
        return total


def _option_message(layer: str, e: ValidationError) -> str:
    """The first problem pydantic found, as a sentence that names the layer and the option."""
    err = e.errors()[0]
    key = ".".join(str(p) for p in err["loc"])
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "value_error" and msg.startswith(f"{layer} "):
        return msg  # a validator's own sentence about the layer
    if err["type"] == "value_error" and msg.startswith("must "):
        return f"{layer}: {key} {msg}"
    if err["type"] == "missing":
        return f"{layer} needs the option {key!r}"
    return f"{layer}: {key}: {msg}" if key else f"{layer}: {msg}"


LAYERS: dict[str, LayerDef] = {}


def layer(
    name: str,
    options: type[LayerOptions],
    *,
    doc: str,
    params: Callable[[Any, Any], dict[str, Shape]],
    width: Callable[[Any, Any], int | None] | None = None,
    forms: tuple[str, ...] = (),
    short: str | None = None,
    needs_width: bool = True,
    usage: str | None = None,
    example: str | None = None,
    axis: int = -1,
    shape: Callable[[Any, Any], StaticShape] | None = None,
) -> Callable[[Builder], LayerDef]:
    """Declare a layer with parameters: decorates its builder ``(g, x, opts, name)`` (see LayerDef
    for the arguments)."""

    def register(build: Builder) -> LayerDef:
        if name in LAYERS:
            raise ValueError(f"layer {name!r} is declared twice")
        defn = LayerDef(
            name=name,
            options=options,
            build=build,
            params=params,
            width=width,
            doc=doc,
            forms=forms or (f"{{{name}: {{...}}}}",),
            short=short,
            needs_width=needs_width,
            usage=usage,
            example=example,
            axis=axis,
            shape=shape,
        )
        LAYERS[name] = defn
        return defn

    return register


def unregister(name: str) -> None:
    """Remove a declared layer (for tests that declare one of their own)."""
    del LAYERS[name]


# ---------------------------------------------------------------- the built-in layers


class LinearOptions(LayerOptions):
    out: int = Field(gt=0, description="the output size (the input size is inferred)")
    bias: bool = Field(True, description="add a bias")
    init: str = Field("lecun_uniform", description="the weight's initialiser (torch's default: lecun_uniform)")

    @model_validator(mode="before")
    @classmethod
    def _out_given(cls, v: Any) -> Any:
        # no out at all is reported as the bare name's "got None", not as a missing key
        return {**v, "out": None} if isinstance(v, dict) and "out" not in v else v

    @field_validator("out", mode="before")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"linear needs a positive output size, e.g. {{linear: 64}}; got {v!r}")
        return v


@layer(
    "linear",
    LinearOptions,
    short="out",
    doc="x @ W + b, input size inferred",
    forms=("{linear: 64}", "{linear: {out: 64, bias: false, init: xavier_uniform}}"),
    params=lambda d, o: {"weight": (d, o.out), **({"bias": (o.out,)} if o.bias else {})},
    width=lambda d, o: o.out,
)
def _linear(g: Graph, x: NodeId, o: LinearOptions, name: str) -> Linear:
    return Linear(g, x.shape[-1], o.out, bias=o.bias, name=name, init=o.init)


class NormOptions(LayerOptions):
    eps: float = Field(1e-5, description="added to the variance for numerical stability")


class BatchNormOptions(LayerOptions):
    momentum: float = Field(0.1, description="how far the running statistics move towards each batch's statistics")
    eps: float = Field(1e-5, description="added to the variance for numerical stability")


@layer(
    "batch_norm",
    BatchNormOptions,
    doc="per feature of (N, C) or channel of (N, C, L) and (N, C, H, W): batch statistics in train mode, running statistics in eval mode",
    forms=("batch_norm", "{batch_norm: {momentum: 0.1, eps: 1.0e-5}}"),
    params=lambda d, o: {"weight": (d,), "bias": (d,)},
    example="{batch_norm: {eps: 1.0e-5}}",
    axis=1,  # the features of (N, C), the channels of (N, C, L) and (N, C, H, W)
)
def _batch_norm(g: Graph, x: NodeId, o: BatchNormOptions, name: str) -> BatchNorm:
    return BatchNorm(g, x.shape[1], momentum=o.momentum, eps=o.eps, name=name)


@layer(
    "layer_norm",
    NormOptions,
    doc="normalise over the last axis",
    forms=("layer_norm", "{layer_norm: {eps: 1.0e-5}}"),
    params=lambda d, o: {"weight": (d,), "bias": (d,)},
    example="{layer_norm: {eps: 1.0e-5}}",
)
def _layer_norm(g: Graph, x: NodeId, o: NormOptions, name: str) -> LayerNorm:
    return LayerNorm(g, x.shape[-1], eps=o.eps, name=name)


class EmbeddingOptions(LayerOptions):
    num: int = Field(gt=0, description="the number of rows (indices lie in [0, num))")
    dim: int = Field(gt=0, description="the size of each row")

    @field_validator("num", "dim", mode="before")
    @classmethod
    def _exact(cls, v: Any) -> Any:
        if not isinstance(v, int) or isinstance(v, bool):
            raise ValueError("must be an integer")
        return v


@layer(
    "embedding",
    EmbeddingOptions,
    doc="a lookup table for integer inputs",
    forms=("{embedding: {num: 1000, dim: 16}}",),
    params=lambda d, o: {"weight": (o.num, o.dim)},
    width=lambda d, o: None,  # the output appends a dimension: (*indices, dim)
    needs_width=False,
    usage="embedding takes {num: N, dim: D}, two positive integers",
)
def _embedding(g: Graph, x: NodeId, o: EmbeddingOptions, name: str) -> Embedding:
    return Embedding(g, o.num, o.dim, name=name)


def is_op_layer(op: Any) -> bool:
    """Whether an op of the registry is a parameter-free layer: one input, and a derivative (its own
    or, for a composite such as dropout, that of the ops it is made of)."""
    return len(op.input_names) == 1 and not op.variadic and (op.build is not None or op.vjp_rule is not None)


# Composite ops have no shape rule the memory plan could ask; these keep their input's shape
# whatever their arguments.
SHAPE_KEEPING_OPS = frozenset({"dropout"})


def op_keeps_width(op: Any, arg: Any, width: int) -> bool:
    """Whether a parameter-free layer (an op) keeps the last dimension of a (batch, width) input,
    as far as the memory plan can tell without building it."""
    return op_keeps_shape(op, arg, (None, width))


def op_out_shape(op: Any, arg: Any, shape: tuple[int | None, ...]) -> tuple[int | None, ...] | None:
    """The output shape of a parameter-free layer (an op) on an input of this shape, as far as the
    memory plan can tell without building it (its shape rule, with options given by name), or None."""
    if op_keeps_shape(op, arg, shape):
        return tuple(shape)
    if op.name in SHAPE_KEEPING_OPS or not isinstance(arg, dict):
        return None
    try:
        return tuple(op.shape_rule(tuple(shape), **arg)[0])
    except Exception:  # a composite without a rule, or a layer its build reports on
        return None


def op_keeps_shape(op: Any, arg: Any, shape: tuple[int | None, ...]) -> bool:
    """Whether a parameter-free layer (an op) keeps the shape of its input, as far as the memory
    plan can tell without building it."""
    if op.name in SHAPE_KEEPING_OPS:
        return True
    try:
        return arg is None and tuple(op.shape_rule(tuple(shape))[0]) == tuple(shape)
    except Exception:  # a layer its build reports on
        return False
