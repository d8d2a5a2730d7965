"""The compiled step runner: plans turned into flat lists of closures, run by one tight loop.

Compiling a node binds its op's forward to its attributes and to its input nodes, so running it
is one call with no registry, attribute or argument-mask lookups. ``run`` evaluates a list of
such steps; with ``check`` it first applies the staleness rule of ``Graph.forward_node`` to each
step (recompute only what is missing, older than an input, or computed in the other mode), and
without it evaluates every step: the fast path, taken when the caller has proved that every step
is stale anyway (``all_stale``) or when every step must run (a backward).

``run_fast`` is the loop of the common case (no check, no anomaly detection) over steps that
``fast_steps`` prepared once per plan: plain ops are called with their input values directly,
and the drops of each step are bound to it.

The clock, byte count and peak live in locals during the loop; they are written back at the end,
and around ops that may touch the graph themselves (batch norm marks its running statistics).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import GraphError
from .node import Node
from .ops.registry import RunContext

if TYPE_CHECKING:
    from .graph import Graph

# (node, thunk returning its new value, whether the op sees the graph (RunContext), mode-dependent)
Step = tuple[Node, Callable[[], Any], bool, bool]

_ndarray = np.ndarray

T = TypeVar("T")


def _quiet_decorator() -> Callable[[Callable[..., T]], Callable[..., T]]:
    """``quiet``: fn run with floating-point warnings off (``np.errstate(all="ignore")``).

    An overflow to inf or a 0/0 to nan is a value the graph reports itself (anomaly detection,
    the trainer's divergence check), not a warning. numpy >= 2 keeps its error state in a context
    variable; its errstate decorator builds that state anew on every call (0.44 us, three times
    per training step). Here it is built once and only set and reset around each call (0.14 us):
    the same context-variable protocol, so it nests, restores on exceptions and is per thread.
    Where numpy's internals differ, numpy's own decorator does the job."""
    try:
        from numpy._core._ufunc_config import _extobj_contextvar, _make_extobj  # type: ignore[attr-defined]

        state = _make_extobj(all="ignore")
        token = _extobj_contextvar.set(state)
        try:
            works = set(np.geterr().values()) == {"ignore"}  # the protocol is what this numpy reads
        finally:
            _extobj_contextvar.reset(token)
        if not works:
            raise ImportError
    except (ImportError, TypeError, AttributeError):
        return np.errstate(all="ignore")  # type: ignore[return-value]

    def decorate(fn: Callable[..., T]) -> Callable[..., T]:
        @functools.wraps(fn)
        def quiet_fn(*args: Any, **kwargs: Any) -> T:
            token = _extobj_contextvar.set(state)
            try:
                return fn(*args, **kwargs)
            finally:
                _extobj_contextvar.reset(token)

        return quiet_fn

    return decorate


quiet = _quiet_decorator()


def compile_steps(g: Graph, nodes: Sequence[Node]) -> list[Step]:
    """One step per op node, in the given (topological) order."""
    return [(n, _thunk(g, n), n.op.needs_ctx, n.op.mode_dependent) for n in nodes if n.op is not None]


def _thunk(g: Graph, n: Node) -> Callable[[], Any]:
    op = n.op
    assert op is not None
    fn: Callable[..., Any] = functools.partial(op.forward, **n.attrs) if n.attrs else op.forward
    ins = n.inputs
    if op.needs_ctx:
        fn = _with_context(g, n, fn)
    if any(n.shape_mask):
        mask = n.shape_mask
        return lambda: fn(*[p.rshape if m else p.value for p, m in zip(ins, mask)])
    if len(ins) == 1:
        (a,) = ins
        return lambda: fn(a.value)
    if len(ins) == 2:
        a, b = ins
        return lambda: fn(a.value, b.value)
    if len(ins) == 3:
        a, b, c = ins
        return lambda: fn(a.value, b.value, c.value)
    return lambda: fn(*[p.value for p in ins])


def _with_context(g: Graph, n: Node, forward: Callable[..., Any]) -> Callable[..., Any]:
    def call(*args: Any) -> Any:
        # The context carries the mode and RNG of the moment the node runs.
        return forward(RunContext(g.rng, g._train, g, n), *args)

    return call


def entry_nodes(nodes: Sequence[Node], train: bool) -> list[Node]:
    """The op nodes none of whose staleness-relevant inputs is an op node. If each of them is
    stale, every op node of ``nodes`` is: any other one reads an op node that is recomputed
    first, which gives that input a newer version than its reader's."""
    return [n for n in nodes if n.op is not None and all(p.op is None for p in (n.train_reads if train else n.inputs))]


def all_stale(entries: list[Node], train: bool) -> bool:
    """Whether forward_node's staleness rule would recompute every entry node (see entry_nodes)."""
    for n in entries:
        if n.value is None or (n.op.mode_dependent and n.mode != train):  # type: ignore[union-attr]
            continue
        ver = n.ver
        for p in n.train_reads if train else n.inputs:
            if p.ver > ver:
                break
        else:
            return False
    return True


@quiet
def run(
    g: Graph,
    steps: list[Step],
    train: bool,
    grad_on: bool,
    check: bool,
    drops: list[list[Node]] | None,
) -> None:
    """Evaluate steps (with ``check``: only the stale ones) under a new pass id; after step i,
    drop the values in ``drops[i]`` that this pass computed."""
    g._pass += 1
    pid = g._pass
    clock, nbytes, peak = g._clock, g._bytes, g._peak
    anomaly = g._anomaly
    n: Node | None = None
    try:
        for pos, (n, thunk, needs_ctx, mode_dependent) in enumerate(steps):
            if check and n.value is not None and (not mode_dependent or n.mode == train):
                ver = n.ver
                for p in n.train_reads if train else n.inputs:
                    if p.ver > ver:
                        break
                else:
                    if grad_on:
                        n.tracked = True
                    continue
            if needs_ctx:
                # The op may change the graph (batch norm marks its running statistics).
                g._clock, g._bytes, g._peak = clock, nbytes, peak
                try:
                    out = thunk()
                finally:
                    clock, nbytes, peak = g._clock, g._bytes, g._peak
            else:
                out = thunk()
            dt = n.dtype
            if type(out) is not _ndarray or (out.dtype is not dt and out.dtype != dt):
                out = np.asarray(out, dtype=dt)
            if anomaly and dt.kind == "f" and not np.isfinite(out).all():
                raise g._nonfinite(n, out)
            old = n.value
            n.value = out
            n.rshape = out.shape
            clock += 1
            n.ver = clock
            n.mode = train
            n.released_by = None
            n.pass_id = pid
            n.tracked = grad_on
            nbytes += out.nbytes if old is None else out.nbytes - old.nbytes
            if nbytes > peak:
                peak = nbytes
            if drops is not None:
                for d in drops[pos]:
                    if d.pass_id == pid and d.value is not None:
                        nbytes -= d.value.nbytes
                        d.value = None
                        d.released_by = None  # dropped by a no_grad forward, not released
    except GraphError:
        raise
    except Exception as e:
        assert n is not None
        raise _failed(n, e) from e
    finally:
        g._clock, g._bytes, g._peak = clock, nbytes, peak


def _failed(n: Node, e: Exception, shapes: Sequence[Any] | None = None) -> GraphError:
    """The error for node n's op raising e; ``shapes`` of its inputs when they are not on them."""
    shown = ", ".join(f"{p.name!r} {p.rshape if shapes is None else s}" for p, s in zip(n.inputs, shapes or n.inputs))
    return GraphError(f"{n.describe()} failed on inputs {shown}: {e}")


# ------------------------------------------------------------------ the common case

# (node, the function to call, its 1 to 3 input nodes (None where absent), how to call it, the
# node's dtype, the values to drop after it or None). How to call: with 1, 2 or 3 input values;
# _THUNK: the step's thunk, without arguments; _CONTEXT: the thunk of an op that sees the graph.
FastStep = tuple[Node, Callable[..., Any], Node | None, Node | None, Node | None, int, np.dtype, "list[Node] | None"]
_THUNK = 0
_CONTEXT = -1


def fast_steps(steps: list[Step], drops: list[list[Node]] | None) -> list[FastStep]:
    """steps prepared for run_fast: plain ops of up to three value inputs are called directly,
    without their thunk; an empty drop list becomes None."""
    out: list[FastStep] = []
    for i, (n, thunk, needs_ctx, _) in enumerate(steps):
        op = n.op
        assert op is not None
        drop = (drops[i] or None) if drops is not None else None
        ins = n.inputs
        if needs_ctx or any(n.shape_mask) or not 1 <= len(ins) <= 3:
            out.append((n, thunk, None, None, None, _CONTEXT if needs_ctx else _THUNK, n.dtype, drop))
            continue
        fn: Callable[..., Any] = functools.partial(op.forward, **n.attrs) if n.attrs else op.forward
        a, b, c = (*ins, None, None)[:3]
        out.append((n, fn, a, b, c, len(ins), n.dtype, drop))
    return out


@quiet
def run_fast(g: Graph, steps: list[FastStep], train: bool, grad_on: bool) -> None:
    """``run(g, steps, train, grad_on, False, drops)`` for a graph without anomaly detection (the
    common case): the same bookkeeping, in the same order, without the per-step branches that
    only staleness checks and anomaly detection need."""
    g._pass += 1
    pid = g._pass
    clock, nbytes, peak = g._clock, g._bytes, g._peak
    n: Node | None = None
    try:
        for n, fn, a, b, c, how, dt, drop in steps:
            if how == 2:
                out = fn(a.value, b.value)  # type: ignore[union-attr]
            elif how == 1:
                out = fn(a.value)  # type: ignore[union-attr]
            elif how == 3:
                out = fn(a.value, b.value, c.value)  # type: ignore[union-attr]
            elif how == _THUNK:
                out = fn()
            else:
                # The op may change the graph (batch norm marks its running statistics).
                g._clock, g._bytes, g._peak = clock, nbytes, peak
                try:
                    out = fn()
                finally:
                    clock, nbytes, peak = g._clock, g._bytes, g._peak
            if type(out) is not _ndarray or (out.dtype is not dt and out.dtype != dt):
                out = np.asarray(out, dtype=dt)
            old = n.value
            n.value = out
            n.rshape = out.shape
            clock += 1
            n.ver = clock
            n.mode = train
            n.released_by = None
            n.pass_id = pid
            n.tracked = grad_on
            nbytes += out.nbytes if old is None else out.nbytes - old.nbytes
            if nbytes > peak:
                peak = nbytes
            if drop is not None:
                for d in drop:
                    if d.pass_id == pid and d.value is not None:
                        nbytes -= d.value.nbytes
                        d.value = None
                        d.released_by = None  # dropped by a no_grad forward, not released
    except GraphError:
        raise
    except Exception as e:
        assert n is not None
        raise _failed(n, e) from e
    finally:
        g._clock, g._bytes, g._peak = clock, nbytes, peak


# ------------------------------------------------------------------ a backward in registers

# A backward's gradient nodes are private to its plan: no caller can read their values (the
# targets' gradients are handed over at the end), so their values need not live on the nodes.
# A RegisterProgram keeps them in a local list instead: registers 0..k-1 hold the values the
# gradient nodes read from outside the plan (loaded when the run starts), and step i appends
# register k+i. That saves each step the node bookkeeping run_fast does (version, mode, pass id).
# The memory accounting is the same: what the steps compute counts while it is held.

# (function, register of input a, of b, of c (-1 where absent), how to call it (1 to 3 values, or
# _GENERAL: ``args`` below), the node's dtype, the registers freed after it or None, general args)
RegStep = tuple[Callable[..., Any], int, int, int, int, np.dtype, "list[int] | None", "list[tuple[int, Any]] | None"]
_GENERAL = 0
# general args: (_REG, register) the value; (_REG_SHAPE, register) its shape; (_NODE_SHAPE, node) a
# shape-only input from outside the plan, read from the node when the step runs
_REG, _REG_SHAPE, _NODE_SHAPE = 0, 1, 2


class RegisterProgram:
    """A backward plan's steps as a register program (see above). Built only for plans without
    ops that see the graph (those run through run_fast)."""

    __slots__ = ("held", "loads", "nodes", "outputs", "steps")

    def __init__(self, steps: list[Step], frees: list[list[Node]], outputs: list[Node | None]) -> None:
        self.nodes = [n for n, *_ in steps]
        position = {n.index: i for i, n in enumerate(self.nodes)}
        loads: dict[int, int] = {}  # node index of a value read from outside -> its register
        load_nodes: list[Node] = []
        for n in self.nodes:
            for p, masked in zip(n.inputs, n.shape_mask or (False,) * len(n.inputs)):
                if p.index not in position and not masked and p.index not in loads:
                    loads[p.index] = len(load_nodes)
                    load_nodes.append(p)
        base = len(load_nodes)

        def reg(p: Node) -> int:
            i = position.get(p.index)
            return loads[p.index] if i is None else base + i

        prog: list[RegStep] = []
        for n, free in zip(self.nodes, frees):
            op = n.op
            assert op is not None and not op.needs_ctx
            fn: Callable[..., Any] = functools.partial(op.forward, **n.attrs) if n.attrs else op.forward
            dropped = [base + position[d.index] for d in free] or None
            ins, mask = n.inputs, n.shape_mask or (False,) * len(n.inputs)
            if any(mask) or not 1 <= len(ins) <= 3:
                args: list[tuple[int, Any]] = []
                for p, masked in zip(ins, mask):
                    if not masked:
                        args.append((_REG, reg(p)))
                    elif p.index in position:
                        args.append((_REG_SHAPE, base + position[p.index]))
                    else:
                        args.append((_NODE_SHAPE, p))
                prog.append((fn, -1, -1, -1, _GENERAL, n.dtype, dropped, args))
                continue
            a, b, c = ([reg(p) for p in ins] + [-1, -1])[:3]
            prog.append((fn, a, b, c, len(ins), n.dtype, dropped, None))
        self.steps = prog
        self.loads = load_nodes
        # Per gradient output: its register, or the node itself when no step computes it.
        self.outputs: list[int | Node | None] = [
            None if o is None else base + position[o.index] if o.index in position else o for o in outputs
        ]
        # The registers of the outputs, each once (two targets may share one gradient).
        self.held = sorted({o for o in self.outputs if type(o) is int})

    @quiet
    def run(self, g: Graph) -> list[Any]:
        """Run the steps; the outputs' values (None where there is no gradient). The graph's byte
        count is back where it was: the outputs are the caller's (as gradients, it counts them)."""
        r: list[Any] = [n.value for n in self.loads]
        base = len(r)
        start = nbytes = g._bytes
        peak = g._peak
        try:
            for fn, a, b, c, how, dt, dropped, args in self.steps:
                if how == 2:
                    out = fn(r[a], r[b])
                elif how == 1:
                    out = fn(r[a])
                elif how == 3:
                    out = fn(r[a], r[b], r[c])
                else:
                    out = fn(*[r[x] if k == _REG else r[x].shape if k == _REG_SHAPE else x.rshape for k, x in args])  # type: ignore[union-attr]
                if type(out) is not _ndarray or (out.dtype is not dt and out.dtype != dt):
                    out = np.asarray(out, dtype=dt)
                r.append(out)
                nbytes += out.nbytes
                if nbytes > peak:
                    peak = nbytes
                if dropped is not None:
                    for k in dropped:
                        nbytes -= r[k].nbytes
                        r[k] = None
        except Exception as e:
            # The registers are gone with the failed run: nothing it computed is held.
            g._bytes, g._peak = start, peak
            if isinstance(e, GraphError):
                raise
            i = len(r) - base  # each step appends one register: the failed one is the next
            raise _failed(self.nodes[i], e, [_shape_of(r, arg) for arg in self._args(i)]) from e
        for k in self.held:
            nbytes -= r[k].nbytes
        g._bytes, g._peak = nbytes, peak
        return [o if o is None else r[o] if type(o) is int else o.value for o in self.outputs]  # type: ignore[union-attr]

    def _args(self, i: int) -> list[tuple[int, Any]]:
        _, a, b, c, how, _, _, args = self.steps[i]
        return args if args is not None else [(_REG, x) for x in (a, b, c)[:how]]


def _shape_of(r: list[Any], arg: tuple[int, Any]) -> Any:
    kind, x = arg
    if kind == _NODE_SHAPE:
        return x.rshape
    v = r[x]
    return None if v is None else v.shape
