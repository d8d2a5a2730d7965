"""Unpacking: a key of ``nodes`` (the spec's or a subgraph module's) that is several
comma-separated names, ``mu, logvar: enc(x)``, binds each name to one output of the value, in the
order the value lists its outputs: a subgraph module's ``output:`` mapping, a registered cell's
states, and for ``scan`` over several states the stacked outputs in the cell's output order, then
each state's ``STATE_last`` in the order of the states. ``_`` skips an output. The value is built
once, as for a named node holding it; each name is then an ordinary node."""

from __future__ import annotations

from ..node import NodeId
from ..spec import expr as X
from ..spec import names as N
from ..spec.diagnostics import Path
from .context import CompileContext, Poisoned


class UnpackError(Exception):
    def __init__(self, message: str, hint: str) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


def pairs(key: str, value: NodeId | X.Outputs, text: str) -> list[tuple[str, NodeId]]:
    """(name, output) for each name of the key but ``_``; UnpackError (E-OUTPUT) when the value is
    one tensor or has another number of outputs than the key has names."""
    names = N.unpacking(key) or [key]
    text = " ".join(text.split())
    if not isinstance(value, X.Outputs):
        raise UnpackError(
            f"{key!r} unpacks several outputs, but {text} is one tensor",
            f"name it once ({names[0]}: {text}), or unpack a value with several outputs "
            "(a module with output: {mu: ..., logvar: ...}, scan over several states)",
        )
    outputs = list(value.values)
    if len(outputs) != len(names):
        listed = ", ".join(outputs)
        raise UnpackError(
            f"{key!r} gives {len(names)} names, but {text} has {len(outputs)} outputs, in this order: {listed}",
            f"one name per output, in order (_ skips one): {listed}: {text}",
        )
    return [(name, value.values[out]) for name, out in zip(names, outputs) if name != N.SKIP]


def bind(ctx: CompileContext, key: str, value: NodeId | X.Outputs, path: Path, text: str) -> dict[str, NodeId]:
    """The names of a top-level unpacking key as named nodes of the graph (``ctx.names``); a
    mistake is reported at the key, and the key and its names are broken (their uses stay quiet)."""
    try:
        found = pairs(key, value, text)
    except UnpackError as e:
        ctx.error("E-OUTPUT", e.message, path, key=True, hint=e.hint, width=len(key))
        ctx.broken.update([key, *N.defined(key)])
        raise Poisoned(key) from None
    bound = {}
    for name, node in found:
        rec = ctx.g.record(node)
        # an output already named (a parameter, an input, a node another name holds) gets a copy
        bound[name] = (
            ctx.g.identity(node, name=name) if rec.user_named or rec.kind != "op" else ctx.g.rename(node, name)
        )
    ctx.names.update(bound)
    return bound
