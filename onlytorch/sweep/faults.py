"""What keeps a sweep's study right when its processes die or are stopped: the sweep directory's
lock (ask and reap happen under it), the record of which process runs a trial, the heartbeat that
process refreshes while the trial runs, the reaper that fails a trial whose process is gone, the
stop flag that Ctrl-C and SIGTERM raise, and the one retry each failed-by-fault trial gets (up to
MAX_LOST lost workers in a row for one configuration). ``study_lock`` is an ask lock held in an RDB
study itself, for processes that do not share a sweep directory.

Optuna's JournalStorage has no heartbeat of its own, and RDBStorage's only fails trials from inside
``study.optimize``; a sweep asks and tells by hand in several processes, so both storages get the
same one here, kept in the trial's user attributes: ``worker`` ({host, pid, started}) and
``heartbeat`` (unix time). A RUNNING trial is stale when its worker is on this host and no longer
alive (the pid is gone, is a zombie, or names a process started at another time), or when its
heartbeat is older than the grace period (any host; this needs clocks that roughly agree).

Who wins a race: failing a trial is one state change that the storage makes atomic (RDB: a
conditional UPDATE from RUNNING to FAIL; journal: the first FAIL in the log wins and the others
raise on replay for their writer), so of two reapers exactly one succeeds, and only that one
enqueues the retry.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import signal
import socket
import threading
import time
from collections.abc import Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna
    from optuna.trial import FrozenTrial

LOCK_NAME = ".lock"
HEARTBEAT_INTERVAL = 5.0  # seconds between two refreshes of a running trial's heartbeat
GRACE = 60.0  # seconds without a heartbeat after which a running trial is failed, whatever its host
# the two above, for every worker of a sweep (workers are separate processes: the environment
# reaches them all); the grace should stay well above the interval, since a busy machine beats late
INTERVAL_ENV, GRACE_ENV = "ONLYTORCH_SWEEP_HEARTBEAT", "ONLYTORCH_SWEEP_GRACE"
GRACE_BEATS = 3
# a configuration whose worker is lost this many times in a row (out of memory, a crash in native
# code) is not retried again: its last trial counts as failed, toward max_failures, so that such a
# trial cannot make the sweep run forever
MAX_LOST = 3
# /proc's start times are computed from the boot time, which the kernel may report a second off
# between two reads; a pid reused within this many seconds of the first process's start is not seen
START_TOLERANCE = 2.0
# study_lock: the study attribute that holds it, how long a holder may keep it before another process
# takes it for dead (an ask takes well under a second), and how often a waiter looks again
LEASE_KEY, LEASE_TTL, LEASE_POLL = "onlytorch:ask_lock", 30.0, 0.05

_log = logging.getLogger(__name__)

# dir_lock is re-entrant in one thread (a reap inside an ask both take it); other threads of the
# same process wait like other processes, because each holder opens its own file description
_held: dict[tuple[str, int], list[int]] = {}
_held_guard = threading.Lock()


@contextlib.contextmanager
def dir_lock(sweep_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive ``flock`` on SWEEP_DIR/.lock for the block (waits for other holders). The
    OS drops it when its process ends, however it ends."""
    path = pathlib.Path(sweep_dir) / LOCK_NAME
    key = (os.path.realpath(path), threading.get_ident())
    with _held_guard:
        held = _held.get(key)
        if held is not None:
            held[1] += 1
    if held is not None:
        try:
            yield
        finally:
            with _held_guard:
                held[1] -= 1
        return
    # O_NOFOLLOW: a .lock planted as a symbolic link must not make us create a file elsewhere
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with _held_guard:
            _held[key] = [fd, 0]
        try:
            yield
        finally:
            with _held_guard:
                del _held[key]
    finally:
        os.close(fd)  # drops the lock


def _seconds(name: str, default: float) -> float:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (0 < value < float("inf")):
        _warn_once(f"${name}={text!r} is not a positive number of seconds; using {default}")
        return default
    return value


def heartbeat_interval() -> float:
    """Seconds between two heartbeats: $ONLYTORCH_SWEEP_HEARTBEAT, default HEARTBEAT_INTERVAL."""
    return _seconds(INTERVAL_ENV, HEARTBEAT_INTERVAL)


def grace_period() -> float:
    """Seconds of silence after which a running trial is failed: $ONLYTORCH_SWEEP_GRACE, default
    GRACE, and never less than GRACE_BEATS heartbeat intervals (a shorter grace fails live trials
    between two beats: every trial would be failed and retried, endlessly)."""
    grace, floor = _seconds(GRACE_ENV, GRACE), GRACE_BEATS * heartbeat_interval()
    if grace < floor:
        _warn_once(f"${GRACE_ENV}={grace} is under {GRACE_BEATS} heartbeat intervals; using {floor} s")
        return floor
    return grace


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    """A setting's warning, once per process (the values are read at every reap)."""
    if message not in _warned:
        _warned.add(message)
        _log.warning("%s", message)


@contextlib.contextmanager
def study_lock(study: optuna.Study, ttl: float = LEASE_TTL) -> Iterator[None]:
    """Hold the study's ask lock for the block, for processes that share an RDB study without
    sharing a sweep directory (several machines, or several --out on one): a lease in a study
    system attribute, taken and given back by conditional UPDATEs, so that counting the trials and
    asking one is one step for all of them and no more than the requested trials run. A holder that
    dies leaves it to the next one after ``ttl`` seconds. A journal study lives in its sweep
    directory, whose dir_lock already serialises every process on it: nothing to do there."""
    backend = _rdb(study._storage)
    key = (id(backend), study._study_id, threading.get_ident())
    if backend is None or key in _leases:
        yield
        return
    token = _lease_acquire(backend, study._study_id, ttl)
    _leases.add(key)
    try:
        yield
    finally:
        _leases.discard(key)
        _lease_release(backend, study._study_id, token)


_leases: set[tuple[int, int, int]] = set()  # (backend, study, thread) holding a study_lock: re-entrant


def _lease_table() -> Any:
    from optuna.storages._rdb import models

    return models.StudySystemAttributeModel.__table__


def _lease_acquire(backend: Any, study_id: int, ttl: float) -> str:
    import json
    import uuid

    import sqlalchemy

    table = _lease_table()
    where = (table.c.study_id == study_id, table.c.key == LEASE_KEY)
    token = uuid.uuid4().hex
    while True:
        with _sql(backend) as connection:
            held = connection.execute(sqlalchemy.select(table.c.value_json).where(*where)).first()
        if held is None:
            with contextlib.suppress(sqlalchemy.exc.IntegrityError), _sql(backend, integrity=True) as connection:
                connection.execute(sqlalchemy.insert(table).values(study_id=study_id, key=LEASE_KEY, value_json="null"))
            continue
        text = held[0]
        try:
            lease = json.loads(text) if text is not None else None
        except ValueError:
            lease = None
        if (
            not isinstance(lease, dict)
            or not isinstance(lease.get("until"), (int, float))
            or lease["until"] < time.time()
        ):
            mine = json.dumps({"owner": token, "until": time.time() + ttl, **worker_record()})
            claim = sqlalchemy.update(table).where(*where, table.c.value_json == text).values(value_json=mine)
            with _sql(backend) as connection:
                if connection.execute(claim).rowcount == 1:
                    return mine
        time.sleep(LEASE_POLL)


def _lease_release(backend: Any, study_id: int, mine: str) -> None:
    import sqlalchemy

    table = _lease_table()
    free = (
        sqlalchemy.update(table)
        .where(table.c.study_id == study_id, table.c.key == LEASE_KEY, table.c.value_json == mine)
        .values(value_json="null")
    )
    with _sql(backend) as connection:
        connection.execute(free)  # no row changed: it expired and another holder has it now


@contextlib.contextmanager
def _sql(backend: Any, integrity: bool = False) -> Iterator[Any]:
    """A transaction on the RDB's engine; its errors as Optuna's StorageInternalError (an
    IntegrityError passes through when ``integrity``: the caller expects it)."""
    import sqlalchemy
    from optuna.exceptions import StorageInternalError

    try:
        with backend.engine.begin() as connection:
            yield connection
    except sqlalchemy.exc.IntegrityError:
        if integrity:
            raise
        raise StorageInternalError("the study's storage refused a write") from None
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageInternalError(f"the study's storage failed: {e}") from e


def _process_start(pid: int) -> float | None:
    """The unix time process ``pid`` started, from /proc (None where there is no /proc or no such
    process)."""
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        lines = pathlib.Path("/proc/stat").read_text().splitlines()
        boot = next(float(line.split()[1]) for line in lines if line.startswith("btime "))
        # the command name (field 2) may hold spaces and parentheses: the fields after it follow the last ")"
        ticks = float(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, StopIteration, IndexError):
        return None
    return round(boot + ticks / os.sysconf("SC_CLK_TCK"), 2)


def _is_zombie(pid: int) -> bool:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[:1] == ["Z"]


# measured once: a process's start does not change, and the heartbeat thread records it often
_own_start: float | None = None


def worker_record() -> dict[str, Any]:
    """``{host, pid, started}`` of this process; ``started`` (its start time, unix seconds) tells a
    reused pid from the process that held it. Where /proc is missing it is the time this module
    first recorded the process, which only this process can check."""
    global _own_start
    if _own_start is None:
        _own_start = _process_start(os.getpid()) or round(time.time(), 2)
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _own_start}


def worker_alive(worker: dict[str, Any]) -> bool | None:
    """Whether the process a ``worker`` record names still runs: None when it is on another host
    (only its heartbeat can tell), False when its pid is gone, is a zombie (a killed child its
    parent has not waited for yet) or now names a process started at another time."""
    if worker.get("host") != socket.gethostname():
        return None
    pid = worker.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # a process of another user holds the pid: it exists; the start time below decides
    if _is_zombie(pid):
        return False
    started, now_started = worker.get("started"), _process_start(pid)
    if isinstance(started, (int, float)) and now_started is not None:
        return abs(now_started - started) <= START_TOLERANCE
    return True


def _storage_errors() -> tuple[type[BaseException], ...]:
    from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError

    return (UpdateFinishedTrialError, StorageInternalError)


class Heartbeat:
    """While the block runs, the trial's ``heartbeat`` user attribute is refreshed every ``interval``
    seconds by a daemon thread; ``worker`` (worker_record()) and a first heartbeat are set on entry.

    ``lost`` becomes True when the storage refuses a refresh because the trial is already finished:
    another process reaped it (this process was taken for dead); its result can no longer be told.
    A refresh that fails for another storage reason (a busy SQLite file) is retried next interval.
    """

    def __init__(self, study: optuna.Study, trial: optuna.Trial | FrozenTrial, interval: float | None = None) -> None:
        self.study, self.trial_id = study, trial._trial_id
        self.interval = heartbeat_interval() if interval is None else interval
        self.lost = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        """Refresh the heartbeat now."""
        self.study._storage.set_trial_user_attr(self.trial_id, "heartbeat", time.time())

    def __enter__(self) -> Heartbeat:
        storage = self.study._storage
        storage.set_trial_user_attr(self.trial_id, "worker", worker_record())
        self.beat()
        self._thread = threading.Thread(target=self._run, name=f"onlytorch-heartbeat-{self.trial_id}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        from optuna.exceptions import UpdateFinishedTrialError

        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except UpdateFinishedTrialError:
                self.lost = True
                return
            except Exception as e:  # a missed beat must not kill the trial; the next one may pass
                _log.warning("heartbeat of trial id %s not recorded: %s", self.trial_id, e)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def _last_sign_of_life(trial: FrozenTrial) -> float | None:
    beat = trial.user_attrs.get("heartbeat")
    if isinstance(beat, (int, float)):
        return float(beat)
    # asked but not yet entered its Heartbeat (or from a process that never does): its start counts
    return trial.datetime_start.timestamp() if trial.datetime_start is not None else None


def stale_reason(trial: FrozenTrial, grace: float | None = None, now: float | None = None) -> str | None:
    """Why a RUNNING trial is to be failed ("worker died (pid P on HOST)", "no heartbeat for S s"),
    or None while it is alive. ``grace`` defaults to grace_period()."""
    grace = grace_period() if grace is None else grace
    worker = trial.user_attrs.get("worker")
    if isinstance(worker, dict) and worker_alive(worker) is False:
        return f"worker died (pid {worker.get('pid')} on {worker.get('host')})"
    last = _last_sign_of_life(trial)
    age = (time.time() if now is None else now) - last if last is not None else None
    if age is not None and age > grace:
        return f"no heartbeat for {age:.0f} s"
    return None


def _frozen(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> FrozenTrial:
    from optuna.trial import FrozenTrial

    return trial if isinstance(trial, FrozenTrial) else study._storage.get_trial(trial._trial_id)


def fail_trial(study: optuna.Study, trial: optuna.Trial | FrozenTrial, error: str, *, lost: bool = False) -> bool:
    """Fail a RUNNING trial with user attribute ``error`` (e.g. "interrupted") and enqueue its one
    retry (``retried: true`` marks a trial that gets one). False (and nothing enqueued) when
    another process finished or failed it first. ``lost``: the reaper's case (its worker is gone):
    no retry once MAX_LOST trials in a row of this retry chain were lost. The attributes go first:
    a finished trial takes none."""
    from optuna.trial import TrialState

    storage = study._storage
    retrying = not lost or lost_in_a_row(study, trial) < MAX_LOST
    try:
        storage.set_trial_user_attr(trial._trial_id, "error", error)
        if retrying:
            storage.set_trial_user_attr(trial._trial_id, "retried", True)
        backend = _rdb(storage)
        if backend is not None:
            if not _fail_if_running(backend, trial._trial_id):
                return False
        else:
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except _storage_errors():
        return False  # lost the race (or the storage was busy: the next reap looks again)
    if retrying:
        retry(study, study._storage.get_trial(trial._trial_id))
    return True


def lost_in_a_row(study: optuna.Study, trial: optuna.Trial | FrozenTrial) -> int:
    """How many trials of ``trial``'s retry chain, counting itself, lost their worker in a row (its
    ancestors failed as "worker died" or "no heartbeat"; an interruption ends the run of losses)."""
    by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
    n, seen = 1, {trial.number}
    parent = by_number.get(_frozen(study, trial).user_attrs.get("retry_of", -1))
    while parent is not None and parent.number not in seen and _was_lost(parent):
        n += 1
        seen.add(parent.number)
        parent = by_number.get(parent.user_attrs.get("retry_of", -1))
    return n


def _was_lost(trial: FrozenTrial) -> bool:
    error = trial.user_attrs.get("error")
    return isinstance(error, str) and error.startswith(("worker died", "no heartbeat"))


def _rdb(storage: Any) -> Any:
    """The RDBStorage behind a study's storage (Optuna wraps it in a cache), or None."""
    from optuna.storages import RDBStorage

    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


def _fail_if_running(backend: Any, trial_id: int) -> bool:
    """RUNNING -> FAIL as one conditional UPDATE; True when this call made the change. RDBStorage's
    own read-check-write is not atomic on SQLite (no SELECT FOR UPDATE there): two processes could
    both fail a trial and both enqueue a retry."""
    import datetime

    import sqlalchemy
    from optuna.storages._rdb import models
    from optuna.trial import TrialState

    table = models.TrialModel.__table__
    # the column holds naive UTC since Optuna 5 (the model then names its attribute *_utc), local time before
    utc = hasattr(models.TrialModel, "_datetime_complete_utc")
    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) if utc else datetime.datetime.now()
    claim = (
        sqlalchemy.update(table)
        .where(table.c.trial_id == trial_id, table.c.state == TrialState.RUNNING)
        .values(state=TrialState.FAIL, datetime_complete=now)
    )
    with _sql(backend) as connection:
        return bool(connection.execute(claim).rowcount == 1)


def reap_stale(study: optuna.Study, grace: float | None = None) -> list[int]:
    """Fail every RUNNING trial whose worker is dead or silent (see stale_reason) and enqueue one
    retry of each (none after MAX_LOST losses in a row); returns the numbers this call failed. Call it under dir_lock; of reapers on
    several machines, the storage lets exactly one fail each trial. ``grace`` defaults to
    grace_period()."""
    from optuna.trial import TrialState

    grace = grace_period() if grace is None else grace
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = stale_reason(trial, grace)
        if reason is not None and fail_trial(study, trial, reason, lost=True):
            reaped.append(trial.number)
    return reaped


def retry(study: optuna.Study, frozen_trial: optuna.Trial | FrozenTrial) -> bool:
    """Enqueue the retry of a trial that a fault stopped: a WAITING trial with the same params and
    user attribute ``retry_of`` = its number. Never twice for one trial: False when a trial already
    retries it. Marks it ``retried: true`` while it can still take attributes."""
    from optuna.trial import TrialState

    frozen_trial = _frozen(study, frozen_trial)
    number = frozen_trial.number
    if frozen_trial.state == TrialState.RUNNING:
        with contextlib.suppress(*_storage_errors()):
            study._storage.set_trial_user_attr(frozen_trial._trial_id, "retried", True)
    if any(t.user_attrs.get("retry_of") == number for t in study.get_trials(deepcopy=False)):
        return False
    study.enqueue_trial(dict(frozen_trial.params), user_attrs={"retry_of": number})
    return True


class StopFlag:
    """Set by SIGINT or SIGTERM (handlers installed on creation, in the main thread; elsewhere only
    ``stop_file`` and ``set`` can set it), or by ``stop_file`` appearing. ``is_set()`` is what a
    running trial's ``should_stop`` asks between iterations. A second SIGINT raises
    KeyboardInterrupt, for a user who will not wait for the iteration to end. ``restore()`` puts
    the previous handlers back (also on leaving a ``with`` block)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, stop_file: str | os.PathLike[str] | None = None) -> None:
        self.stop_file = pathlib.Path(stop_file) if stop_file is not None else None
        self.signum: int | None = None
        self._event = threading.Event()
        self._previous: dict[int, Any] = {}
        self._checked = 0.0
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self._event.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signum = signum
        self._event.set()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        if not self._event.is_set() and self.stop_file is not None:
            now = time.monotonic()
            if now - self._checked >= 0.2:  # asked every iteration: a stat per 0.2 s is enough
                self._checked = now
                if self.stop_file.exists():
                    self._event.set()
        return self._event.is_set()

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the nearest
            signal.signal(sig, signal.SIG_DFL if previous is None else previous)
        self._previous = {}

    def __enter__(self) -> StopFlag:
        return self

    def __exit__(self, *exc: object) -> None:
        self.restore()
