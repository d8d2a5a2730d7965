"""The local executor: N worker processes on this machine (``onlytorch.sweep.worker``'s main),
each with one BLAS thread and its own ask/tell loop, so that N trials train at once on N cores
with no batch barrier between them.

The workers run in their own session: a Ctrl-C at the terminal reaches only this process, which
passes exactly one stop on to each worker (SIGINT, as the terminal would have sent it); each
finishes its current iteration, records its trial as interrupted (to be retried by the rerun)
and exits. SIGTERM is passed on the same way."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..threads import ENV_VARS
from .worker import IMPORTS_ENV, STORAGE_ENV

POLL = 0.2  # seconds between two looks at the workers
# ``python -m onlytorch.sweep.worker``, with a first SIGINT/SIGTERM handler that ends a worker still
# importing quietly (no KeyboardInterrupt traceback); the worker's own handler replaces it
BOOTSTRAP = (
    "# onlytorch sweep worker: onlytorch.sweep.worker.main\n"  # what `ps` shows first
    "import signal, sys\n"
    "def _stop(signum, frame): raise SystemExit(130)\n"
    "signal.signal(signal.SIGINT, _stop); signal.signal(signal.SIGTERM, _stop)\n"
    "sys.argv[0] = 'onlytorch.sweep.worker'\n"
    "from onlytorch.sweep.worker import main\n"
    "sys.exit(main())"
)


@dataclass
class LocalRun:
    """How the workers ended: ``interrupted`` when a stop was passed on to them; ``codes`` their exit codes."""

    interrupted: bool = False
    codes: list[int] = field(default_factory=list)


def worker_env(storage: str | None, imports: Sequence[str] = ()) -> dict[str, str]:
    env = dict(os.environ)
    # one BLAS thread per worker: N workers on N cores, none waiting on another's BLAS threads
    env.update(dict.fromkeys(ENV_VARS, "1"))
    env.pop(STORAGE_ENV, None)
    if storage is not None:
        env[STORAGE_ENV] = storage
    env[IMPORTS_ENV] = ",".join(imports)
    return env


def run_local(
    sweep_dir: str,
    workers: int,
    storage: str | None,
    stop_file: str | None = None,
    imports: Sequence[str] = (),
) -> LocalRun:
    """Start ``workers`` worker processes on ``sweep_dir`` and wait for them all. A
    KeyboardInterrupt (the command's Ctrl-C or SIGTERM) is passed on to each worker as one
    SIGINT; the workers are then waited for (they stop at an iteration boundary)."""
    env = worker_env(storage, imports)
    procs: list[subprocess.Popen[bytes]] = []
    out = LocalRun()
    try:
        for index in range(workers):
            cmd = [sys.executable, "-c", BOOTSTRAP, sweep_dir, "--index", str(index)]
            if stop_file is not None:
                cmd += ["--stop-file", stop_file]
            procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
        while any(p.poll() is None for p in procs):
            time.sleep(POLL)
    except KeyboardInterrupt:
        out.interrupted = True
        if stop_file is not None:  # for a worker still starting, which has no handler yet to note a signal
            with contextlib.suppress(OSError):
                pathlib.Path(stop_file).touch()
        _stop(procs)
        _wait(procs)
    out.codes = [p.returncode for p in procs]
    return out


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGINT)


def _wait(procs: list[subprocess.Popen[bytes]]) -> None:
    """Wait for the stopped workers; a further interrupt while waiting cannot leave them behind:
    they are killed at once then (their trials are reaped and retried by the rerun). The handler is
    this function's own: the CLI's, having raised for the first signal, ignores every later one."""

    def insist(signum: int, frame: object) -> None:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.kill()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, insist) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        for p in procs:
            p.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, signal.SIG_DFL if h is None else h)
