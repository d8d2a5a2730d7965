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
"""

from __future__ import annotations

import contextlib
import difflib
import functools
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from . import ops as _ops  # noqa: F401  (registers every op)
from .codegen import tiered_backward, tiered_forward
from .errors import GraphError, NonFiniteError, ReleasedValueError, ShapeError, StaleValueError
from .executor import all_stale, compile_steps, fast_steps, run, run_fast
from .init import initial_value
from .node import Node, NodeId
from .ops.registry import REGISTRY, OpDef, ShapeRuleError, VJPContext
from .ops.shapes import fmt
from .plan import BackwardPlan, ForwardPlan
from .threads import apply as _set_threads
from .threads import state as _threads

T = TypeVar("T")
NodeLike = NodeId | np.ndarray | float | int


class Graph:
    """A static computation graph. See the module docstring for the rules it keeps."""

    def __init__(self, seed: int | None = 0, dtype: str | np.dtype = "float32") -> None:
        self.dtype = _as_dtype("graph", dtype)
        if self.dtype.kind != "f":
            raise GraphError(f"graph dtype must be a float type such as 'float32' or 'float64', not {dtype!r}")
        init_seq, run_seq = np.random.SeedSequence(seed).spawn(2)
        self.init_rng = np.random.default_rng(init_seq)
        self.rng = np.random.default_rng(run_seq)
        self._nodes: list[Node] = []
        self._by_name: dict[str, Node] = {}
        self._consts: dict[tuple, Node] = {}
        self._detached: set[int] = set()
        self._grad_enabled = True
        self._train = True
        self._anomaly = False
        self._clock = 0
        self._pass = 0
        self._bytes = 0
        self._peak = 0
        self._fwd_plans: dict[tuple[int, ...], ForwardPlan] = {}
        self._bwd_plans: dict[tuple, BackwardPlan] = {}
        self._single_plans: dict[int, ForwardPlan] = {}  # _fwd_plans' one-target plans, by node index
        self._grad_nodes: dict[tuple, list[NodeId | None]] = {}
        # backward's targets, by the indices it was given: (the unique nodes, their indices).
        # (+ the backward plans for those targets while no node is detached, by (loss index, mode))
        self._target_sets: dict[
            tuple[int, ...], tuple[list[Node], tuple[int, ...], dict[tuple[int, bool], BackwardPlan]]
        ] = {}
        self._graded: dict[int, Node] = {}  # the nodes that may hold an accumulated gradient

    if TYPE_CHECKING:  # the op methods (g.tanh, g.matmul, ...) are generated from the registry

        def __getattr__(self, name: str) -> Callable[..., NodeId]: ...

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
        self._nodes.append(node)
        return node

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
        self._store_leaf(
            node, arr if value is not None else initial_value(self.init_rng, shape, init, self.dtype, **init_args)
        )
        return NodeId(self, node.index)

    def constant(self, value: Any, name: str | None = None) -> NodeId:
        """A fixed value (numbers become the graph's float type; integer arrays stay integers)."""
        arr = np.asarray(value)
        dt = np.dtype(np.int64) if arr.dtype.kind in "iu" else self.dtype
        arr = self._coerce(name or "constant", arr, dt)
        node = self._new_node(name, "constant", arr.shape, dt, "const")
        self._store_leaf(node, arr)
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
        return self._build(REGISTRY[opname], list(args), attrs, name)

    def _call(self, op: OpDef, args: tuple, kwargs: dict[str, Any]) -> NodeId:
        name = kwargs.pop("name", None)
        if op.variadic:
            if args and isinstance(args[0], (list, tuple)):
                inputs, rest = list(args[0]), list(args[1:])
            else:
                inputs, rest = list(args), []
        else:
            n = len(op.input_names)
            inputs, rest = list(args[:n]), list(args[n:])
            if len(inputs) < n:
                raise GraphError(f"{op.name} needs inputs ({', '.join(op.input_names)}), got {len(inputs)}")
        attr_names = list(op.attr_defaults)
        if len(rest) > len(attr_names):
            raise GraphError(f"{op.name} takes at most {len(op.input_names) + len(attr_names)} positional arguments")
        for key, v in zip(attr_names, rest):
            if key in kwargs:
                raise GraphError(f"{op.name}: {key!r} given twice")
            kwargs[key] = v
        return self._build(op, inputs, kwargs, name)

    def _build(self, op: OpDef, args: list[Any], attrs: dict[str, Any], name: str | None) -> NodeId:
        for key in attrs:
            if key not in op.attr_defaults:
                near = difflib.get_close_matches(key, op.attr_defaults, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                known = ", ".join(op.attr_defaults) or "none"
                raise GraphError(f"{op.name} has no argument {key!r}{hint} (its arguments: {known})")
        full = dict(op.attr_defaults)
        full.update(attrs)
        missing = [k for k, v in full.items() if v is _EMPTY]
        if missing:
            raise GraphError(f"{op.name} needs the argument(s) {', '.join(missing)}")
        for k in ("axis", "axes", "shape"):
            if isinstance(full.get(k), list):
                full[k] = tuple(full[k])
        inputs = tuple(self._as_node(a, op.name) for a in args)
        if op.build is not None:
            return self._build_composite(op, inputs, full, name)
        label = name if name is not None else f"{op.name}_{len(self._nodes)}"
        try:
            shape, kind = op.shape_rule(*(p.shape for p in inputs), **full)
        except (ShapeRuleError, TypeError, ValueError) as e:
            shown = ", ".join(f"{p.name!r} {fmt(p.shape)}" for p in inputs) or "no inputs"
            if isinstance(e, ShapeRuleError):
                raise ShapeError(f"cannot build node {label!r} ({op.name} of {shown}): {e}") from None
            # An attribute of the wrong type (axis="a") fails inside the shape rule.
            given = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
            raise GraphError(f"cannot build node {label!r} ({op.name} of {shown}, {given}): {e}") from e
        if op.keep_dtype:
            dt = inputs[0].dtype
        else:
            dt = self.dtype if kind == "f" else np.dtype(np.int64)
        node = self._new_node(name, "op", tuple(shape), dt, op.name)
        node.op = op
        node.inputs = inputs
        node.attrs = full
        node.shape_mask = tuple(op.is_shape_only(i) for i in range(len(inputs)))
        node.train_reads = tuple(p for i, p in enumerate(inputs) if i not in op.writes)
        return NodeId(self, node.index)

    def _build_composite(self, op: OpDef, inputs: tuple[Node, ...], attrs: dict[str, Any], name: str | None) -> NodeId:
        assert op.build is not None
        args = [NodeId(self, p.index) for p in inputs]
        try:
            out = op.build(self, *args, **attrs)
        except (ShapeError, TypeError, ValueError) as e:
            shown = ", ".join(f"{p.name!r} {fmt(p.shape)}" for p in inputs)
            label = f"{name!r} " if name is not None else ""
            if isinstance(e, ShapeError):
                raise ShapeError(f"cannot build {label}{op.name}({shown}): {e}") from None
            given = ", ".join(f"{k}={v!r}" for k, v in attrs.items())
            raise GraphError(f"cannot build {label}{op.name}({shown}, {given}): {e}") from e
        if name is not None:
            return NodeId(self, self._rename(self._nodes[out.index], name).index)
        return out

    def _rename(self, node: Node, name: str) -> Node:
        if name in self._by_name:
            raise GraphError(
                f"a node named {name!r} already exists ({self._by_name[name].describe()}); names must be unique"
            )
        if node.user_named or node.kind != "op":
            # The composite returned an existing named node: give the name to an identity view.
            node = self._nodes[self._build(REGISTRY["identity"], [NodeId(self, node.index)], {}, None).index]
        node.name = name
        node.user_named = True
        self._by_name[name] = node
        return node

    # ------------------------------------------------------------ lookup

    def _node(self, x: NodeId | str) -> Node:
        if isinstance(x, str):
            if x not in self._by_name:
                near = difflib.get_close_matches(x, self._by_name, n=1)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise GraphError(f"no node named {x!r}{hint}")
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

    def _store_leaf(self, node: Node, arr: np.ndarray) -> None:
        old = node.value
        node.value = arr
        node.rshape = arr.shape
        self._clock += 1
        node.ver = self._clock
        node.tracked = True
        node.released_by = None
        self._account(arr.nbytes - (old.nbytes if old is not None else 0))

    def _account(self, delta: int) -> None:
        self._bytes += delta
        if self._bytes > self._peak:
            self._peak = self._bytes

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
        self._store_leaf(n, arr)

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

    def _mark_changed(self, *nodes: Node) -> None:
        """Leaves' values were changed in place (an optimizer step): one new tick for all of them."""
        self._clock += 1
        for node in nodes:
            node.ver = self._clock

    # ------------------------------------------------------------ modes

    def is_grad_enabled(self) -> bool:
        return self._grad_enabled

    def is_train_mode(self) -> bool:
        return self._train

    def set_train_mode(self) -> None:
        self._train = True

    def set_eval_mode(self) -> None:
        self._train = False

    @contextlib.contextmanager
    def no_grad(self, eval_mode: bool = True) -> Iterator[Graph]:
        """Gradient tracking off (and eval mode on, unless eval_mode=False) inside the block;
        both are restored afterwards, also when the block raises."""
        saved = self._grad_enabled, self._train
        self._grad_enabled = False
        if eval_mode:
            self._train = False
        try:
            yield self
        finally:
            self._grad_enabled, self._train = saved

    def no_grad_scope(self, fn: Callable[[Graph], T]) -> T:
        """Run fn(self) under no_grad and eval mode; returns fn's result."""
        with self.no_grad():
            return fn(self)

    def set_anomaly_detection(self, on: bool = True) -> None:
        """Raise NonFiniteError at the first node whose value or gradient holds NaN or infinity."""
        self._anomaly = on

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
        train, grad_on = self._train, self._grad_enabled
        want = _threads.big if plan.big else _threads.small
        if want != _threads.current:
            _set_threads(want)
        steps = plan.steps
        if steps is None:
            steps = plan.steps = compile_steps(self, plan.nodes)
        # New inputs make everything downstream stale: then no node needs its own check.
        check = not all_stale(plan.entries[train], train)
        if check or self._anomaly:
            run(self, steps, train, grad_on, check, None if grad_on else plan.drops)
        else:
            runner = plan.fast[grad_on]
            if runner is None:
                runner = plan.fast[grad_on] = tiered_forward(
                    fast_steps(steps, None if grad_on else plan.drops),
                    functools.partial(plan.fast.__setitem__, grad_on),
                )
            runner(self, train, grad_on)
        if plan.pure:
            # Every ancestor of the targets now matches its inputs: until the clock moves, a
            # backward of a target need not check that again (_check_differentiable).
            stamp = (self._clock, train)
            for t in targets:
                t.fresh_at = stamp
        values = [t.value for t in targets]
        return values if many else values[0]  # type: ignore[return-value]

    @staticmethod
    def _nonfinite(n: Node, out: np.ndarray) -> NonFiniteError:
        """The anomaly error for n's fresh value. It names the forward node (for a gradient node, the
        forward node whose derivative it computes) and an input that was already non-finite."""
        bad = "NaN" if np.isnan(out).any() else "infinity"
        culprit = next(
            (p for p in n.inputs if p.value is not None and p.dtype.kind == "f" and not np.isfinite(p.value).all()),
            None,
        )
        if culprit is not None:
            cause = f"because its input {culprit.name!r} already holds NaN or infinity"
        elif n.grad_of is not None:
            cause = "from finite values"
        else:
            cause = f"from finite inputs ({', '.join(repr(p.name) for p in n.inputs)})"
        if n.grad_of is not None:
            where = f"the gradient through {n.grad_of.describe()} (gradient node {n.name!r})"
            return NonFiniteError(f"{where} produced {bad} {cause}", n.grad_of.name)
        return NonFiniteError(f"{n.describe()} produced {bad} {cause}", n.name)

    def first_nonfinite(self, node: NodeId | str) -> NodeId | None:
        """The first node, in topological order, among node and its ancestors whose value holds
        NaN or infinity (None if all held values are finite): where a divergence started."""
        for n in self._forward_plan([self._node(node)]).nodes:
            if n.value is not None and n.dtype.kind == "f" and not np.isfinite(n.value).all():
                return NodeId(self, n.index)
        return None

    # ------------------------------------------------------------ backward

    def _vjp_context(self, n: Node, needs: tuple[bool, ...]) -> VJPContext:
        return VJPContext(
            g=self,
            out=NodeId(self, n.index),
            inputs=tuple(NodeId(self, p.index) for p in n.inputs),
            attrs=n.attrs,
            needs=needs,
            train=self._train,
        )

    def _plan_key(self, y: Node, xs: list[Node], xs_key: tuple[int, ...] | None = None) -> tuple:
        cut: frozenset[int] = _NO_CUT
        if self._detached:
            anc = self._forward_plan([y]).index_set
            cut = frozenset(i for i in self._detached if i in anc)
        return (y.index, tuple([x.index for x in xs]) if xs_key is None else xs_key, cut, self._train)

    def _backward_plan(self, y: Node, xs: list[Node], xs_key: tuple[int, ...] | None = None) -> BackwardPlan:
        key = self._plan_key(y, xs, xs_key)
        plan = self._bwd_plans.get(key)
        if plan is None:
            plan = self._bwd_plans[key] = BackwardPlan(self, y, xs)
        return plan

    def _check_differentiable(self, y: Node, what: str) -> None:
        if not self._grad_enabled:
            raise GraphError(
                f"{what} of {y.describe()} while gradient tracking is off (inside no_grad); run it outside the no_grad block"
            )
        if y.value is None:
            if y.released_by is not None:
                raise self._released(what, y, y)
            raise GraphError(f"{what}: {y.describe()} has no value; call forward_node({y.name!r}) first")
        self._require_scalar(y, what)
        if not y.tracked:
            raise GraphError(
                f"{what}: the value of {y.describe()} was computed under no_grad; "
                f"call forward_node({y.name!r}) with gradient tracking on first"
            )
        train = self._train
        if y.fresh_at == (self._clock, train):
            return
        for a in self._forward_plan([y]).nodes:
            if a.op is None:
                continue
            changed = next((p for p in (a.train_reads if train else a.inputs) if p.ver > a.ver), None)
            if changed is not None:
                raise StaleValueError(
                    f"{what}: {changed.describe()} changed after {y.name!r} was computed (by set_value, an optimizer "
                    f"step or another forward); run forward_node({y.name!r}) again first"
                )
            if a.op.mode_dependent and a.mode != train:
                mode = "train" if a.mode else "eval"
                raise StaleValueError(
                    f"{what}: {a.describe()} was computed in {mode} mode, but the graph is now in the other mode; "
                    f"run forward_node({y.name!r}) again first"
                )

    @staticmethod
    def _require_scalar(y: Node, what: str) -> None:
        # The static shape decides: a loss with a batch axis is not a scalar, even for a batch of one.
        if y.shape and any(d != 1 for d in y.shape):
            shape = fmt(y.shape) if y.value is None or y.value.size == 1 else y.value.shape
            raise GraphError(f"{what} needs a scalar, but {y.describe()} has shape {shape}; reduce it first (g.mean)")

    def _check_needed(self, plan: BackwardPlan, kind: str) -> None:
        """A GraphError when a forward value that plan reads is not held; ``kind`` ("backward" or
        "grad") names the call."""
        for n in plan.needed:
            if n.value is None:
                what = f"{kind} of {plan.y.name!r}"
                if n.released_by is not None:
                    raise self._released(what, n, plan.y)
                raise GraphError(
                    f"{what} needs the value of {n.describe()}, which is not held (dropped by a no_grad forward); "
                    f"run forward_node({plan.y.name!r}) with gradient tracking on first"
                )

    def _run_backward(self, plan: BackwardPlan, kind: str) -> list[np.ndarray | None]:
        """Run plan; ``kind`` ("backward" or "grad") names the call in errors."""
        self._check_needed(plan, kind)
        want = _threads.big if plan.big else _threads.small
        if want != _threads.current:
            _set_threads(want)
        if plan.program is not None and not self._anomaly:
            runner = plan.runner
            if runner is None:
                runner = plan.runner = tiered_backward(plan.program, functools.partial(setattr, plan, "runner"))
            return runner(self)
        if self._anomaly:
            run(self, plan.compiled, self._train, self._grad_enabled, False, plan.frees)
        else:
            run_fast(self, plan.fast, self._train, self._grad_enabled)
        # Two targets may share one gradient node (a + b): read them all before freeing any.
        out = [None if gn is None else gn.value for gn in plan.grads]
        freed = 0
        for gn in plan.computed:
            if gn.value is not None:
                freed += gn.value.nbytes
                gn.value = None
        self._bytes -= freed
        return out

    @staticmethod
    def _released(what: str, n: Node, y: Node) -> ReleasedValueError:
        fix = f"run forward_node({y.name!r}) again"
        if n.released_by != _BY_RELEASE_VALUES:
            fix = f"pass retain_graph=True to that earlier call, or {fix}"
        return ReleasedValueError(f"{what} needs the value of {n.describe()}, which {n.released_by} released; {fix}")

    def _release(self, nodes: list[Node], by: str) -> None:
        """Drop the values of nodes; ``by`` says who did it, for the error a later backward raises."""
        freed = 0
        for n in nodes:
            if n.value is not None:
                freed += n.value.nbytes
                n.value = None
                n.released_by = by
        self._bytes -= freed

    def backward_nodes(self, targets: NodeId | Sequence[NodeId], loss: NodeId) -> None:
        """d loss / d target, ADDED into each target's gradient; releases what it went through."""
        self.backward_nodes_ex(targets, loss, retain_graph=False)

    def backward_nodes_ex(self, targets: NodeId | Sequence[NodeId], loss: NodeId, retain_graph: bool = False) -> None:
        """As backward_nodes; retain_graph=True keeps the intermediate values so that another
        backward can run through them."""
        y = self._nodes[loss.index] if type(loss) is NodeId and loss.graph is self else self._node(loss)
        key = self._targets_key(targets)
        known = self._target_sets.get(key) if key is not None else None
        plans: dict[tuple[int, bool], BackwardPlan] | None = None
        if known is None:
            xs = self._unique_nodes(targets)
            xs_key = tuple([x.index for x in xs])
            if key is not None:
                self._target_sets[key] = (xs, xs_key, {})
        else:
            # The same targets passed _unique_nodes before: what it checks (the nodes exist and
            # hold floats) cannot change.
            xs, xs_key, plans = known
        self._check_differentiable(y, "backward")
        if plans is not None and not self._detached:
            # Without detached nodes the plan's key is (loss, targets, mode): looked up directly.
            plan = plans.get((y.index, self._train))  # type: ignore[assignment]
            if plan is None:
                plan = plans[(y.index, self._train)] = self._backward_plan(y, xs, xs_key)
        else:
            plan = self._backward_plan(y, xs, xs_key)
        if plan.program is not None and not self._anomaly:
            # The common case: the needed values held, then the program adds into the targets.
            self._check_needed(plan, "backward")
            want = _threads.big if plan.big else _threads.small
            if want != _threads.current:
                _set_threads(want)
            run = plan.acc_runner
            if run is None:
                run = plan.acc_runner = tiered_backward(
                    plan.program,
                    functools.partial(setattr, plan, "acc_runner"),
                    into=(plan.xs, plan.ownable, functools.partial(self._accumulate, y, plan)),
                )
            run(self)
        else:
            self._accumulate(y, plan, self._run_backward(plan, "backward"))
        if not retain_graph:
            self._release(plan.path, plan.released_by["backward"])

    def _accumulate(self, y: Node, plan: BackwardPlan, grads: Sequence[np.ndarray | None]) -> None:
        """Add the gradients plan computed into its targets' (codegen.backward_code writes the
        same, without the anomaly check, for plans that run often)."""
        anomaly, graded = self._anomaly, self._graded
        added = 0
        for x, gv, own in zip(plan.xs, grads, plan.ownable):
            if gv is None:
                continue
            if anomaly and not np.isfinite(gv).all():
                self._account(added)
                raise NonFiniteError(f"the gradient of {y.name!r} with respect to {x.describe()} is not finite", x.name)
            if x.grad is None:
                # A fresh array that no node holds any more becomes the gradient as it is.
                x.grad = gv if own and gv.base is None else np.array(gv, dtype=x.dtype)
                added += x.grad.nbytes
                graded[x.index] = x
            else:
                x.grad += gv
        self._account(added)  # only additions: the peak is reached at the end

    def _targets_key(self, targets: Any) -> tuple[int, ...] | None:
        """The indices of targets when they are all NodeIds of this graph (the usual call), else
        None: a key for _target_sets."""
        if type(targets) is NodeId:
            return (targets.index,) if targets.graph is self else None
        if type(targets) is not list and type(targets) is not tuple:
            return None
        key = []
        for t in targets:
            if type(t) is not NodeId or t.graph is not self:
                return None
            key.append(t.index)
        return tuple(key)

    def _unique_nodes(self, targets: NodeId | Sequence[NodeId]) -> list[Node]:
        items = [targets] if isinstance(targets, (NodeId, str)) else targets
        nodes = self._nodes
        seen: dict[int, Node] = {}
        for t in items:
            n = nodes[t.index] if type(t) is NodeId and t.graph is self else self._node(t)
            if n.index not in seen:
                if n.dtype.kind != "f":
                    raise GraphError(f"{n.describe()} holds integers and cannot have a gradient")
                seen[n.index] = n
        return list(seen.values())

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
        single = isinstance(xs, NodeId)
        yn = self._node(y)
        xn = self._unique_nodes(xs)
        asked: list[Any] = [xs] if single else list(xs)  # type: ignore[arg-type]
        # One result per entry of xs, also when an entry repeats (as torch.autograd.grad).
        slot = {x.index: i for i, x in enumerate(xn)}
        order = [slot[self._node(x).index] for x in asked]
        if create_graph:
            if not self._grad_enabled:
                raise GraphError(f"grad(create_graph=True) of {yn.describe()} inside no_grad; call it outside")
            self._require_scalar(yn, "grad")
            key = self._plan_key(yn, xn)
            grads = self._grad_nodes.get(key)
            if grads is None:
                from .plan import build_gradients

                grads = self._grad_nodes[key] = build_gradients(self, yn, xn).grads
            self._check_unused(yn, xn, grads, allow_unused)
            live = [gid for gid in grads if gid is not None]
            if live and yn.value is not None and yn.tracked:
                self.forward_node(live)
            return grads[0] if single else [grads[i] for i in order]
        self._check_differentiable(yn, "grad")
        plan = self._backward_plan(yn, xn)
        values = self._run_backward(plan, "grad")
        self._check_unused(yn, xn, values, allow_unused)
        out = [v if v is None or (own and v.base is None) else np.array(v) for v, own in zip(values, plan.ownable)]
        if not retain_graph:
            self._release(plan.path, plan.released_by["grad"])
        if single:
            return out[0]
        result = []
        for i in order:
            v = out[i]
            result.append(v if v is None or order.count(i) == 1 else v.copy())
        return result

    @staticmethod
    def _check_unused(y: Node, xs: list[Node], grads: Sequence[Any], allow_unused: bool) -> None:
        if allow_unused:
            return
        for x, gv in zip(xs, grads):
            if gv is None:
                raise GraphError(
                    f"{x.describe()} is not reachable from {y.name!r} (unrelated, or cut by a detach or stop_gradient); "
                    "pass allow_unused=True to get None for it"
                )

    def clear_jacobi(self, nodes: NodeId | str | Sequence[NodeId | str] | None = None) -> None:
        """Clear accumulated gradients (of all nodes, or of the given ones)."""
        if isinstance(nodes, (NodeId, str)):
            nodes = [nodes]
        graded = self._graded
        freed = 0
        if nodes is None:
            for n in graded.values():
                if n.grad is not None:
                    freed += n.grad.nbytes
                    n.grad = None
            graded.clear()
            self._bytes -= freed
            return
        for n in [self._node(x) for x in nodes]:
            if n.grad is not None:
                freed += n.grad.nbytes
                n.grad = None
            graded.pop(n.index, None)
        self._bytes -= freed

    zero_grad = clear_jacobi

    def release_values(self) -> None:
        """Drop every intermediate value (leaves keep theirs); forward_node recomputes them."""
        self._release([n for n in self._nodes if n.op is not None], _BY_RELEASE_VALUES)

    # ------------------------------------------------------------ memory

    def memory_stats(self) -> dict[str, int]:
        """Bytes of the arrays the graph holds (values and gradients): now, and the peak since
        the last reset_peak_memory()."""
        return {"current_bytes": self._bytes, "peak_bytes": self._peak}

    def reset_peak_memory(self) -> None:
        self._peak = self._bytes


_EMPTY = __import__("inspect").Parameter.empty
_BY_RELEASE_VALUES = "release_values()"
_NO_CUT: frozenset[int] = frozenset()


def _as_dtype(what: str, dtype: Any) -> np.dtype:
    try:
        return np.dtype(dtype)
    except TypeError:
        raise GraphError(f"{what}: {dtype!r} is not a dtype (use e.g. 'float32', 'float64' or 'int64')") from None


def _op_method(op: OpDef) -> Callable[..., NodeId]:
    def method(self: Graph, *args: Any, **kwargs: Any) -> NodeId:
        return self._call(op, args, kwargs)

    inputs = ", ".join(("*" if op.variadic else "") + n for n in op.input_names)
    attrs = ", ".join(f"{k}={v!r}" for k, v in op.attr_defaults.items() if v is not _EMPTY)
    required = ", ".join(k for k, v in op.attr_defaults.items() if v is _EMPTY)
    sig = ", ".join(s for s in (inputs, required, attrs) if s)
    method.__name__ = op.name
    method.__qualname__ = f"Graph.{op.name}"
    method.__doc__ = f"{op.name}({sig}, name=None) -> NodeId\n\n{op.doc}"
    return method


for _name, _op in REGISTRY.items():
    if not hasattr(Graph, _name):
        setattr(Graph, _name, _op_method(_op))
