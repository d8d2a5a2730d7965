"""The sweep's fault layer (onlytorch/sweep/faults.py) on both storages a sweep uses: Optuna's
journal file and an RDB (SQLite). Trials are made by hand with the user attributes a worker
writes, so that a dead, a reused, a zombie and a silent worker can each be staged exactly."""

from __future__ import annotations

import contextlib
import fcntl
import multiprocessing
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

optuna = pytest.importorskip("optuna")

from optuna.storages import JournalStorage, RDBStorage  # noqa: E402
from optuna.storages.journal import JournalFileBackend  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from onlytorch.sweep import faults  # noqa: E402

optuna.logging.set_verbosity(optuna.logging.WARNING)
STORAGES = ["journal", "sqlite"]


_EMPTY_DB: list[pathlib.Path] = []  # an SQLite file with Optuna's tables, made once (the slow part), copied per test


def _storage(kind, tmp_path):
    if kind == "journal":
        return JournalStorage(JournalFileBackend(str(tmp_path / "study.log")))
    db = tmp_path / "study.db"
    if not db.exists():
        if not _EMPTY_DB:
            template = pathlib.Path(tempfile.mkdtemp()) / "empty.db"
            RDBStorage(f"sqlite:///{template}").engine.dispose()
            _EMPTY_DB.append(template)
        shutil.copyfile(_EMPTY_DB[0], db)
    return RDBStorage(f"sqlite:///{db}")


def _study(kind, tmp_path):
    return optuna.create_study(
        storage=_storage(kind, tmp_path), study_name="s", load_if_exists=True, sampler=optuna.samplers.RandomSampler(0)
    )


def _dead_pid():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # finished and waited for: its pid names no process
    return child.pid


def _running(study, worker, heartbeat):
    """Ask a trial (two params) and leave it RUNNING as if ``worker`` ran it, last seen at ``heartbeat``."""
    trial = study.ask()
    trial.suggest_float("optimizers.opt.lr", 1e-4, 1e-1, log=True)
    trial.suggest_categorical("train.batch_size", [8, 16, 32])
    if worker is not None:
        trial.set_user_attr("worker", worker)
    if heartbeat is not None:
        trial.set_user_attr("heartbeat", heartbeat)
    return trial


def _by_number(study):
    return {t.number: t for t in study.get_trials(deepcopy=False)}


def _retries_of(study, number):
    return [t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("retry_of") == number]


def test_worker_record_names_this_process():
    record = faults.worker_record()
    assert record["host"] == socket.gethostname() and record["pid"] == os.getpid()
    assert abs(record["started"] - time.time()) < 24 * 3600 and record["started"] <= time.time()
    assert faults.worker_alive(record) is True


def test_worker_alive_tells_dead_reused_zombie_and_remote_pids():
    me = faults.worker_record()
    assert faults.worker_alive({**me, "pid": _dead_pid()}) is False
    # the same pid, started at another time: the pid was reused by another process
    assert faults.worker_alive({**me, "started": me["started"] - 100.0}) is False
    assert faults.worker_alive({**me, "host": "some-other-host"}) is None
    zombie = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.time() + 10
        while faults._process_start(zombie.pid) is not None and not faults._is_zombie(zombie.pid):
            assert time.time() < deadline
            time.sleep(0.02)
        # exited, not yet waited for: kill(pid, 0) still succeeds, yet no worker runs there
        assert faults.worker_alive({"host": me["host"], "pid": zombie.pid, "started": None}) is False
    finally:
        zombie.wait()


@pytest.mark.parametrize("kind", STORAGES)
def test_reap_fails_a_dead_workers_trial_and_enqueues_one_retry(kind, tmp_path):
    study = _study(kind, tmp_path)
    dead = _dead_pid()
    host = socket.gethostname()
    gone = _running(study, {"host": host, "pid": dead, "started": 1.0}, time.time())
    alive = _running(study, faults.worker_record(), time.time())
    done = _running(study, {"host": host, "pid": dead, "started": 1.0}, time.time())
    study.tell(done, 0.5)  # finished trials are never reaped, whatever their worker

    assert faults.reap_stale(study, grace=60.0) == [gone.number]
    trials = _by_number(study)
    assert trials[gone.number].state == TrialState.FAIL
    assert trials[gone.number].user_attrs["error"] == f"worker died (pid {dead} on {host})"
    assert trials[gone.number].user_attrs["retried"] is True
    assert trials[alive.number].state == TrialState.RUNNING and trials[done.number].state == TrialState.COMPLETE
    (again,) = _retries_of(study, gone.number)
    assert again.state == TrialState.WAITING

    # the retry runs with the failed trial's params: the next ask pops it
    popped = study.ask()
    assert popped.number == again.number
    lr = popped.suggest_float("optimizers.opt.lr", 1e-4, 1e-1, log=True)
    batch = popped.suggest_categorical("train.batch_size", [8, 16, 32])
    assert {"optimizers.opt.lr": lr, "train.batch_size": batch} == trials[gone.number].params
    assert popped.user_attrs["retry_of"] == gone.number

    assert faults.reap_stale(study, grace=60.0) == []  # reaped once; the live worker's trial stays
    assert len(_retries_of(study, gone.number)) == 1


@pytest.mark.parametrize("kind", STORAGES)
def test_reap_fails_a_silent_trial_on_any_host(kind, tmp_path):
    study = _study(kind, tmp_path)
    now = time.time()
    silent = _running(study, {"host": "elsewhere", "pid": 1, "started": 1.0}, now - 120.0)
    fresh = _running(study, {"host": "elsewhere", "pid": 1, "started": 1.0}, now - 10.0)
    # a live worker of this host that stopped beating (stuck) is failed too
    stuck = _running(study, faults.worker_record(), now - 300.0)

    assert sorted(faults.reap_stale(study, grace=60.0)) == sorted([silent.number, stuck.number])
    trials = _by_number(study)
    assert trials[fresh.number].state == TrialState.RUNNING
    error = trials[silent.number].user_attrs["error"]
    assert error.startswith("no heartbeat for ") and error.endswith(" s")
    assert 119 <= int(error.split()[3]) <= 130
    assert len(_retries_of(study, silent.number)) == 1 and len(_retries_of(study, stuck.number)) == 1
    # the same trial under a longer grace: alive
    assert faults.stale_reason(trials[fresh.number], grace=60.0) is None
    assert faults.stale_reason(trials[fresh.number], grace=5.0) is not None


@pytest.mark.parametrize("kind", STORAGES)
def test_a_trial_asked_but_never_beating_is_judged_by_its_start(kind, tmp_path):
    study = _study(kind, tmp_path)
    trial = _running(study, None, None)
    frozen = _by_number(study)[trial.number]
    assert faults.stale_reason(frozen, grace=60.0) is None
    assert faults.stale_reason(frozen, grace=60.0, now=time.time() + 3600).startswith("no heartbeat for ")


@pytest.mark.parametrize("kind", STORAGES)
def test_a_reaper_that_loses_the_race_enqueues_nothing(kind, tmp_path):
    study = _study(kind, tmp_path)
    trial = _running(study, {"host": socket.gethostname(), "pid": _dead_pid(), "started": 1.0}, time.time())
    snapshot = _by_number(study)[trial.number]  # what a second reaper read, before the first one wrote
    other = _study(kind, tmp_path)  # another process's view of the same study
    assert faults.reap_stale(other) == [trial.number]
    assert faults.fail_trial(study, snapshot, "worker died (late reaper)") is False
    assert _by_number(study)[trial.number].user_attrs["error"].startswith("worker died (pid ")
    assert len(_retries_of(study, trial.number)) == 1


def _reap_at_once(kind, path, barrier, out):
    study = optuna.load_study(study_name="s", storage=_storage(kind, path))
    barrier.wait()
    out.put(faults.reap_stale(study, grace=60.0))


@pytest.mark.parametrize("kind", STORAGES)
def test_two_reapers_racing_enqueue_one_retry_per_trial(kind, tmp_path):
    """Two processes reap the same dead trials at the same moment, without the directory lock (as
    on two machines sharing a storage): each trial is failed by one of them, retried once."""
    study = _study(kind, tmp_path)
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": 1.0}
    numbers = [_running(study, dead, time.time()).number for _ in range(6)]
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_reap_at_once, args=(kind, tmp_path, barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert sorted(results[0] + results[1]) == numbers  # each reaped by exactly one process
    trials = study.get_trials(deepcopy=False)
    assert sorted(t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs) == numbers
    assert all(t.state == TrialState.FAIL for t in trials if t.number in numbers)


@pytest.mark.parametrize("kind", STORAGES)
def test_retry_is_never_enqueued_twice(kind, tmp_path):
    study = _study(kind, tmp_path)
    trial = _running(study, faults.worker_record(), time.time())
    assert faults.fail_trial(study, trial, "interrupted") is True  # a live optuna.Trial is accepted
    failed = _by_number(study)[trial.number]
    assert failed.state == TrialState.FAIL and failed.user_attrs["error"] == "interrupted"
    assert faults.retry(study, failed) is False
    assert len(_retries_of(study, trial.number)) == 1
    # a trial told FAIL by its worker, then retried: once
    told = _running(study, faults.worker_record(), time.time())
    study.tell(told, state=TrialState.FAIL)
    assert faults.retry(study, _by_number(study)[told.number]) is True
    assert faults.retry(study, _by_number(study)[told.number]) is False
    assert len(_retries_of(study, told.number)) == 1


@pytest.mark.parametrize("kind", STORAGES)
def test_heartbeat_advances_while_the_block_runs_and_stops_after(kind, tmp_path):
    study = _study(kind, tmp_path)
    trial = _running(study, None, None)
    with faults.Heartbeat(study, trial, interval=0.1) as beat:
        first = _by_number(study)[trial.number].user_attrs
        assert first["worker"] == faults.worker_record()
        time.sleep(0.5)
        later = _by_number(study)[trial.number].user_attrs["heartbeat"]
        assert later > first["heartbeat"]
    assert not beat.lost
    last = _by_number(study)[trial.number].user_attrs["heartbeat"]
    time.sleep(0.3)
    assert _by_number(study)[trial.number].user_attrs["heartbeat"] == last
    assert faults.reap_stale(study, grace=60.0) == []


@pytest.mark.parametrize("kind", STORAGES)
def test_heartbeat_of_a_trial_reaped_meanwhile_says_lost(kind, tmp_path):
    study = _study(kind, tmp_path)
    trial = _running(study, None, None)
    with faults.Heartbeat(study, trial, interval=0.05) as beat:
        faults.fail_trial(_study(kind, tmp_path), _by_number(study)[trial.number], "no heartbeat for 99 s")
        deadline = time.time() + 10
        while not beat.lost:
            assert time.time() < deadline
            time.sleep(0.05)


def test_dir_lock_excludes_other_processes_and_is_reentrant(tmp_path):
    probe = (
        "import fcntl, os, sys; fd = os.open(sys.argv[1], os.O_RDWR)\n"
        "try:\n    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\nexcept BlockingIOError:\n    sys.exit(7)\n"
    )
    lock = tmp_path / ".lock"
    with faults.dir_lock(tmp_path):
        with faults.dir_lock(tmp_path):  # a reap inside an ask
            assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 7
        assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 7
    assert subprocess.run([sys.executable, "-c", probe, str(lock)]).returncode == 0
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released
    finally:
        os.close(fd)


def test_stop_flag_is_set_by_sigint_and_sigterm_and_restores_handlers(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with faults.StopFlag() as flag:
        assert not flag.is_set()
        os.kill(os.getpid(), signal.SIGTERM)
        assert flag.is_set() and flag.signum == signal.SIGTERM
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before
    with faults.StopFlag() as flag:
        os.kill(os.getpid(), signal.SIGINT)  # no KeyboardInterrupt: the trial stops between iterations
        assert flag.is_set() and flag.signum == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait
            os.kill(os.getpid(), signal.SIGINT)
    assert signal.getsignal(signal.SIGINT) == before[0]


def test_stop_flag_sees_a_stop_file(tmp_path):
    stop = tmp_path / "stop"
    with faults.StopFlag(stop_file=stop) as flag:
        assert not flag.is_set()
        stop.write_text("")
        time.sleep(0.25)
        assert flag.is_set() and flag.signum is None


def test_interval_and_grace_come_from_the_environment(monkeypatch, tmp_path, caplog):
    assert (faults.heartbeat_interval(), faults.grace_period()) == (faults.HEARTBEAT_INTERVAL, faults.GRACE)
    monkeypatch.setenv(faults.INTERVAL_ENV, "0.5")
    monkeypatch.setenv(faults.GRACE_ENV, "3")
    assert (faults.heartbeat_interval(), faults.grace_period()) == (0.5, 3.0)
    study = _study("journal", tmp_path)
    trial = _running(study, {"host": "elsewhere", "pid": 1, "started": 1.0}, time.time() - 10.0)
    assert faults.reap_stale(study) == [trial.number]  # 10 s of silence is past a 3 s grace
    assert faults.Heartbeat(study, _running(study, None, None)).interval == 0.5
    monkeypatch.setenv(faults.GRACE_ENV, "1")  # under 3 beats: live trials would be failed between two beats
    assert faults.grace_period() == 1.5
    for bad in ("-1", "soon", "inf"):
        monkeypatch.setenv(faults.GRACE_ENV, bad)
        assert faults.grace_period() == faults.GRACE
    assert "ONLYTORCH_SWEEP_GRACE='inf' is not a positive number of seconds" in caplog.text


def _ask_until(url, requested, locked, out):
    """A worker's ask step without a shared sweep directory: count, then ask while short of ``requested``."""
    study = optuna.load_study(study_name="s", storage=RDBStorage(url))
    asked = 0
    while True:
        with faults.study_lock(study) if locked else contextlib.nullcontext():
            states = [t.state for t in study.get_trials(deepcopy=False)]
            if states.count(TrialState.RUNNING) + states.count(TrialState.COMPLETE) >= requested:
                break
            time.sleep(0.02)  # a slow ask: the moment another process could count the same trials
            study.ask()
            asked += 1
    out.put(asked)


def test_study_lock_lets_processes_without_a_shared_directory_ask_exactly_n(tmp_path):
    _study("sqlite", tmp_path)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    procs = [ctx.Process(target=_ask_until, args=(url, 8, True, out)) for _ in range(3)]
    for p in procs:
        p.start()
    asked = [out.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sum(asked) == 8 and len(_study("sqlite", tmp_path).get_trials()) == 8, asked


def test_study_lock_waits_for_a_live_lease_and_takes_an_expired_one(tmp_path):
    study = _study("sqlite", tmp_path)
    study._storage.set_study_system_attr(study._study_id, faults.LEASE_KEY, {"owner": "x", "until": time.time() - 1})
    t0 = time.monotonic()
    with faults.study_lock(study):  # its holder died long ago
        assert time.monotonic() - t0 < 5
        with faults.study_lock(study):  # re-entrant in one thread
            pass
    study._storage.set_study_system_attr(study._study_id, faults.LEASE_KEY, {"owner": "x", "until": time.time() + 1.0})
    t0 = time.monotonic()
    with faults.study_lock(study):
        assert time.monotonic() - t0 >= 0.8  # held by another process until its lease ran out
    assert study._storage.get_study_system_attrs(study._study_id)[faults.LEASE_KEY] is None  # given back
    journal = _study("journal", tmp_path)
    with faults.study_lock(journal):  # the sweep directory's lock covers a journal
        assert faults.LEASE_KEY not in journal._storage.get_study_system_attrs(journal._study_id)


@pytest.mark.parametrize("kind", STORAGES)
def test_a_configuration_that_loses_its_worker_again_and_again_stops_being_retried(kind, tmp_path):
    study = _study(kind, tmp_path)
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": 1.0}
    first = _running(study, dead, time.time())
    study.tell(_running(study, faults.worker_record(), time.time()), 1.0)  # an unrelated trial between
    chain = [first.number]
    for _ in range(faults.MAX_LOST):
        assert faults.reap_stale(study) == [chain[-1]]
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if not waiting:
            break
        trial = study.ask()  # the retry, run by a worker that dies too
        assert trial.user_attrs["retry_of"] == chain[-1]
        trial.set_user_attr("worker", dead)
        chain.append(trial.number)
    trials = _by_number(study)
    assert len(chain) == faults.MAX_LOST  # the first trial and its retries, each lost
    assert [trials[n].user_attrs.get("retried") for n in chain] == [True] * (faults.MAX_LOST - 1) + [None]
    assert not study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert faults.lost_in_a_row(study, trials[chain[-1]]) == faults.MAX_LOST
    # an interruption is no loss: lost, then interrupted, then lost again is one loss in a row
    lost = _running(study, dead, time.time())
    assert faults.reap_stale(study) == [lost.number]
    interrupted = study.ask()
    assert faults.fail_trial(study, interrupted, "interrupted") is True
    relost = study.ask()
    assert relost.user_attrs["retry_of"] == interrupted.number
    relost.set_user_attr("worker", dead)
    assert faults.reap_stale(study) == [relost.number]
    assert faults.lost_in_a_row(study, _by_number(study)[relost.number]) == 1
    assert len(_retries_of(study, relost.number)) == 1


def test_a_retry_of_a_retry_is_bounded_and_the_worker_loop_then_stops(tmp_path):
    """A configuration whose worker is lost again and again: its retries stop after MAX_LOST losses,
    the last one counts as a failure of the sweep, and a worker's ask loop (with max_failures 1)
    ends instead of waiting for a retry that never comes."""
    from onlytorch.sweep.record import count
    from onlytorch.sweep.worker import _WAIT, _next_trial

    study = _study("journal", tmp_path)
    dead = {"host": socket.gethostname(), "pid": _dead_pid(), "started": 1.0}
    _running(study, dead, time.time())
    asked = 1
    while True:
        faults.reap_stale(study)
        if not study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            break
        trial = study.ask()  # the retry of the retry ..., whose worker dies too
        trial.set_user_attr("worker", dead)
        asked += 1
        assert asked <= faults.MAX_LOST, "retried beyond MAX_LOST losses in a row"
    assert asked == faults.MAX_LOST
    c = count(study.get_trials(deepcopy=False))
    assert (c.failed, c.faults, c.waiting, c.running) == (1, faults.MAX_LOST - 1, 0, 0)
    assert _next_trial(study, tmp_path, 4, 1, [0]) is None  # max_failures reached: the worker stops
    assert _next_trial(study, tmp_path, 4, 2, [0]) is not _WAIT  # below it: a new configuration is asked
