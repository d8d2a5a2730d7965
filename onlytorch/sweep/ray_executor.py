"""The Ray executor (``onlytorch sweep --executor ray [--address ADDR]``): the same worker loop as
the local executor (onlytorch.sweep.worker.run_worker), run as Ray tasks of one CPU each, on a
running Ray cluster or on a local Ray instance that the command starts and shuts down. The Optuna
study stays the single source of truth: every task asks and tells against the storage itself,
so Ray only decides where the loops run.

Where the files are: a task writes its trials' run directories into the sweep directory and
reads sweep.json and the sweep file there, so on a cluster every node must see the sweep
directory (and the sweep file and its spec) at the same path: a shared filesystem. A task on a
node that does not is failed with a message that names the node. The study's default storage,
the journal file SWEEP_DIR/study.log, is safe for the processes of ONE machine: with ``--address``
it is accepted only when the whole cluster runs on this machine, or when ONLYTORCH_SWEEP_SHARED_DIR=1
states that the sweep directory is on a filesystem every node mounts; otherwise the command
refuses it and asks for ``--storage`` with an RDB URL (PostgreSQL) that every node reaches.

Ctrl-C: the stop file is created (each task finishes its current iteration, records its trial as
interrupted with one retry queued, and returns), the tasks still running after a grace period
are cancelled (``ray.cancel``: the same stop, delivered as a SIGINT inside the task), and after a
second grace period killed (their trials are reaped and retried by the rerun); then the
KeyboardInterrupt goes on to the caller. Ray is imported only inside run_ray."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import pathlib
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any

SHARED_DIR_ENV = "ONLYTORCH_SWEEP_SHARED_DIR"  # "1": the sweep directory is on a filesystem every node mounts
AUTH_MODE_ENV = "RAY_AUTH_MODE"
CONNECT_TIMEOUT = 5.0  # seconds to reach the cluster's address before it is called unreachable
STOP_GRACE = 15.0  # seconds the tasks get to stop at an iteration boundary, then again after ray.cancel
POLL = 0.5  # seconds of one ray.wait while the tasks run (Ctrl-C is seen between two)
# Ray's own chatter (usage-stats prompt, "Started a local Ray instance", C++ core warnings): the
# sweep's progress lines say what matters. Set only where the user has not chosen otherwise.
QUIET_ENV = {"RAY_USAGE_STATS_ENABLED": "0"}
FIX_CLUSTER = (
    "start the cluster with `ray start --head` on its head node and pass the address it prints "
    "(--address HOST:6379), or leave --address out to run on a local Ray instance"
)


class RayExecutorError(Exception):
    """The Ray executor cannot run; ``exit_code`` is the command's: 1 (a cluster that cannot be
    reached or used), 2 (a usage mistake: a malformed address, a journal storage on a cluster)."""

    exit_code = 1


class RayUsageError(RayExecutorError):
    exit_code = 2


class RayWorkersFailed(RayExecutorError):
    """Tasks that could not run their loop (an unusable storage, a node that cannot see the sweep
    directory, a crashed worker); raised after every task has ended, one line per task."""


def parse_address(address: str) -> tuple[str, int] | None:
    """(host, port) to probe for ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` (Ray finds
    the cluster started on this machine itself). RayUsageError for anything else."""
    text = address.strip()
    if text == "auto":
        return None
    rest = text.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    host = host.strip("[]")  # [::1]:6379
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise RayUsageError(
            f"--address {address!r} is not a Ray cluster address: give HOST:PORT (the GCS address "
            "`ray start --head` prints, e.g. 10.0.0.5:6379), ray://HOST:10001 (Ray Client) or auto "
            "(the cluster started on this machine)"
        )
    return host, int(port)


def probe(address: str) -> None:
    """Fail fast on an address nothing listens at: ray.init itself retries for minutes."""
    where = parse_address(address)
    if where is None:
        return
    try:
        with socket.create_connection(where, timeout=CONNECT_TIMEOUT):
            pass
    except OSError as e:
        why = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e) or type(e).__name__)
        raise RayExecutorError(f"cannot reach the Ray cluster at {address} ({why}); {FIX_CLUSTER}") from None


def journal_allowed(node_hosts: Sequence[str], here: str, shared: bool) -> bool:
    """Whether the tasks may share the journal file: every node is this machine, or the user says
    the sweep directory is on a shared filesystem."""
    return shared or all(h == here or _loopback(h) for h in node_hosts)


def _connect_fix(address: str) -> str:
    """What to try when something listens at the address but Ray cannot connect to it."""
    if address != "auto" and os.environ.get(AUTH_MODE_ENV, "").lower() != "token":
        # Ray enables token authentication on the clusters it starts, but sends a token to an
        # explicit address only when told to: the usual reason a good address is refused
        return (
            f"if the cluster uses token authentication (Ray's default), set {AUTH_MODE_ENV}=token and give its "
            "token (RAY_AUTH_TOKEN, or the file ~/.ray/auth_token copied from the head node); otherwise check "
            "that the address is the one `ray start --head` printed and that this Ray is the cluster's version"
        )
    return FIX_CLUSTER


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def refuse_journal(address: str) -> RayUsageError:
    return RayUsageError(
        f"the Ray cluster at {address} has nodes on other machines, which cannot share the journal "
        "file SWEEP_DIR/study.log (it is safe for the processes of one machine): give --storage with "
        "an RDB URL every node reaches (--storage postgresql://USER:PASSWORD@HOST/DB); if the sweep "
        f"directory is on a filesystem every node mounts at the same path, set {SHARED_DIR_ENV}=1 to "
        "keep the journal there"
    )


def forwarded_env() -> dict[str, str]:
    """The command's settings a task needs wherever it runs (a node of a cluster does not inherit
    the command's environment): the MLflow parent run of the trials, the heartbeat and grace."""
    from ..tracking.mlflow_sweep import URI_ENV
    from ..tracking.mlflow_tracker import PARENT_ENV
    from .faults import GRACE_ENV, INTERVAL_ENV

    return {k: os.environ[k] for k in (URI_ENV, PARENT_ENV, INTERVAL_ENV, GRACE_ENV) if os.environ.get(k)}


def run_task(
    sweep_dir: str,
    index: int,
    storage: str | None,
    stop_file: str | None,
    imports: Sequence[str] = (),
    cwd: str = "",
    env: dict[str, str] | None = None,
) -> int:
    """The body of one Ray task (it runs on whichever node Ray picks): worker ``index``'s loop,
    with the command's ``env`` (forwarded_env) set first."""
    import importlib
    import sys

    from .worker import WorkerError, run_worker

    os.environ.update(env or {})

    if not (pathlib.Path(sweep_dir) / "sweep.json").is_file():
        raise WorkerError(
            f"node {socket.gethostname()} cannot see the sweep directory {sweep_dir}: on a cluster, put "
            "the sweep directory, the sweep file and its spec on a filesystem every node mounts at the same path"
        )
    if imports and cwd and os.path.isdir(cwd) and cwd not in sys.path:
        sys.path.insert(0, cwd)  # the user's --import modules, found as the command found them
    for name in imports:
        importlib.import_module(name)
    return run_worker(sweep_dir, index, storage, stop_file)


def run_ray(
    sweep_dir: str,
    workers: int,
    storage: str | None,
    address: str | None,
    stop_file: str | None,
    imports: Sequence[str] = (),
) -> int:
    """Run ``workers`` worker loops on ``sweep_dir`` as Ray tasks (num_cpus=1 each) and wait for
    them; returns how many trials they finished. ``address``: a running cluster (HOST:PORT,
    ray://HOST:PORT or auto); None starts a local Ray instance with ``workers`` CPUs for the
    duration of the call. RayExecutorError (exit_code 1 or 2) when it cannot run, RayWorkersFailed
    when tasks could not run their loop; a KeyboardInterrupt is passed on after the tasks stopped."""
    if address is not None:
        probe(address)
    with _quiet_env(), _ray_session(address, workers) as ray:
        if address is not None and storage is None:
            hosts = [str(n.get("NodeManagerAddress", "")) for n in ray.nodes() if n.get("Alive")]
            here = ray.util.get_node_ip_address()
            if not journal_allowed(hosts, here, os.environ.get(SHARED_DIR_ENV) == "1"):
                raise refuse_journal(address)
        task = ray.remote(num_cpus=1)(run_task)
        env = forwarded_env()
        refs = [task.remote(sweep_dir, i, storage, stop_file, tuple(imports), os.getcwd(), env) for i in range(workers)]
        return _collect(ray, refs, stop_file)


@contextlib.contextmanager
def _quiet_env() -> Iterator[None]:
    added = [k for k in QUIET_ENV if k not in os.environ]
    os.environ.update({k: QUIET_ENV[k] for k in added})
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


@contextlib.contextmanager
def _ray_session(address: str | None, workers: int) -> Iterator[Any]:
    """Ray, connected to the cluster at ``address`` or to a local instance started here (and shut
    down, its temporary files removed, on the way out)."""
    import logging

    import ray

    if ray.is_initialized():  # a caller's own session (a notebook) would silently take our tasks elsewhere
        raise RayExecutorError("Ray is already initialised in this process: call ray.shutdown() first")
    temp = None
    options: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False, "configure_logging": True}
    try:
        if address is not None:
            try:
                ray.init(address=address, **options)
            except Exception as e:  # ConnectionError, RuntimeError (version or auth mismatch), ...
                lines = str(e).strip().splitlines()
                raise RayExecutorError(
                    f"cannot connect to the Ray cluster at {address}: {lines[0] if lines else type(e).__name__}; "
                    f"{_connect_fix(address)}"
                ) from None
        else:
            # Ray's sockets live under its temp dir and a socket path is limited to ~107 bytes
            base = tempfile.gettempdir()
            temp = tempfile.mkdtemp(prefix="otray-", dir=base if len(base) <= 40 else "/tmp")
            try:
                ray.init(num_cpus=workers, include_dashboard=False, _temp_dir=temp, **options)
            except Exception as e:  # a port in use, too little shared memory, a process that would not start
                lines = str(e).strip().splitlines()
                raise RayExecutorError(
                    f"cannot start a local Ray instance: {lines[0] if lines else type(e).__name__}; "
                    "try --executor local (the same sweep on worker processes)"
                ) from None
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()  # stops the local instance; only disconnects from a cluster
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)


def _collect(ray: Any, refs: list[Any], stop_file: str | None) -> int:
    """Wait for the tasks; how many trials they finished. Failures are gathered, not raised at
    the first, so that the other tasks' trials are not abandoned mid-run."""
    index = {ref: i for i, ref in enumerate(refs)}
    pending, finished, errors = list(refs), 0, []
    try:
        while pending:
            done, pending = ray.wait(pending, num_returns=len(pending), timeout=POLL)
            for ref in done:
                try:
                    finished += int(ray.get(ref))
                except Exception as e:
                    errors.append(f"worker {index[ref]}: {_cause(ray, e)}")
    except KeyboardInterrupt:
        _stop(ray, pending, stop_file)
        raise
    if errors:
        raise RayWorkersFailed("; ".join(errors))
    return finished


def _cause(ray: Any, e: BaseException) -> str:
    """The task's own exception (a WorkerError, a StorageError) rather than Ray's wrapping of it."""
    cause = getattr(e, "cause", None) if isinstance(e, ray.exceptions.RayTaskError) else None
    text = str(cause if cause is not None else e).strip().splitlines()
    return text[0] if text else type(e).__name__


def _stop(ray: Any, pending: list[Any], stop_file: str | None) -> None:
    """Stop the running tasks: the stop file (each records its trial as interrupted and returns),
    then ray.cancel, then a kill. A second Ctrl-C skips to the kill."""
    try:
        if stop_file is not None:
            with contextlib.suppress(OSError):
                pathlib.Path(stop_file).touch()
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=STOP_GRACE)
        for ref in pending:
            ray.cancel(ref)
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=STOP_GRACE)
    except KeyboardInterrupt:
        pass
    for ref in pending:
        with contextlib.suppress(Exception):
            ray.cancel(ref, force=True)
