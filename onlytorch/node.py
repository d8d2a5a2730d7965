"""Nodes of a Graph, and NodeId: the handle users hold, with operator overloading."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from .graph import Graph
    from .ops.registry import OpDef

LEAF_KINDS = ("input", "parameter", "state", "constant")


class Node:
    """One node's record. ``ver`` is the clock tick at which its value was last set: an op node is
    stale when a parent's ``ver`` is newer than its own (or, for mode-dependent ops, when the
    train/eval mode differs from the one it was computed in)."""

    __slots__ = (
        "attrs",
        "detached",
        "dtype",
        "fresh_at",
        "grad",
        "grad_of",
        "hidden",
        "index",
        "inputs",
        "kind",
        "mode",
        "name",
        "op",
        "pass_id",
        "released_by",
        "rshape",
        "shape",
        "shape_mask",
        "spec_node",
        "tracked",
        "train_reads",
        "user_named",
        "value",
        "ver",
    )

    def __init__(self, index: int, name: str, kind: str, shape: tuple, dtype: np.dtype) -> None:
        self.index = index
        self.name = name
        self.kind = kind
        self.op: OpDef | None = None
        self.inputs: tuple[Node, ...] = ()
        self.attrs: dict[str, Any] = {}
        self.shape = shape
        self.dtype = dtype
        self.value: Any = None  # np.ndarray or None
        self.ver = 0
        self.mode = True
        self.grad: Any = None  # np.ndarray or None
        self.detached = False
        self.tracked = False
        self.released_by: str | None = None
        self.rshape: tuple[int, ...] | None = None
        self.pass_id = 0
        self.hidden = False
        self.user_named = False
        # The spec node whose definition built this unnamed node (Graph.building), for messages.
        self.spec_node: str | None = None
        # Per input: True where the op reads only that input's runtime shape, not its value.
        self.shape_mask: tuple[bool, ...] = ()
        # The inputs whose changes make its value stale in train mode (all but those it writes).
        self.train_reads: tuple[Node, ...] = ()
        # For a gradient node: the forward node whose derivative it helps compute (for messages).
        self.grad_of: Node | None = None
        # (clock, train mode) when a forward left it and all its ancestors matching their inputs.
        self.fresh_at: tuple[int, bool] | None = None

    @property
    def is_leaf(self) -> bool:
        return self.op is None

    @property
    def is_float(self) -> bool:
        return self.dtype.kind == "f"

    def describe(self) -> str:
        if self.spec_node is not None and not self.user_named:
            return self.label()
        if self.kind == "op":
            return f"node {self.name!r} ({self.op.name if self.op else '?'})"
        return f"{self.kind} {self.name!r}"

    def label(self, within: str | None = None) -> str:
        """The node as messages name it: its quoted name, or for an unnamed node that a spec's
        definition built, that spec node first and the internal name only as a detail:
        ``node 'h' (its tanh, graph node tanh_5)``; just ``its tanh`` in a message that is
        already about a part of spec node ``within`` (the same one)."""
        if self.spec_node is None or self.user_named:
            return repr(self.name)
        what = self.op.name if self.op is not None else self.kind
        if self.spec_node == within:
            return f"its {what}"
        return f"node {self.spec_node!r} (its {what}, graph node {self.name})"


def _binary(opname: str, reflected: bool = False):
    def method(self: NodeId, other: Any) -> NodeId:
        g = self.graph
        if reflected:
            return g.apply(opname, (other, self))
        return g.apply(opname, (self, other))

    method.__name__ = f"__{'r' if reflected else ''}{opname}__"
    return method


class NodeId:
    """A handle to a node of one Graph. Arithmetic on NodeIds (and with numpy arrays or numbers)
    builds new nodes: ``+ - * / @ **``, unary ``-``, ``< <= > >=`` and ``x[key]``. ``==`` compares
    handles (so NodeIds can be dict keys); use ``g.equal`` for an elementwise comparison."""

    __slots__ = ("graph", "index")
    __array_priority__ = 1000  # numpy arrays defer to our reflected operators

    def __init__(self, graph: Graph, index: int) -> None:
        self.graph = graph
        self.index = index

    @property
    def node(self) -> Node:
        return self.graph.record(self)

    @property
    def name(self) -> str:
        return self.node.name

    def label(self) -> str:
        """The node as messages name it (Node.label): the spec node first for a part of one."""
        return self.node.label()

    @property
    def shape(self) -> tuple:
        """The static shape; None marks the batch dimension."""
        return self.node.shape

    @property
    def dtype(self) -> np.dtype:
        return self.node.dtype

    @property
    def value(self) -> np.ndarray | None:
        return self.graph.get_node_value(self)

    def __repr__(self) -> str:
        n = self.node
        return f"NodeId({n.index}, {n.name!r}, shape={n.shape})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeId) and other.graph is self.graph and other.index == self.index

    def __hash__(self) -> int:
        return hash((id(self.graph), self.index))

    def __bool__(self) -> bool:
        from .errors import GraphError

        raise GraphError(
            f"node {self.name!r} has no truth value while the graph is being built; "
            "use g.where(...) for a choice per element"
        )

    __add__ = _binary("add")
    __radd__ = _binary("add", True)
    __sub__ = _binary("sub")
    __rsub__ = _binary("sub", True)
    __mul__ = _binary("mul")
    __rmul__ = _binary("mul", True)
    __truediv__ = _binary("div")
    __rtruediv__ = _binary("div", True)
    __pow__ = _binary("pow")
    __rpow__ = _binary("pow", True)
    __matmul__ = _binary("matmul")
    __rmatmul__ = _binary("matmul", True)
    __lt__ = _binary("less")
    __le__ = _binary("less_equal")
    __gt__ = _binary("greater")
    __ge__ = _binary("greater_equal")

    def __neg__(self) -> NodeId:
        return self.graph.apply("neg", (self,))

    def __pos__(self) -> NodeId:
        return self

    def __abs__(self) -> NodeId:
        return self.graph.apply("abs", (self,))

    def __iter__(self) -> Iterator[NodeId]:
        # Without this, Python would iterate through __getitem__, building index nodes without end
        # along a batch dimension.
        from .errors import GraphError

        raise GraphError(f"node {self.name!r} cannot be iterated while the graph is being built; index it: x[i]")

    def __getitem__(self, key: Any) -> NodeId:
        return self.graph.apply("index", (self,), {"key": key})

    @property
    def T(self) -> NodeId:
        return self.graph.apply("transpose", (self,), {"axes": None})
