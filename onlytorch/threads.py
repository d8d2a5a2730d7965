"""How many threads the BLAS (numpy's matrix products) uses: decided per plan, by the engine.

numpy's OpenBLAS starts one thread per core and splits every product above a size of its own
across them. For the products of small and medium models the threads mostly synchronise, and as
soon as another process wants a core they wait for it: measured on a 2-core machine, a GAN of
``specs/gan_ring.yaml`` ran 2.5x to 4.5x slower with the default two threads than with one when
one other busy process ran beside it, and no faster when the machine was idle. Large products
(a 1024-wide layer on a batch of 512) do run faster on all cores.

The policy (``auto``): a plan (a forward or a backward, see plan.py) runs on one thread unless
its largest matrix product has at least BIG_FLOPS floating-point operations (2·m·k·n), then on
all the threads the BLAS started with. It is decided once, when the plan is built, from the
shapes of its products (the batch dimension taken from the plan's inputs at that moment), never
from the load of the machine: the same model gets the same thread counts, so the same bits.
The count is set only when a plan wants another count than the one set last (about 3 us);
otherwise a plan run pays one comparison.

Where the thread count changes bits (OpenBLAS 0.3.31, Haswell kernels, 2 threads against 1,
measured with threadpoolctl over random float32 shapes): a matrix-matrix product with
m·k·n <= 2**19 (about 1 MFLOP) runs on one thread whatever the setting, so its bits never
change; above that most shapes differ in the last bits. A matrix-vector product (numpy calls
gemv where one side has a single row or column) differed from about 460,000 multiply-adds
(e.g. 2165x214) up. So a plan the policy runs on one thread gives exactly the bits of
``OPENBLAS_NUM_THREADS=1``; a plan it runs on all cores gives the bits of numpy's default.

The user decides instead when they say so: with OPENBLAS_NUM_THREADS, OMP_NUM_THREADS,
MKL_NUM_THREADS (or GOTO_/BLIS_NUM_THREADS) set in the environment the engine never changes the
thread count; ``set_num_threads(n)`` (the CLI's ``--threads N``) makes every plan use n threads,
also over those variables; ``set_num_threads(None)`` returns to the policy.

threadpoolctl is imported, and the process's libraries scanned (about 13 ms), on the first
plan run that needs to set a count, never on import."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator
from typing import Any

# A plan whose largest matrix product has at least this many FLOPs (2·m·k·n) runs on all cores.
# Measured on the 2-core machine this was built on, quiet (python -m benchmarks.threads --products:
# one float32 product, two threads' time over one thread's, idle / beside one busy process):
#   256x128x128 (8 MFLOP) 0.82x / 13.1x; 256x256x256 (34 MFLOP) 0.58x / 16.8x; 512x512x512
#   (268 MFLOP) 1.13x / 2.75x; 256x1024x1024 (537 MFLOP) 0.65x / 2.56x; 512x1024x1024 (1.07 GFLOP)
#   0.51x / 1.73x; 1024x1024x1024 (2.1 GFLOP) 0.68x / 0.95x.
# On a quiet machine a second thread saves 20-50% from a few MFLOP up; beside one other process it
# costs 2.5x-17x up to half a GFLOP and breaks even near 2 GFLOP. The load is not known when a plan
# is built and must not decide (it would change the bits of a run), so the threshold takes the
# slowdown under load as the loss to avoid: every example spec (8 MFLOP at most) runs on one thread,
# the 1024-wide MLP on a batch of 512 (1.07 GFLOP products: 1.65x faster idle, equal under load)
# on all cores.
BIG_FLOPS = 500_000_000

# The environment variables through which a user sets the BLAS's thread count themselves.
ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "GOTO_NUM_THREADS", "BLIS_NUM_THREADS")

# The ops that are matrix products, and where their inner (summed) dimension is: the operand and
# its axis. Every other op is elementwise or a reduction numpy computes without the BLAS.
_INNER = {"matmul": (0, -1), "matmul_nt": (0, -1), "matmul_tn": (0, -2), "linear": (1, 0)}


class _State:
    """What the plans read on every run (attributes of one object: one lookup each)."""

    __slots__ = ("big", "controller", "current", "forced", "small")

    def __init__(self) -> None:
        # Thread counts wanted by small and by big plans; 0: leave the BLAS alone.
        self.small = 0
        self.big = 0
        # The count the engine set last (0: none, or it no longer manages the count).
        self.current = 0
        self.forced: int | None = None
        self.controller: Any = None  # threadpoolctl's controller of the BLAS libraries, once loaded


state = _State()
_started_with = [0]  # the BLAS's own count when it was first seen: all cores, or what the environment says


def user_set_env() -> str | None:
    """The first thread variable set in the environment, or None."""
    return next((v for v in ENV_VARS if os.environ.get(v, "").strip()), None)


def _configure() -> None:
    """The counts small and big plans want, from the forced setting, the environment and the cores."""
    if state.forced is not None:
        state.small = state.big = state.forced
    elif user_set_env() is not None or (os.cpu_count() or 1) <= 1:
        state.small = state.big = 0
    else:
        state.small = 1
        # All cores: the count the BLAS started with (known once the controller is loaded).
        state.big = _started_with[0] or -1


def _load() -> Any:
    """threadpoolctl's controller of the BLAS libraries (loaded once); None without any."""
    if state.controller is None:
        from threadpoolctl import ThreadpoolController

        blas = ThreadpoolController().select(user_api="blas")
        state.controller = blas if blas.lib_controllers else False
        if blas.lib_controllers:
            _started_with[0] = max(lib.num_threads for lib in blas.lib_controllers)
    return state.controller or None


def apply(want: int) -> None:
    """Set the BLAS's thread count to ``want`` (-1: all cores; 0: leave it). Plans call this when
    ``want`` differs from ``state.current``."""
    if want == 0:
        return
    controller = _load()
    if controller is None:
        state.small = state.big = state.current = 0
        return
    if want < 0:
        want = state.big = _started_with[0]
    if state.current != want:
        for lib in controller.lib_controllers:
            lib.set_num_threads(want)
        state.current = want


def set_num_threads(n: int | None) -> None:
    """Every plan uses n BLAS threads from now on (over the thread variables of the environment);
    None: the automatic policy again (one thread for small plans, all cores for big ones, nothing
    changed where a thread variable is set)."""
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"set_num_threads: the thread count must be an integer >= 1 or None, got {n!r}")
    state.forced = n
    _configure()
    if n is not None:
        apply(n)
    elif state.small == 0 and state.current:
        # The environment decides again: put back the count the BLAS started with, and stop managing it.
        for lib in state.controller.lib_controllers:
            lib.set_num_threads(_started_with[0])
        state.current = 0


def get_num_threads() -> int | None:
    """The number of threads the BLAS uses now (None where no BLAS library is found)."""
    controller = _load()
    if controller is None:
        return None
    return max(lib.get_num_threads() for lib in controller.lib_controllers)


def forced() -> int | None:
    """The count set with set_num_threads, or None under the automatic policy."""
    return state.forced


@contextlib.contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """``set_num_threads(n)`` inside the block, the previous setting after it (None: no change)."""
    if n is None:
        yield
        return
    before = state.forced
    set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(before)


# ------------------------------------------------------------------ the decision per plan


def product_flops(nodes: Iterable[Any], batch: int) -> int:
    """The FLOPs (2·m·k·n) of the largest matrix product among nodes, their unknown (batch)
    dimensions counted as ``batch``."""
    best = 0
    for n in nodes:
        op = n.op
        where = _INNER.get(op.name) if op is not None else None
        if where is None:
            continue
        operand, axis = where
        src = n.inputs[operand].shape
        if len(src) < -axis if axis < 0 else len(src) <= axis:
            continue
        k = src[axis]
        size = 2 * (batch if k is None else k)
        for d in n.shape:
            size *= batch if d is None else d
        best = max(best, size)
    return best


def plan_batch(leaves: Iterable[Any]) -> int:
    """The batch size of a plan now: the largest size its inputs' values have where their shape
    says None (1 when none has a value)."""
    batch = 1
    for n in leaves:
        v = n.value
        if v is None or v.ndim != len(n.shape):
            continue
        for d, r in zip(n.shape, v.shape):
            if d is None and r > batch:
                batch = r
    return batch


def is_big(nodes: Iterable[Any], batch: int) -> bool:
    """Whether a plan of these nodes runs on all cores under the automatic policy."""
    return product_flops(nodes, batch) >= BIG_FLOPS


_configure()
