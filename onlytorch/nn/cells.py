"""The recurrent-cell registry: one declaration per cell kind (a module ``{cell: KIND, hidden: H}``,
called as ``NAME(x, h)`` or run over a sequence by ``scan(NAME, xs, h0)``), from which the spec
schema (the allowed values of ``cell``), the compiler and the docs read.

A new cell is its module plus one ``@cell`` declaration of its builder::

    @cell("scaled_rnn", doc="h' = tanh(x W + h U + b) * 0.5",
          params=lambda d, h: {"w": (d, h), "u": (h, h), "b": (h,)})
    def scaled_rnn(g, in_width, hidden, name):
        return ScaledRNN(g, in_width, hidden, name=name)  # called as cell(x, h) -> h'
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .modules import GRUCell, LSTMCell, RNNCell

if TYPE_CHECKING:
    from ..graph import Graph

Shape = tuple[int, ...]
# (x, h) -> h', or (x, h, c) -> (h', c') for a cell with several states
CellBuilder = Callable[["Graph", int, int, str], Callable[..., Any]]
CellShapes = Callable[[int, int], dict[str, Shape]]


@dataclass(frozen=True)
class CellDef:
    """One recurrent cell kind, as the spec language knows it.

    ``build(g, in_width, hidden, name)`` adds its parameters (named ``NAME.*``) and returns the
    callable ``(x, h) -> h'``, usually an nn Module (whose ``parameters()`` are then the module's).
    ``states``: the names of its states, ``("h",)`` by default; a cell with several (an LSTM's
    ``("h", "c")``) returns a callable ``(x, h, c) -> (h', c')``, is called in a spec as
    ``NAME(x, h, c)`` (its named outputs h, c) and scanned as ``scan(NAME, xs, h0, c0)``.
    ``params(in_width, hidden)``: its parameters' shapes (the docs list them). ``checked(in_width,
    hidden)``: the one shape the size and memory limits are checked against before anything is
    allocated; by default its weight matrices stacked, see ``checked_shape``. ``doc``: one line for
    the docs and the JSON Schema."""

    name: str
    build: CellBuilder
    params: CellShapes
    doc: str
    checked: Callable[[int, int], Shape] | None = None
    states: tuple[str, ...] = ("h",)

    def checked_shape(self, in_width: int, hidden: int) -> Shape:
        """The shape checked before the cell is built: the declared one, else its 2-D parameters
        stacked along their first axis, (rows of them all, the widest) — (D + H, 3H) for a GRU —
        or, for a cell without 2-D parameters, all its values as one vector."""
        if self.checked is not None:
            return self.checked(in_width, hidden)
        shapes = list(self.params(in_width, hidden).values())
        matrices = [s for s in shapes if len(s) == 2]
        if matrices:
            return (sum(s[0] for s in matrices), max(s[1] for s in matrices))
        total = 0
        for s in shapes:
            n = 1
            for d in s:
                n *= d
            total += n
        return (total,)


CELLS: dict[str, CellDef] = {}
# Called after every change of CELLS: the spec schema rebuilds the ``cell`` field, whose allowed
# values are the registry's names (a cell declared after the schema was built is accepted from then on).
_LISTENERS: list[Callable[[], None]] = []


def cell(
    name: str,
    *,
    doc: str,
    params: CellShapes,
    checked: Callable[[int, int], Shape] | None = None,
    states: tuple[str, ...] = ("h",),
) -> Callable[[CellBuilder], CellDef]:
    """Declare a recurrent cell kind: decorates its builder ``(g, in_width, hidden, name)`` (see
    CellDef for the arguments)."""

    def register(build: CellBuilder) -> CellDef:
        if not isinstance(name, str) or not name:
            raise ValueError(f"a cell needs a name such as 'lstm', got {name!r}")
        if name in CELLS:
            raise ValueError(f"cell {name!r} is declared twice")
        words = isinstance(states, tuple) and all(isinstance(s, str) and s.isidentifier() for s in states)
        if not words or not states or len(set(states)) != len(states):
            raise ValueError(f"cell {name!r}: states are distinct names such as ('h', 'c'), got {states!r}")
        defn = CellDef(name=name, build=build, params=params, doc=doc, checked=checked, states=states)
        CELLS[name] = defn
        _changed()
        return defn

    return register


def unregister_cell(name: str) -> CellDef:
    """Remove a declared cell kind (for tests that declare one of their own); returns it."""
    defn = CELLS.pop(name)
    _changed()
    return defn


def on_change(listener: Callable[[], None]) -> None:
    """Call listener after every ``cell`` declaration and ``unregister_cell``."""
    _LISTENERS.append(listener)


def _changed() -> None:
    for listener in _LISTENERS:
        listener()


# ---------------------------------------------------------------- the built-in cells


@cell(
    "rnn",
    doc="h' = tanh(x W_ih + b_ih + h W_hh + b_hh), as torch.nn.RNNCell",
    params=lambda d, h: {"w_ih": (d, h), "w_hh": (h, h), "b_ih": (h,), "b_hh": (h,)},
    # The GRU's bound, as before the registry: validate refuses exactly the rnn cells it refused.
    checked=lambda d, h: (d + h, 3 * h),
)
def _rnn(g: Graph, in_width: int, hidden: int, name: str) -> RNNCell:
    return RNNCell(g, in_width, hidden, name=name)


@cell(
    "gru",
    doc="gates r, z, n; h' = (1 - z) n + z h, as torch.nn.GRUCell",
    params=lambda d, h: {"w_ih": (d, 3 * h), "w_hh": (h, 3 * h), "b_ih": (3 * h,), "b_hh": (3 * h,)},
)
def _gru(g: Graph, in_width: int, hidden: int, name: str) -> GRUCell:
    return GRUCell(g, in_width, hidden, name=name)


@cell(
    "lstm",
    doc="gates i, f, g, o; c' = f c + i g, h' = o tanh(c'), as torch.nn.LSTMCell; states (h, c)",
    params=lambda d, h: {"w_ih": (d, 4 * h), "w_hh": (h, 4 * h), "b_ih": (4 * h,), "b_hh": (4 * h,)},
    states=("h", "c"),
)
def _lstm(g: Graph, in_width: int, hidden: int, name: str) -> LSTMCell:
    return LSTMCell(g, in_width, hidden, name=name)
