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

The clock, byte count and peak (the graph's Runtime's) live in locals during the loop; they are
written back to the runtime at the end, and around ops that may touch the graph themselves (batch
norm marks its running statistics).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from .errors import GraphError, NonFiniteError
from .node import Node
from .ops.registry import RunContext

if TYPE_CHECKING:
    from .graph import Graph
    from .runtime import Runtime

# (node, thunk returning its new value, how to call it, mode-dependent). How: _THUNK, a plain call;
# _CONTEXT, an op that sees the graph (RunContext); _SCRATCH, an op with scratch (OpDef.scratch),
# whose thunk returns (value, the bytes it held at its height beyond its inputs).
Step = tuple[Node, Callable[[], Any], int, bool]

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
    return [(n, _thunk(g, n), _how(n), n.op.mode_dependent) for n in nodes if n.op is not None]


def _how(n: Node) -> int:
    op = n.op
    assert op is not None
    return _CONTEXT if op.needs_ctx else _SCRATCH if op.scratch is not None else _THUNK


def _thunk(g: Graph, n: Node) -> Callable[[], Any]:
    op = n.op
    assert op is not None
    fn: Callable[..., Any] = functools.partial(op.forward, **n.attrs) if n.attrs else op.forward
    ins = n.inputs
    if op.needs_ctx:
        fn = _with_context(g, n, fn)
    elif op.scratch is not None:
        fn = _counting(n, fn)
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
    rt = g.runtime

    def call(*args: Any) -> Any:
        # The context carries the mode and RNG of the moment the node runs.
        return forward(RunContext(rt.rng, rt.train, g, n), *args)

    return call


def _counting(n: Node, forward: Callable[..., Any]) -> Callable[..., tuple[Any, int]]:
    """forward, returning with its result the bytes it held at its height beyond its inputs: the
    result's and its scratch's (OpDef.scratch, from the same arguments)."""
    op = n.op
    assert op is not None and op.scratch is not None
    rule = functools.partial(op.scratch, **n.attrs) if n.attrs else op.scratch
    # A rule depends on its arguments' layouts only: remembered per layout (a step sees a few).
    known: dict[tuple[Any, ...], int] = {}

    def call(*args: Any) -> tuple[Any, int]:
        out = forward(*args)
        key = tuple((a.shape, a.strides, a.dtype) if type(a) is _ndarray else a for a in args)
        scratch = known.get(key)
        if scratch is None:
            if len(known) > 16:
                known.clear()
            scratch = known[key] = rule(*args)
        return out, out.nbytes + scratch

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


# ------------------------------------------------------------------ the step bookkeeping, once

# What a step does around its op, and how a backward adds its gradients into its targets, are
# written once, as source text: the loops below (run, run_fast and Runtime.accumulate) are made
# from it when this module loads, and codegen's straight-line code from it per plan. The text is
# fixed (no node name or other user text ever enters it: see codegen.py). Each loop keeps the
# clock, byte count and peak in locals and writes them back to the Runtime (named by ``rt``) at
# the end and around ops that may touch the graph themselves.


def frame_source(
    signature: str, body: list[str], rt: str = "rt", pass_id: bool = True, setup: Sequence[str] = ()
) -> list[str]:
    """A runner ``def {signature}`` running body under a new pass id (``pid`` when ``pass_id``),
    with the clock, byte count and peak in locals (and the lines of setup run first), and an op's
    failure raised as ``failed(n, e)``."""
    return [
        f"def {signature}:",
        f"    {rt}.pass_id += 1",
        *([f"    pid = {rt}.pass_id"] if pass_id else []),
        f"    clock, nbytes, peak = {rt}.clock, {rt}.nbytes, {rt}.peak",
        *_indented(list(setup), 4),
        "    n = None",
        "    try:",
        *_indented(body or ["pass"], 8),
        "    except GraphError:",
        "        raise",
        "    except Exception as e:",
        "        raise failed(n, e) from e",
        "    finally:",
        f"        {rt}.clock, {rt}.nbytes, {rt}.peak = clock, nbytes, peak",
    ]


def call_in_context_source(call: str, rt: str = "rt") -> list[str]:
    """``out = {call}`` for an op that may change the graph itself (batch norm marks its running
    statistics): the locals are written back to the Runtime around the call."""
    return [
        f"{rt}.clock, {rt}.nbytes, {rt}.peak = clock, nbytes, peak",
        "try:",
        f"    out = {call}",
        "finally:",
        f"    clock, nbytes, peak = {rt}.clock, {rt}.nbytes, {rt}.peak",
    ]


def scratch_call_source(call: str, out: str = "out") -> list[str]:
    """``{out} = ...`` for an op with scratch: ``{call}`` returns its result and the bytes it held at
    its height beyond its inputs, which the peak counts on top of what was held before the call."""
    return [f"{out}, held = {call}", "held += nbytes", "if held > peak:", "    peak = held"]


def coerce_source(dt: str) -> list[str]:
    """The op's result ``out`` as an array of the node's dtype (``dt`` names it)."""
    return [
        f"if type(out) is not ndarray or (out.dtype is not {dt} and out.dtype != {dt}):",
        f"    out = asarray(out, dtype={dt})",
    ]


# The fields commit_source may set besides the value, version and tracking flag. The loops set
# them all; codegen leaves out those no reader can see (see codegen.forward_code).
COMMIT_FIELDS = {"mode": "n.mode = train", "released_by": "n.released_by = None", "pass_id": "n.pass_id = pid"}


def commit_source(fields: Sequence[str] = tuple(COMMIT_FIELDS)) -> list[str]:
    """``out`` becomes node ``n``'s value: a new version (a clock tick), the given fields of
    COMMIT_FIELDS, tracked when gradient tracking is on, its bytes counted and the peak kept."""
    return [
        "old = n.value",
        "n.value = out",
        "n.rshape = out.shape",
        "clock += 1",
        "n.ver = clock",
        *(COMMIT_FIELDS[f] for f in fields),
        "n.tracked = grad_on",
        "nbytes += out.nbytes if old is None else out.nbytes - old.nbytes",
        "if nbytes > peak:",
        "    peak = nbytes",
    ]


def drop_source(d: str) -> list[str]:
    """Drop the value of node ``d`` (held): dropped by a no_grad forward, not released."""
    return [f"nbytes -= {d}.value.nbytes", f"{d}.value = None", f"{d}.released_by = None"]


def _drops_of_this_pass(drops: str) -> list[str]:
    """Drop the values of the nodes in ``drops`` that this pass computed (the loops' drops)."""
    return [
        f"for d in {drops}:",
        "    if d.pass_id == pid and d.value is not None:",
        *_indented(drop_source("d"), 8),
    ]


def add_gradient_source(own: bool | str) -> list[str]:
    """Add the gradient ``gv`` into node ``x``'s (new arrays counted in ``added``, x recorded in
    ``graded``). ``own``: whether gv is an array x may take over instead of copying, when no node
    holds it any more (True, False, or the name of a variable that says)."""
    if own is True:
        take = "gv if gv.base is None else array(gv, dtype=x.dtype)"
    elif own is False:
        take = "array(gv, dtype=x.dtype)"
    else:
        take = f"gv if {own} and gv.base is None else array(gv, dtype=x.dtype)"
    return [
        "if x.grad is None:",
        f"    x.grad = {take}",
        "    added += x.grad.nbytes",
        "    graded[x.index] = x",
        "else:",
        "    x.grad += gv",
    ]


def _indented(lines: list[str], by: int) -> list[str]:
    return [" " * by + line for line in lines]


def make_function(source: str, names: dict[str, Any], filename: str) -> Callable[..., Any]:
    """The function ``run`` of source, whose free names are ``names`` (and ``ndarray``,
    ``asarray``): they become the parameters of an enclosing function, so in ``run`` they are
    closure cells, read faster than globals. The code runs with no builtins but ``type``,
    ``Exception`` and ``__import__``: the last is not for the code (it imports nothing) but for C
    functions it calls, which import through the calling frame's builtins (anomaly detection's first
    floating-point check does: without it, a plan generated before its first run failed there with
    KeyError '__import__')."""
    names = {"ndarray": np.ndarray, "asarray": np.asarray, **names}
    body = "\n".join("    " + line for line in source.splitlines())
    outer = f"def make({', '.join(names)}):\n{body}\n    return run\n"
    namespace: dict[str, Any] = {"__builtins__": {"type": type, "Exception": Exception, "__import__": __import__}}
    exec(compile(outer, filename, "exec"), namespace)
    return namespace["make"](**names)


def nonfinite(n: Node, out: np.ndarray) -> NonFiniteError:
    """The anomaly error for n's fresh value. It names the forward node (for a gradient node, the
    forward node whose derivative it computes) and an input that was already non-finite."""
    bad = "NaN" if np.isnan(out).any() else "infinity"
    culprit = next(
        (p for p in n.inputs if p.value is not None and p.dtype.kind == "f" and not np.isfinite(p.value).all()),
        None,
    )
    if culprit is not None:
        cause = f"because its input {culprit.label(n.spec_node)} already holds NaN or infinity"
    elif n.grad_of is not None:
        cause = "from finite values"
    else:
        cause = f"from finite inputs ({', '.join(p.label(n.spec_node) for p in n.inputs)})"
    if n.grad_of is not None:
        where = f"the gradient through {n.grad_of.describe()} (gradient node {n.name!r})"
        return NonFiniteError(f"{where} produced {bad} {cause}", n.grad_of.name)
    return NonFiniteError(f"{n.describe()} produced {bad} {cause}", n.name)


def _failed(n: Node, e: Exception, shapes: Sequence[Any] | None = None) -> GraphError:
    """The error for node n's op raising e; ``shapes`` of its inputs when they are not on them."""
    shown = ", ".join(
        f"{p.label(n.spec_node)} {p.rshape if shapes is None else s}" for p, s in zip(n.inputs, shapes or n.inputs)
    )
    return GraphError(f"{n.describe()} failed on inputs {shown}: {e}")


# ------------------------------------------------------------------ the common case

# (node, the function to call, its 1 to 3 input nodes (None where absent), how to call it, the
# node's dtype, the values to drop after it or None). How to call: with 1, 2 or 3 input values;
# _THUNK: the step's thunk, without arguments; _CONTEXT: the thunk of an op that sees the graph;
# _SCRATCH: the thunk of an op with scratch (see Step).
FastStep = tuple[Node, Callable[..., Any], Node | None, Node | None, Node | None, int, np.dtype, "list[Node] | None"]
_THUNK = 0
_CONTEXT = -1
_SCRATCH = -2


def fast_steps(steps: list[Step], drops: list[list[Node]] | None) -> list[FastStep]:
    """steps prepared for run_fast: plain ops of up to three value inputs are called directly,
    without their thunk; an empty drop list becomes None."""
    out: list[FastStep] = []
    for i, (n, thunk, how, _) in enumerate(steps):
        op = n.op
        assert op is not None
        drop = (drops[i] or None) if drops is not None else None
        ins = n.inputs
        if how != _THUNK or any(n.shape_mask) or not 1 <= len(ins) <= 3:
            out.append((n, thunk, None, None, None, how, n.dtype, drop))
            continue
        fn: Callable[..., Any] = functools.partial(op.forward, **n.attrs) if n.attrs else op.forward
        a, b, c = (*ins, None, None)[:3]
        out.append((n, fn, a, b, c, len(ins), n.dtype, drop))
    return out


_RUN_BODY = [
    "for pos, (n, thunk, how, mode_dependent) in enumerate(steps):",
    "    if check and n.value is not None and (not mode_dependent or n.mode == train):",
    "        ver = n.ver",
    "        for p in n.train_reads if train else n.inputs:",
    "            if p.ver > ver:",
    "                break",
    "        else:",
    "            if grad_on:",
    "                n.tracked = True",
    "            continue",
    f"    if how == {_THUNK}:",
    "        out = thunk()",
    f"    elif how == {_CONTEXT}:",
    *_indented(call_in_context_source("thunk()"), 8),
    "    else:",
    *_indented(scratch_call_source("thunk()"), 8),
    "    dt = n.dtype",
    *_indented(coerce_source("dt"), 4),
    "    if anomaly and dt.kind == 'f' and not isfinite(out).all():",
    "        raise nonfinite(n, out)",
    *_indented(commit_source(), 4),
    "    if drops is not None:",
    *_indented(_drops_of_this_pass("drops[pos]"), 8),
]

_RUN_FAST_BODY = [
    "for n, fn, a, b, c, how, dt, drop in steps:",
    "    if how == 2:",
    "        out = fn(a.value, b.value)",
    "    elif how == 1:",
    "        out = fn(a.value)",
    "    elif how == 3:",
    "        out = fn(a.value, b.value, c.value)",
    f"    elif how == {_THUNK}:",
    "        out = fn()",
    f"    elif how == {_CONTEXT}:",
    *_indented(call_in_context_source("fn()"), 8),
    "    else:",
    *_indented(scratch_call_source("fn()"), 8),
    *_indented(coerce_source("dt"), 4),
    *_indented(commit_source(), 4),
    "    if drop is not None:",
    *_indented(_drops_of_this_pass("drop"), 8),
]


def _make_loop(name: str, params: str, body: list[str], doc: str, setup: Sequence[str] = ()) -> Callable[..., None]:
    source = "\n".join(frame_source(f"run({params})", body, setup=setup))
    helpers = {"GraphError": GraphError, "failed": _failed, "nonfinite": nonfinite, "isfinite": np.isfinite}
    fn = make_function(source, {**helpers, "enumerate": enumerate}, f"<onlytorch executor: {name}>")
    fn.__name__ = fn.__qualname__ = name
    fn.__doc__ = doc
    return quiet(fn)


run: Callable[[Runtime, list[Step], bool, bool, bool, list[list[Node]] | None], None] = _make_loop(
    "run",
    "rt, steps, train, grad_on, check, drops",
    _RUN_BODY,
    """``run(rt, steps, train, grad_on, check, drops)``: evaluate steps (with ``check``: only the
    stale ones) under a new pass id; after step i, drop the values in ``drops[i]`` that this pass
    computed. Raises NonFiniteError at the first non-finite value when anomaly detection is on.""",
    setup=["anomaly = rt.anomaly"],
)

run_fast: Callable[[Runtime, list[FastStep], bool, bool], None] = _make_loop(
    "run_fast",
    "rt, steps, train, grad_on",
    _RUN_FAST_BODY,
    """``run(rt, steps, train, grad_on, False, drops)`` for a graph without anomaly detection (the
    common case): the same bookkeeping, without the per-step branches that only staleness checks
    and anomaly detection need.""",
)


def _nonfinite_gradient(y: Node, x: Node) -> NonFiniteError:
    return NonFiniteError(f"the gradient of {y.name!r} with respect to {x.describe()} is not finite", x.name)


def _make_accumulate() -> Callable[..., None]:
    source = [
        "def run(self, y, xs, ownable, grads):",
        "    anomaly, graded = self.anomaly, self.graded",
        "    added = 0",
        "    for x, gv, own in zip(xs, grads, ownable):",
        "        if gv is None:",
        "            continue",
        "        if anomaly and not isfinite(gv).all():",
        "            self.account(added)",
        "            raise nonfinite_gradient(y, x)",
        *_indented(add_gradient_source("own"), 8),
        "    self.account(added)",
    ]
    names = {"zip": zip, "isfinite": np.isfinite, "nonfinite_gradient": _nonfinite_gradient, "array": np.array}
    fn = make_function("\n".join(source), names, "<onlytorch executor: accumulate>")
    fn.__name__, fn.__qualname__ = "accumulate", "Runtime.accumulate"
    fn.__doc__ = """``accumulate(y, xs, ownable, grads)``: add the gradients of y (one per x, None where
    there is none) into the xs' gradients; ``ownable[i]``: grads[i] is an array x may take over.
    With anomaly detection on, a non-finite gradient raises NonFiniteError."""
    return fn


# Runtime.accumulate: made here, from the template codegen's backward code also fills in.
accumulate: Callable[..., None] = _make_accumulate()


# ------------------------------------------------------------------ a backward in registers

# A backward's gradient nodes are private to its plan: no caller can read their values (the
# targets' gradients are handed over at the end), so their values need not live on the nodes.
# A RegisterProgram keeps them in a local list instead: registers 0..k-1 hold the values the
# gradient nodes read from outside the plan (loaded when the run starts), and step i appends
# register k+i. That saves each step the node bookkeeping run_fast does (version, mode, pass id).
# The memory accounting is the same: what the steps compute counts while it is held.

# (function, register of input a, of b, of c (-1 where absent), how to call it (1 to 3 values, or
# _GENERAL: ``args`` below, or _SCRATCH: as _GENERAL, for an op with scratch (see Step)), the node's
# dtype, the registers freed after it or None, general args)
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
            if op.scratch is not None:
                fn = _counting(n, fn)
            dropped = [base + position[d.index] for d in free] or None
            ins, mask = n.inputs, n.shape_mask or (False,) * len(n.inputs)
            if op.scratch is not None or any(mask) or not 1 <= len(ins) <= 3:
                args: list[tuple[int, Any]] = []
                for p, masked in zip(ins, mask):
                    if not masked:
                        args.append((_REG, reg(p)))
                    elif p.index in position:
                        args.append((_REG_SHAPE, base + position[p.index]))
                    else:
                        args.append((_NODE_SHAPE, p))
                prog.append((fn, -1, -1, -1, _GENERAL if op.scratch is None else _SCRATCH, n.dtype, dropped, args))
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
    def run(self, rt: Runtime) -> list[Any]:
        """Run the steps; the outputs' values (None where there is no gradient). The graph's byte
        count is back where it was: the outputs are the caller's (as gradients, it counts them)."""
        r: list[Any] = [n.value for n in self.loads]
        base = len(r)
        start = nbytes = rt.nbytes
        peak = rt.peak
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
                    if how == _SCRATCH:
                        out, held = out
                        held += nbytes
                        if held > peak:
                            peak = held
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
            rt.nbytes, rt.peak = start, peak
            if isinstance(e, GraphError):
                raise
            i = len(r) - base  # each step appends one register: the failed one is the next
            raise _failed(self.nodes[i], e, [_shape_of(r, arg) for arg in self._args(i)]) from e
        for k in self.held:
            nbytes -= r[k].nbytes
        rt.nbytes, rt.peak = nbytes, peak
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
