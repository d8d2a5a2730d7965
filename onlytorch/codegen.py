"""Straight-line code for plans: a plan's steps written out as one Python function, built once
the plan has run HOT_RUNS times through the executor's loops and then called for every run.

It does exactly what the executor's loops do (the same calls, and the same bookkeeping: both are
made from the executor's source templates, ``frame_source`` ... ``drop_source``) without what a
loop costs per step: unpacking the step, dispatching on how to call it,
indexing the registers. For a small model, where each op is a microsecond of numpy, that loop
is a fifth of the step (see benchmarks/tiny_step.py).

Why generating code is safe here: the source is made only of fixed templates (the executor's and
the ones below) and of integer positions (``n3``, ``f3``, ``r12``). Every object a step uses (node, function, dtype,
drops) is passed to the function bound to those names, never written into the source, so no
user text (node names, attributes, spec expressions) can become code. The code runs with no
builtins but the two it names. Code is generated only when a plan first runs, never while a
spec compiles (tests/spec/test_security.py holds compile() fenced during compilation).

When to build it is a rent-or-buy choice. Building costs about 0.2 ms per step (Python's
compiler), and each run of the code saves a fraction of a microsecond per step: it pays off
after about a thousand runs. A plan that runs a few times (an evaluation, a test, a one-off
gradient) should never pay for it; a training step that runs ten thousand times should. Running
the loops until the time they lost would have paid for the build, then building, costs at most
about twice the best choice made in hindsight: HOT_RUNS is that point. Plans longer than
MAX_STEPS keep the loops: the code would be slow to build, and a large plan's ops dwarf the loop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import GraphError
from .executor import (
    _CONTEXT,
    _REG,
    _REG_SHAPE,
    _SCRATCH,
    FastStep,
    RegisterProgram,
    _failed,
    add_gradient_source,
    call_in_context_source,
    coerce_source,
    commit_source,
    drop_source,
    frame_source,
    make_function,
    quiet,
    run_fast,
    scratch_call_source,
)

if TYPE_CHECKING:
    from .node import Node
    from .runtime import Runtime

HOT_RUNS = 1000
MAX_STEPS = 400

# Runners take the graph's Runtime: the run-time state is all that running a plan touches. (In the
# generated source its parameter is called ``g``.)
ForwardRunner = Callable[["Runtime", bool, bool], None]
BackwardRunner = Callable[["Runtime"], Any]  # the gradients (a list), or None once added into the targets


def tiered_forward(steps: list[FastStep], install: Callable[[ForwardRunner], None]) -> ForwardRunner:
    """A runner ``(rt, train, grad_on)`` (rt: the graph's Runtime) for steps: ``run_fast`` for the first HOT_RUNS runs;
    then it hands ``install`` the straight-line code, which the caller runs from then on."""
    return _tiered(
        lambda rt, train, grad_on: run_fast(rt, steps, train, grad_on),
        lambda: forward_code(steps),
        len(steps),
        install,
    )


# For a backward that adds into its targets: the target nodes and whether each may take its
# gradient array over (one per output of the program), and the runtime's adding function
# (Runtime.accumulate, bound to the loss and those two).
Into = tuple[Sequence["Node"], Sequence[bool], Callable[[list[Any]], None]]


def tiered_backward(
    prog: RegisterProgram, install: Callable[[BackwardRunner], None], into: Into | None = None
) -> BackwardRunner:
    """As tiered_forward, for a backward's register program (``prog.run`` while warm). With
    ``into``, the runner adds the gradients into the targets and returns None."""
    return _tiered(_loop(prog, into), lambda: backward_code(prog, into), len(prog.steps), install)


def _tiered(loop: Callable[..., Any], build: Callable[[], Any], size: int, install: Callable[[Any], None]) -> Any:
    """``loop`` for the first HOT_RUNS runs; then ``install(build())``: the caller's runner from
    then on (plans over MAX_STEPS steps keep the loop)."""
    runs = 0

    def warm(*args: Any) -> Any:
        nonlocal runs
        runs += 1
        if runs > HOT_RUNS and size <= MAX_STEPS:
            install(build())
        return loop(*args)

    return warm


def forward_code(steps: list[FastStep]) -> ForwardRunner:
    """A function ``(rt, train, grad_on)`` that does what ``run_fast(rt, steps, train, grad_on)``
    does, as straight-line code."""
    bound: dict[str, Any] = {}
    body: list[str] = []
    for i, (n, fn, a, b, c, how, dt, drop) in enumerate(steps):
        bound[f"n{i}"], bound[f"f{i}"], bound[f"t{i}"] = n, fn, dt
        args = []
        for name, p in (("a", a), ("b", b), ("c", c))[: max(how, 0)]:
            bound[f"{name}{i}"] = p
            args.append(f"{name}{i}.value")
        body.append(f"n = n{i}")
        if how == _CONTEXT:
            body += call_in_context_source(f"f{i}()", rt="g")
        elif how == _SCRATCH:
            body += scratch_call_source(f"f{i}()")
        else:
            body.append(f"out = f{i}({', '.join(args)})")
        body += coerce_source(f"t{i}")
        # Of what run_fast also writes, left out where no reader can see it: the mode, read only for
        # mode-dependent ops; released_by, read only while the value is None (every drop and
        # release sets it); pass_id, read by the drops of the general loop (which compare it with
        # their own, newer pass id) and of run_fast (here every step runs, so every drop is ours).
        body += commit_source(["mode"] if n.op is not None and n.op.mode_dependent else [])
        for j, d in enumerate(drop or ()):
            bound[f"d{i}_{j}"] = d
            body += drop_source(f"d{i}_{j}")
    source = "\n".join(frame_source("run(g, train, grad_on)", body, rt="g", pass_id=False))
    return quiet(_build(source, bound, GraphError=GraphError, failed=_failed))


def backward_code(prog: RegisterProgram, into: Into | None = None) -> BackwardRunner:
    """A function ``(rt)`` that does what ``prog.run(rt)`` does, as straight-line code: each
    register is a local variable. When an op fails, ``prog.run`` runs the backward again to
    raise its located error (ops in register programs never see the graph or its RNG, so the
    second run fails at the same step; the byte count is only written back on success). With
    ``into``, it then adds the gradients into the targets as Runtime.accumulate does and returns
    None."""
    bound: dict[str, Any] = {}
    body: list[str] = []
    for i, n in enumerate(prog.loads):
        bound[f"L{i}"] = n
        body.append(f"r{i} = L{i}.value")
    base = len(prog.loads)
    for i, (fn, a, b, c, how, dt, dropped, args) in enumerate(prog.steps):
        k = base + i
        bound[f"f{i}"], bound[f"t{i}"] = fn, dt
        if args is None:
            call = ", ".join(f"r{x}" for x in (a, b, c)[:how])
        else:
            parts = []
            for j, (kind, x) in enumerate(args):
                if kind == _REG:
                    parts.append(f"r{x}")
                elif kind == _REG_SHAPE:
                    parts.append(f"r{x}.shape")
                else:
                    bound[f"s{i}_{j}"] = x
                    parts.append(f"s{i}_{j}.rshape")
            call = ", ".join(parts)
        body += scratch_call_source(f"f{i}({call})", f"r{k}") if how == _SCRATCH else [f"r{k} = f{i}({call})"]
        body += [
            f"if type(r{k}) is not ndarray or (r{k}.dtype is not t{i} and r{k}.dtype != t{i}):",
            f"    r{k} = asarray(r{k}, dtype=t{i})",
            f"nbytes += r{k}.nbytes",
        ]
        if dropped:
            # The count only grows between drops: its peak is reached right before one, or at the end.
            body += ["if nbytes > peak:", "    peak = nbytes"]
            for d in dropped:
                body += [f"nbytes -= r{d}.nbytes", f"r{d} = None"]
    body += ["if nbytes > peak:", "    peak = nbytes"]
    body += [f"nbytes -= r{k}.nbytes" for k in prog.held]
    outputs = []
    for j, o in enumerate(prog.outputs):
        if o is None:
            outputs.append("None")
        elif type(o) is int:
            outputs.append(f"r{o}")
        else:
            bound[f"O{j}"] = o
            outputs.append(f"O{j}.value")
    result = f"[{', '.join(outputs)}]"
    if into is None:
        tail = [f"return {result}"]
    else:
        # What Runtime.accumulate does (without the anomaly check: plans run here only with
        # anomaly detection off), unrolled: the same template, with each target's ownership known.
        tail = ["graded = g.graded", "added = 0"]
        for j, (x, own, out) in enumerate(zip(into[0], into[1], outputs)):
            if out != "None":
                bound[f"X{j}"] = x
                tail += [f"x = X{j}", f"gv = {out}", *add_gradient_source(own)]
        tail += ["nbytes += added", "if nbytes > peak:", "    peak = nbytes", "g.nbytes, g.peak = nbytes, peak"]
    source = f"""def run(g):
    nbytes, peak = g.nbytes, g.peak
    try:
{_indent(body, 8)}
    except GraphError:
        raise
    except Exception:
        return again(g)
    g.nbytes, g.peak = nbytes, peak
{_indent(tail, 4)}
"""
    return quiet(_build(source, bound, GraphError=GraphError, again=_loop(prog, into), array=np.array))


def _loop(prog: RegisterProgram, into: Into | None) -> BackwardRunner:
    """The loop version of a backward runner: what runs while the plan is warm, and what the
    generated code hands a failure back to."""
    if into is None:
        return prog.run
    add = into[2]

    def run_and_add(rt: Runtime) -> None:
        add(prog.run(rt))

    return run_and_add


def _indent(lines: list[str], by: int) -> str:
    return "\n".join(" " * by + line for line in lines) if lines else " " * by + "pass"


def _build(source: str, bound: dict[str, Any], **helpers: Any) -> Callable[..., Any]:
    """The function ``run`` of source, whose free names are ``bound`` and ``helpers`` (see
    executor.make_function)."""
    return make_function(source, {**helpers, **bound}, "<onlytorch plan>")
