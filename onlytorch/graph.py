"""The Graph: nodes, values and versions, forward, backward, modes, detach and release.

Rules (the gradient-flow design):
- Values carry versions (a clock tick). ``forward_node`` recomputes exactly the nodes whose value
  is missing or older than an input's (or computed in the other train/eval mode), once each.
- With gradient tracking off (``no_grad``), a forward drops each intermediate value it computed
  as soon as nothing later in that forward reads it; only the asked-for values stay.
- ``backward_nodes_ex(targets, loss, retain_graph)`` runs the cached gradient subgraph for
  (loss, targets, detach set, mode), ADDS the results into the targets' gradients, and unless
  ``retain_graph`` releases the intermediate values it went through (leaves and the loss stay).
- A detached node keeps its value and passes no gradient to its inputs; ``stop_gradient`` is the
  permanent, op form of the same cut.

Graph is the public facade of the engine: it holds the nodes, the names and the plan caches, and
delegates the rest to the engine core: building op nodes (builder.py), backward and grad
(autograd.py), plans (plan.py) and running them (executor.py, codegen.py); the run-time state
(clock, byte counts, modes, RNGs, the gradients' owners) is its ``runtime`` (runtime.py).
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import autograd
from . import ops as _ops  # noqa: F401  (registers every op)
from .builder import build, op_method
from .codegen import tiered_forward
from .errors import GraphError, ShapeError
from .executor import all_stale, compile_steps, fast_steps, run
from .init import initial_value
from .node import Node, NodeId
from .ops.registry import REGISTRY
from .ops.shapes import fmt
from .plan import BackwardPlan, ForwardPlan, ancestors
from .runtime import Runtime
from .suggest import did_you_mean_suffix
from .threads import apply as _set_threads
from .threads import state as _threads

T = TypeVar("T")
NodeLike = NodeId | np.ndarray | float | int


class Graph:
    """A static computation graph. See the module docstring for the rules it keeps; its run-time
    state (clock, byte counts, modes, RNGs) is ``runtime`` (runtime.py)."""

    def __init__(self, seed: int | None = 0, dtype: str | np.dtype = "float32") -> None:
        self.dtype = _as_dtype("graph", dtype)
        if self.dtype.kind != "f":
            raise GraphError(f"graph dtype must be a float type such as 'float32' or 'float64', not {dtype!r}")
        self.runtime = Runtime(seed)
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._consts: dict[tuple, Node] = {}
        self._detached: set[int] = set()
        self._building: list[str] = []  # Graph.building: the spec nodes whose definitions are being built
        self._fwd_plans: dict[tuple[int, ...], ForwardPlan] = {}
        self._bwd_plans: dict[tuple, BackwardPlan] = {}
        self._single_plans: dict[int, ForwardPlan] = {}  # _fwd_plans' one-target plans, by node index
        self._grad_nodes: dict[tuple, list[NodeId | None]] = {}
        # backward's targets, by the indices it was given: (the unique nodes, their indices).
        # (+ the backward plans for those targets while no node is detached, by (loss index, mode))
        self._target_sets: dict[
            tuple[int, ...], tuple[list[Node], tuple[int, ...], dict[tuple[int, bool], BackwardPlan]]
        ] = {}

    if TYPE_CHECKING:  # the op methods (g.tanh, g.matmul, ...) are generated from the registry

        def __getattr__(self, name: str) -> Callable[..., NodeId]: ...

    @property
    def rng(self) -> np.random.Generator:
        """The random generator of dropout and sampling ops (checkpoints save and restore it)."""
        return self.runtime.rng

    @rng.setter
    def rng(self, value: np.random.Generator) -> None:
        self.runtime.rng = value

    @property
    def init_rng(self) -> np.random.Generator:
        """The random generator parameter initialisers draw from."""
        return self.runtime.init_rng

    @init_rng.setter
    def init_rng(self, value: np.random.Generator) -> None:
        self.runtime.init_rng = value

    @property
    def _clock(self) -> int:
        """The runtime's clock (the engine's tests compare nodes' versions with it)."""
        return self.runtime.clock

    # ------------------------------------------------------------ building

    def _new_node(self, name: str | None, kind: str, shape: tuple, dtype: np.dtype, default: str) -> Node:
        index = len(self._nodes)
        if name is not None:
            if not isinstance(name, str) or not name:
                raise GraphError(f"node names must be non-empty strings, got {name!r}")
            if name in self._by_name:
                raise GraphError(
                    f"a node named {name!r} already exists ({self._by_name[name].describe()}); names must be unique"
                )
        node = Node(index, name if name is not None else f"{default}_{index}", kind, shape, dtype)
        if name is not None:
            node.user_named = True
            self._by_name[name] = node
        elif self._building:
            node.spec_node = self._building[-1]
        self._nodes.append(node)
        return node

    @contextlib.contextmanager
    def building(self, spec_node: str) -> Iterator[None]:
        """The unnamed nodes built inside belong to ``spec_node`` (a spec's named node, whose
        definition is being built): messages name it first (``node 'h' (its tanh, graph node
        tanh_5)``, see Node.label). Nested: the innermost one wins."""
        self._building.append(spec_node)
        try:
            yield
        finally:
            self._building.pop()

    def spec_node_building(self) -> str | None:
        """The spec node whose definition is being built (Graph.building), if any."""
        return self._building[-1] if self._building else None

    @staticmethod
    def _check_shape(name: str, shape: Sequence[int | None], allow_batch: bool) -> tuple:
        try:
            shape = tuple(shape)
        except TypeError:
            raise GraphError(f"shape of {name!r} must be a sequence of sizes, got {shape!r}") from None
        for d in shape:
            if d is None and allow_batch:
                continue
            if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 0:
                what = "non-negative integers or None (the batch size)" if allow_batch else "non-negative integers"
                raise GraphError(f"shape of {name!r} must hold {what}, got {shape!r}")
        return tuple(None if d is None else int(d) for d in shape)

    def input(self, name: str, shape: Sequence[int | None], dtype: str | None = None) -> NodeId:
        """A value fed with ``set_value`` each step. ``None`` in shape marks the batch dimension;
        ``dtype="int64"`` for integer labels or indices."""
        shape = self._check_shape(name, shape, allow_batch=True)
        dt = self.dtype if dtype is None else _as_dtype(f"input {name!r}", dtype)
        if dt.kind not in "fi":
            raise GraphError(f"input {name!r}: dtype must be the graph's float type or an integer type, not {dt}")
        return NodeId(self, self._new_node(name, "input", shape, dt, "input").index)

    def parameter(
        self,
        name: str,
        shape: Sequence[int] | None = None,
        init: str = "xavier_uniform",
        value: np.ndarray | None = None,
        **init_args: Any,
    ) -> NodeId:
        """A trainable value: from ``value``, or initialised with ``init`` from the graph's seeded
        RNG (zeros, ones, constant, normal, uniform, xavier_uniform/normal, kaiming_uniform/normal,
        lecun_uniform), with the initialiser's arguments as keywords."""
        return self._persistent("parameter", name, shape, init, value, init_args)

    def state(
        self,
        name: str,
        shape: Sequence[int] | None = None,
        init: str = "zeros",
        value: np.ndarray | None = None,
        **init_args: Any,
    ) -> NodeId:
        """A persistent, non-trainable value (batch-norm running statistics, a carried hidden state)."""
        return self._persistent("state", name, shape, init, value, init_args)

    def _persistent(self, kind: str, name: str, shape, init: str, value, init_args: dict) -> NodeId:
        if value is not None:
            if init_args:
                raise GraphError(
                    f"{kind} {name!r}: {', '.join(sorted(init_args))} given with a value; keyword arguments are "
                    f"the initialiser's (init={init!r}), and a value needs none (it takes the graph's dtype, {self.dtype})"
                )
            arr = self._coerce(name, value, self.dtype)
            if shape is not None and tuple(shape) != arr.shape:
                raise ShapeError(f"{kind} {name!r}: value has shape {arr.shape} but shape {tuple(shape)} was given")
            shape = arr.shape
        elif shape is None:
            raise GraphError(f"{kind} {name!r} needs a shape or a value")
        shape = self._check_shape(name, shape, allow_batch=False)
        node = self._new_node(name, kind, shape, self.dtype, kind)
        self.runtime.store(
            node,
            arr if value is not None else initial_value(self.runtime.init_rng, shape, init, self.dtype, **init_args),
        )
        return NodeId(self, node.index)

    def constant(self, value: Any, name: str | None = None) -> NodeId:
        """A fixed value (numbers become the graph's float type; integer arrays stay integers)."""
        arr = np.asarray(value)
        dt = np.dtype(np.int64) if arr.dtype.kind in "iu" else self.dtype
        arr = self._coerce(name or "constant", arr, dt)
        node = self._new_node(name, "constant", arr.shape, dt, "const")
        self.runtime.store(node, arr)
        return NodeId(self, node.index)

    def _scalar(self, v: float) -> Node:
        key = (float(v),)
        node = self._consts.get(key)
        if node is None:
            node = self._nodes[self.constant(float(v)).index]
            self._consts[key] = node
        return node

    def _const_like_ones(self, y: Node) -> NodeId:
        return NodeId(self, self._scalar(1.0).index) if y.shape == () else self.constant(np.ones(y.shape))

    def _as_node(self, x: Any, opname: str) -> Node:
        if isinstance(x, NodeId):
            if x.graph is not self:
                raise GraphError(f"op {opname}: node {x.name!r} belongs to another graph")
            return self._nodes[x.index]
        if isinstance(x, (bool, int, float, np.floating, np.integer)) and not isinstance(x, np.ndarray):
            return self._scalar(float(x))
        if isinstance(x, (np.ndarray, list, tuple)):
            return self._nodes[self.constant(np.asarray(x)).index]
        raise GraphError(
            f"op {opname}: cannot use {type(x).__name__} {x!r} as an input; pass a node, an array or a number"
        )

    def _apply(self, opname: str, args: Sequence[Any], attrs: dict[str, Any], name: str | None = None) -> NodeId:
        return build(self, REGISTRY[opname], list(args), attrs, name)

    def _rename(self, node: Node, name: str) -> Node:
        if name in self._by_name:
            raise GraphError(
                f"a node named {name!r} already exists ({self._by_name[name].describe()}); names must be unique"
            )
        if node.user_named or node.kind != "op":
            # The composite returned an existing named node: give the name to an identity view.
            node = self._nodes[build(self, REGISTRY["identity"], [NodeId(self, node.index)], {}, None).index]
        node.name = name
        node.user_named = True
        self._by_name[name] = node
        return node

    # ------------------------------------------------------------ lookup

    def _node(self, x: NodeId | str) -> Node:
        if isinstance(x, str):
            if x not in self._by_name:
                raise GraphError(f"no node named {x!r}{did_you_mean_suffix(x, self._by_name)}")
            return self._by_name[x]
        if not isinstance(x, NodeId):
            raise GraphError(f"expected a NodeId (or a node name), got {type(x).__name__} {x!r}")
        if x.graph is not self:
            raise GraphError(f"node {x.name!r} belongs to another graph")
        return self._nodes[x.index]

    def record(self, x: NodeId | str) -> Node:
        """The record of a node, by NodeId or name (its op, inputs, shape, dtype, value, flags): what
        the compiler, the memory estimate, modules and tools read. GraphError for an unknown name or
        another graph's node."""
        return self._node(x)

    def records(self, start: int = 0) -> list[Node]:
        """The records of the nodes from index start on, in creation order (a topological order),
        the gradient nodes backward built included."""
        return self._nodes[start:]

    def node_count(self) -> int:
        """How many nodes the graph holds (gradient nodes included): ``records(n)`` after a build
        started at ``n = node_count()`` are the nodes it added."""
        return len(self._nodes)

    def forward_order(self, targets: Sequence[NodeId | str | Node]) -> list[Node]:
        """The targets and every node they depend on, in topological order: what a forward of them runs."""
        return self._forward_plan([t if isinstance(t, Node) else self._node(t) for t in targets]).nodes

    def ancestors(self, targets: Sequence[NodeId | str]) -> list[Node]:
        """What forward_order returns, without making a plan for the targets: for questions asked
        before their first forward (a plan sizes its thread policy by the batch its inputs hold)."""
        return ancestors([self._node(t) for t in targets])

    def apply(
        self, opname: str, args: Sequence[Any], attrs: dict[str, Any] | None = None, name: str | None = None
    ) -> NodeId:
        """A new node of the registry's op ``opname`` (name or alias) on args, with attributes attrs:
        what ``g.tanh(x)`` and the spec language's function calls do."""
        return self._apply(opname, args, attrs or {}, name)

    def rename(self, node: NodeId, name: str) -> NodeId:
        """Give node a name (names are unique); a leaf or an already named node gets an identity view
        with that name, which is returned."""
        return NodeId(self, self._rename(self._node(node), name).index)

    def node(self, name: str) -> NodeId:
        """The node called name."""
        return NodeId(self, self._node(name).index)

    def nodes(self, include_hidden: bool = False) -> list[NodeId]:
        """All nodes (without the gradient nodes backward built, unless include_hidden)."""
        return [NodeId(self, n.index) for n in self._nodes if include_hidden or not n.hidden]

    def parameters(self) -> list[NodeId]:
        return [NodeId(self, n.index) for n in self._nodes if n.kind == "parameter"]

    def states(self) -> list[NodeId]:
        return [NodeId(self, n.index) for n in self._nodes if n.kind == "state"]

    # ------------------------------------------------------------ values

    def _coerce(self, name: str, value: Any, dtype: np.dtype) -> np.ndarray:
        try:
            arr = np.asarray(value)
        except Exception as e:  # ragged lists and the like
            raise GraphError(f"value for {name!r} is not an array: {e}") from None
        if arr.dtype.kind not in "biuf":
            raise GraphError(f"value for {name!r} has dtype {arr.dtype}; expected numbers ({dtype})")
        if (
            dtype.kind == "i"
            and arr.dtype.kind == "f"
            and not (np.all(np.isfinite(arr)) and np.all(np.mod(arr, 1) == 0))
        ):
            raise GraphError(f"value for {name!r} must hold integers (its dtype is {dtype}), got non-integer floats")
        return np.array(arr, dtype=dtype, copy=True) if arr.dtype != dtype or arr is value else arr

    def set_value(self, node: NodeId | str, value: Any) -> None:
        """Feed an input, or overwrite a parameter's or state's value."""
        n = self._nodes[node.index] if type(node) is NodeId and node.graph is self else self._node(node)
        if n.op is not None or n.kind == "constant":
            raise GraphError(f"cannot set the value of {n.describe()}: only inputs, parameters and states take values")
        if type(value) is np.ndarray and value.dtype == n.dtype:
            # What _coerce does with an array of the right dtype: the graph keeps its own copy.
            arr = value.copy(order="K")
        else:
            arr = self._coerce(n.name, value, n.dtype)
        if arr.shape != n.rshape and (
            arr.ndim != len(n.shape) or any(d is not None and d != a for d, a in zip(n.shape, arr.shape))
        ):  # (the shape of the value it replaces passed this check: a new batch of the same size is fine)
            raise ShapeError(
                f"value for {n.describe()} has shape {arr.shape}, expected {fmt(n.shape)} (N = any batch size)"
            )
        self.runtime.store(n, arr)

    def get_node_value(self, node: NodeId | str) -> np.ndarray | None:
        """The node's value, or None where the graph holds none (never computed, or released)."""
        return self._node(node).value

    def require_value(self, node: NodeId | str) -> np.ndarray:
        """The node's value; a GraphError naming the node when none is held."""
        n = self._node(node)
        if n.value is None:
            raise GraphError(f"{n.describe()} holds no value")
        return n.value

    def get_node_grad(self, node: NodeId | str) -> np.ndarray | None:
        """The gradient accumulated into node by backward calls, or None."""
        return self._node(node).grad

    # ------------------------------------------------------------ modes

    def is_grad_enabled(self) -> bool:
        return self.runtime.grad_enabled

    def is_train_mode(self) -> bool:
        return self.runtime.train

    def set_train_mode(self) -> None:
        self.runtime.train = True

    def set_eval_mode(self) -> None:
        self.runtime.train = False

    @contextlib.contextmanager
    def no_grad(self, eval_mode: bool = True) -> Iterator[Graph]:
        """Gradient tracking off (and eval mode on, unless eval_mode=False) inside the block;
        both are restored afterwards, also when the block raises."""
        rt = self.runtime
        saved = rt.grad_enabled, rt.train
        rt.grad_enabled = False
        if eval_mode:
            rt.train = False
        try:
            yield self
        finally:
            rt.grad_enabled, rt.train = saved

    def no_grad_scope(self, fn: Callable[[Graph], T]) -> T:
        """Run fn(self) under no_grad and eval mode; returns fn's result."""
        with self.no_grad():
            return fn(self)

    def set_anomaly_detection(self, on: bool = True) -> None:
        """Raise NonFiniteError at the first node whose value or gradient holds NaN or infinity."""
        self.runtime.anomaly = on

    # ------------------------------------------------------------ detach

    def detach_node(self, node: NodeId | str) -> None:
        """Keep node's value but pass no gradient to its inputs, until attach_node."""
        n = self._node(node)
        n.detached = True
        self._detached.add(n.index)

    def attach_node(self, node: NodeId | str) -> None:
        n = self._node(node)
        n.detached = False
        self._detached.discard(n.index)

    def is_node_detached(self, node: NodeId | str) -> bool:
        return self._node(node).detached

    # ------------------------------------------------------------ forward

    def _forward_plan(self, targets: list[Node]) -> ForwardPlan:
        key = tuple([t.index for t in targets])
        plan = self._fwd_plans.get(key)
        if plan is None:
            plan = self._fwd_plans[key] = ForwardPlan(targets)
        return plan

    def forward_node(self, node: NodeId | str | Sequence[NodeId | str]) -> np.ndarray | list[np.ndarray]:
        """Compute node (or a list of nodes), recomputing only what is missing or stale; returns
        the value(s)."""
        if type(node) is NodeId and node.graph is self:
            many = False
            plan = self._single_plans.get(node.index)  # type: ignore[assignment]
            if plan is None:
                plan = self._single_plans[node.index] = self._forward_plan([self._nodes[node.index]])
            targets = plan.targets
        else:
            many = isinstance(node, (list, tuple))
            items: Sequence[Any] = node if many else [node]  # type: ignore[assignment,list-item]
            nodes = self._nodes
            targets = [nodes[n.index] if type(n) is NodeId and n.graph is self else self._node(n) for n in items]
            plan = self._forward_plan(targets)
        for n in plan.leaves:
            if n.value is None:
                raise GraphError(f"{n.describe()} has no value: call set_value({n.name!r}, ...) before forward")
        rt = self.runtime
        train, grad_on = rt.train, rt.grad_enabled
        want = _threads.big if plan.big else _threads.small
        if want != _threads.current:
            _set_threads(want)
        steps = plan.steps
        if steps is None:
            steps = plan.steps = compile_steps(self, plan.nodes)
        # New inputs make everything downstream stale: then no node needs its own check.
        check = not all_stale(plan.entries[train], train)
        if check or rt.anomaly:
            run(rt, steps, train, grad_on, check, None if grad_on else plan.drops)
        else:
            runner = plan.fast[grad_on]
            if runner is None:
                runner = plan.fast[grad_on] = tiered_forward(
                    fast_steps(steps, None if grad_on else plan.drops),
                    functools.partial(plan.fast.__setitem__, grad_on),
                )
            runner(rt, train, grad_on)
        if plan.pure:
            # Every ancestor of the targets now matches its inputs: until the clock moves, a
            # backward of a target need not check that again (autograd.check_differentiable).
            stamp = (rt.clock, train)
            for t in targets:
                t.fresh_at = stamp
        values = [t.value for t in targets]
        return values if many else values[0]  # type: ignore[return-value]

    def first_nonfinite(self, node: NodeId | str) -> NodeId | None:
        """The first node, in topological order, among node and its ancestors whose value holds
        NaN or infinity (None if all held values are finite): where a divergence started."""
        for n in self._forward_plan([self._node(node)]).nodes:
            if n.value is not None and n.dtype.kind == "f" and not np.isfinite(n.value).all():
                return NodeId(self, n.index)
        return None

    # ------------------------------------------------------------ backward

    def _backward_plan(self, y: Node, xs: list[Node], xs_key: tuple[int, ...] | None = None) -> BackwardPlan:
        return autograd.backward_plan(self, y, xs, xs_key)

    def backward_nodes(self, targets: NodeId | Sequence[NodeId], loss: NodeId) -> None:
        """d loss / d target, ADDED into each target's gradient; releases what it went through."""
        autograd.backward(self, targets, loss, False)

    def backward_nodes_ex(self, targets: NodeId | Sequence[NodeId], loss: NodeId, retain_graph: bool = False) -> None:
        """As backward_nodes; retain_graph=True keeps the intermediate values so that another
        backward can run through them."""
        autograd.backward(self, targets, loss, retain_graph)

    def grad(
        self,
        y: NodeId,
        xs: NodeId | Sequence[NodeId],
        create_graph: bool = False,
        retain_graph: bool | None = None,
        allow_unused: bool = False,
    ) -> Any:
        """Gradients of scalar y with respect to xs, not accumulated anywhere. Numpy arrays; with
        create_graph=True, new nodes of this graph that can be differentiated again."""
        return autograd.grad(self, y, xs, create_graph, retain_graph, allow_unused)

    def clear_jacobi(self, nodes: NodeId | str | Sequence[NodeId | str] | None = None) -> None:
        """Clear accumulated gradients (of all nodes, or of the given ones)."""
        if isinstance(nodes, (NodeId, str)):
            nodes = [nodes]
        self.runtime.clear_grads(None if nodes is None else [self._node(x) for x in nodes])

    zero_grad = clear_jacobi

    def release_values(self) -> None:
        """Drop every intermediate value (leaves keep theirs); forward_node recomputes them."""
        self.runtime.release([n for n in self._nodes if n.op is not None], autograd.BY_RELEASE_VALUES)

    # ------------------------------------------------------------ memory

    def memory_stats(self) -> dict[str, int]:
        """Bytes of the arrays the graph holds (values and gradients): now, and the peak since
        the last reset_peak_memory()."""
        return self.runtime.memory_stats()

    def reset_peak_memory(self) -> None:
        self.runtime.peak = self.runtime.nbytes


def _as_dtype(what: str, dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise GraphError(f"{what}: {dtype!r} is not a dtype (use e.g. 'float32', 'float64' or 'int64')") from None


for _name, _op in REGISTRY.items():
    if not hasattr(Graph, _name):
        setattr(Graph, _name, op_method(_op))
