"""The op registry: one entry per op, holding its forward (numpy), its static shape rule and its
derivative rule (a vector-Jacobian product written with graph ops, so that the derivative of a
derivative is just another backward through ordinary nodes).

Graph methods (``g.tanh``) and the spec language's functions are generated from this registry.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..node import NodeId

Shape = tuple[int | None, ...]
# A dtype kind in shape inference: "f" = the graph's float dtype, "i" = int64, "b" = bool.
Kind = str

REGISTRY: dict[str, OpDef] = {}


class ShapeRuleError(Exception):
    """Raised by shape rules; the graph turns it into a ShapeError that names the node."""


@dataclass
class VJPContext:
    """What a derivative rule sees: the graph, the op's output node, its inputs and attributes,
    and which inputs need a gradient (rules may skip building the others)."""

    g: Any
    out: NodeId
    inputs: tuple[NodeId, ...]
    attrs: dict[str, Any]
    needs: tuple[bool, ...]
    train: bool


@dataclass
class RunContext:
    """What a forward that declares ``ctx`` sees: the graph's runtime RNG and mode, and the
    node being computed (for side effects such as batch norm's running statistics)."""

    rng: np.random.Generator
    train: bool
    graph: Any
    node: Any


VJP = Callable[[VJPContext, "NodeId"], Sequence["NodeId | None"]]
ShapeRule = Callable[..., tuple[Shape, Kind]]


@dataclass
class OpDef:
    name: str
    forward: Callable[..., np.ndarray]
    shape_rule: ShapeRule
    input_names: tuple[str, ...]
    variadic: bool
    attr_defaults: dict[str, Any]
    needs_ctx: bool = False
    vjp_rule: VJP | None = None
    nondiff: frozenset[int] = frozenset()
    # Inputs whose runtime shape, not value, the forward needs ("rest" = all but the first).
    shape_only: tuple[int, ...] | str = ()
    random: bool = False
    mode_dependent: bool = False
    public: bool = True
    doc: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    # The output keeps input 0's dtype (integer labels stay integers through index/reshape).
    keep_dtype: bool = False
    # Inputs the op writes in train mode without reading them (batch norm's running statistics):
    # their changes do not make its train-mode value stale.
    writes: frozenset[int] = frozenset()
    # The forward may return one of its input arrays itself (identity): its result is never
    # handed over as a fresh array (see BackwardPlan.ownable).
    passes_input: bool = False
    # A composite op builds its result from other ops: build(g, *inputs, **attrs) -> NodeId.
    # Its forward and derivative are those of the ops it is made of.
    build: Callable[..., NodeId] | None = None
    # The bytes of the temporaries the forward holds at its height besides its inputs and its
    # result (a convolution's window copy), from the forward's own arguments: the executor counts
    # them in the graph's peak for the duration of the call (see executor.py). Such an op returns
    # an array and does not see the graph (no ``ctx``).
    scratch: Callable[..., int] | None = None
    # How the op exports to ONNX (onlytorch/export/builder.py): an ONNX operator's name or a rule
    # rule(builder, node) -> value name(s); None: it does not export (a composite exports as the
    # ops it is made of).
    onnx: str | Callable[..., Any] | None = None
    # A written one-sentence summary for listings (``onlytorch ops``), where the doc's first
    # sentence is longer than SUMMARY_WIDTH; empty: the first sentence is the summary.
    summary: str = ""

    @property
    def differentiable(self) -> bool:
        return self.vjp_rule is not None

    def vjp(self, rule: VJP) -> VJP:
        """Decorator that attaches the derivative rule."""
        self.vjp_rule = rule
        return rule

    def short(self) -> str:
        """The op's one-sentence summary: its written ``summary``, else its doc's first sentence."""
        return self.summary or first_sentence(self.doc)

    def signature(self) -> str:
        """How the op is called, e.g. ``x, axis=None, keepdims=False`` (inputs, then attributes with
        their defaults; a required attribute without one): the one formatting of an op's signature
        for ``onlytorch ops``, the docs and messages."""
        parts = [("*" if self.variadic else "") + n for n in self.input_names]
        parts += [k if v is inspect.Parameter.empty else f"{k}={v!r}" for k, v in self.attr_defaults.items()]
        return ", ".join(parts)

    def is_shape_only(self, i: int) -> bool:
        if self.shape_only == "rest":
            return i > 0
        return i in self.shape_only  # type: ignore[operator]


# The longest one-line summary of a built-in op (a test keeps them within it): longer first
# sentences get a written ``summary=``.
SUMMARY_WIDTH = 100
# Words whose full stop does not end a sentence.
_ABBREVIATIONS = ("e.g", "i.e", "etc", "vs", "cf")


def first_sentence(text: str) -> str:
    """The first sentence of a description, its lines joined: up to the first full stop (or ! or ?)
    that is followed by a space or the end, outside brackets, and is not an abbreviation's or part
    of an ellipsis; the whole first paragraph when it has none."""
    para = " ".join(inspect.cleandoc(text).split("\n\n")[0].split())
    depth = 0
    for i, ch in enumerate(para):
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch in ".!?" and depth == 0 and para[i + 1 : i + 2] in ("", " "):
            word = para[:i].rsplit(" ", 1)[-1]
            if ch == "." and (word.endswith(".") or word in _ABBREVIATIONS):
                continue
            return para[: i + 1]
    return para


def defop(
    name: str,
    shape: ShapeRule,
    *,
    nondiff: Sequence[int] = (),
    shape_only: tuple[int, ...] | str = (),
    random: bool = False,
    mode_dependent: bool = False,
    public: bool = True,
    aliases: Sequence[str] = (),
    keep_dtype: bool = False,
    writes: Sequence[int] = (),
    passes_input: bool = False,
    scratch: Callable[..., int] | None = None,
    onnx: str | Callable[..., Any] | None = None,
    summary: str = "",
) -> Callable[[Callable[..., np.ndarray]], OpDef]:
    """Register an op. The forward's signature declares it: positional parameters are the input
    nodes (``*xs`` for a variable number), keyword-only parameters are attributes with defaults,
    and a first parameter named ``ctx`` asks for a RunContext. ``scratch``: see OpDef.scratch;
    ``onnx``: see OpDef.onnx; ``summary``: see OpDef.summary."""

    def register(fn: Callable[..., np.ndarray]) -> OpDef:
        needs_ctx, inputs, attrs, variadic = _signature(fn, "ctx")
        if needs_ctx and scratch is not None:
            raise ValueError(f"op {name!r}: an op that sees the graph cannot declare scratch")
        op = OpDef(
            name=name,
            forward=fn,
            shape_rule=shape,
            input_names=tuple(inputs),
            variadic=variadic,
            attr_defaults=attrs,
            needs_ctx=needs_ctx,
            nondiff=frozenset(nondiff),
            shape_only=shape_only,
            random=random,
            mode_dependent=mode_dependent,
            public=public,
            doc=(fn.__doc__ or "").strip(),
            aliases=tuple(aliases),
            keep_dtype=keep_dtype,
            writes=frozenset(writes),
            passes_input=passes_input,
            scratch=scratch,
            onnx=onnx,
            summary=summary,
        )
        _add(op)
        return op

    return register


def defcomposite(
    name: str,
    *,
    aliases: Sequence[str] = (),
    onnx: str | Callable[..., Any] | None = None,
    summary: str = "",
) -> Callable[[Callable[..., NodeId]], OpDef]:
    """Register an op made of other ops: ``build(g, *inputs, **attrs)`` returns the result node.
    The signature rules are those of ``defop`` (after the leading ``g``). The graph holds the
    ops it is made of, which export on their own; ``onnx`` documents a mapping for the whole."""

    def register(fn: Callable[..., NodeId]) -> OpDef:
        _, inputs, attrs, variadic = _signature(fn, "g")
        op = OpDef(
            name=name,
            forward=_no_forward,
            shape_rule=_no_shape_rule,
            input_names=tuple(inputs),
            variadic=variadic,
            attr_defaults=attrs,
            doc=(fn.__doc__ or "").strip(),
            aliases=tuple(aliases),
            build=fn,
            onnx=onnx,
            summary=summary,
        )
        _add(op)
        return op

    return register


def _no_forward(*args: Any, **kwargs: Any) -> np.ndarray:
    raise AssertionError("a composite op has no forward of its own")


def _no_shape_rule(*args: Any, **kwargs: Any) -> tuple[Shape, Kind]:
    raise AssertionError("a composite op has no shape rule of its own")


def _signature(fn: Callable[..., Any], lead: str) -> tuple[bool, list[str], dict[str, Any], bool]:
    params = list(inspect.signature(fn).parameters.values())
    has_lead = bool(params) and params[0].name == lead
    if has_lead:
        params = params[1:]
    inputs: list[str] = []
    attrs: dict[str, Any] = {}
    variadic = False
    for p in params:
        if p.kind is p.VAR_POSITIONAL:
            variadic = True
            inputs.append(p.name)
        elif p.kind is p.KEYWORD_ONLY:
            attrs[p.name] = p.default
        else:
            inputs.append(p.name)
    return has_lead, inputs, attrs, variadic


def _add(op: OpDef) -> None:
    for key in (op.name, *op.aliases):
        if key in REGISTRY:
            raise ValueError(f"op {key!r} registered twice")
        REGISTRY[key] = op


def get_op(name: str) -> OpDef:
    try:
        return REGISTRY[name]
    except KeyError:
        from ..errors import GraphError
        from ..suggest import did_you_mean_suffix

        raise GraphError(f"unknown op {name!r}{did_you_mean_suffix(name, REGISTRY)}") from None


def public_ops() -> dict[str, OpDef]:
    """The ops users may call (Graph methods and spec functions), by name and alias."""
    return {k: v for k, v in REGISTRY.items() if v.public}
