"""Faults of a real ``onlytorch sweep`` (subprocesses, real signals): a worker killed with SIGKILL
mid-trial, Ctrl-C, two commands sharing one SQLite study, and the heartbeat of a running trial.
Each ends with exactly the requested number of complete trials, the faulted trial failed with its
reason and retried once with the same parameters."""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from optuna.trial import TrialState  # noqa: E402

from onlytorch.sweep import faults  # noqa: E402
from onlytorch.sweep.study import StorageError, open_study  # noqa: E402

from .engine_helpers import info, rows  # noqa: E402

# the console script as installed (true exit codes, real signals)
CMD = [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()", "sweep"]
# heartbeats every 0.2 s, so that a trial of a few seconds shows several
ENV = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", faults.INTERVAL_ENV: "0.2"}
TIMEOUT = 120  # seconds for one command: far more than any of these takes, even on a busy machine

XOR = pathlib.Path(__file__).resolve().parents[2] / "specs" / "xor.yaml"


# steps of a trial that must be caught running: about 2 s on a fast idle machine (3000 steps took
# 0.4 s there, over before three heartbeats were seen), several seconds on a busy one
STEPS = 15_000


def sweep_file(folder: pathlib.Path, trials: int, steps: int) -> pathlib.Path:
    """A random search over xor's learning rate, ``steps`` a trial, evaluated only twice (a trial
    of STEPS steps takes seconds: long enough to be caught running)."""
    path = folder / "s.yaml"
    path.write_text(
        f"""\
version: 1
spec: {XOR}
set:
  train.steps: {steps}
  train.eval_every: {steps // 2}
  train.log_every: {steps // 2}
trials: {trials}
sampler: {{type: random, seed: 0}}
space:
  optimizers.opt.lr: {{loguniform: [1.0e-3, 1.0e-1]}}
""",
        encoding="utf-8",
    )
    return path


def start(tmp_path: pathlib.Path, name: str, *args: str) -> subprocess.Popen[bytes]:
    """The command in its own process group, as a terminal starts a foreground job; stderr to a file
    (a pipe nobody reads could block it)."""
    with open(tmp_path / f"{name}.stderr", "wb") as err:
        return subprocess.Popen(
            [*CMD, *args], cwd=tmp_path, env=ENV, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True
        )


def finish(proc: subprocess.Popen[bytes], tmp_path: pathlib.Path, name: str) -> tuple[int, str]:
    try:
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    stderr = (tmp_path / f"{name}.stderr").read_text(errors="replace")
    assert "Traceback" not in stderr, stderr
    return code, stderr


def parent_of(pid: int) -> int | None:
    try:
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def children(pid: int) -> set[int]:
    return {int(p.name) for p in pathlib.Path("/proc").iterdir() if p.name.isdigit() and parent_of(int(p.name)) == pid}


def _open_study(proc: subprocess.Popen[bytes], sweep_dir: pathlib.Path) -> Any:
    deadline = time.monotonic() + TIMEOUT
    while True:  # sweep.json is written first, the study created just after
        assert proc.poll() is None and time.monotonic() < deadline, "the sweep did not start"
        try:
            return open_study(sweep_dir)
        except (OSError, ValueError, StorageError):
            time.sleep(0.05)


def caught_running(proc: subprocess.Popen[bytes], study: Any, beats: int) -> dict[str, Any]:
    """Wait until a trial runs and its heartbeat has been refreshed ``beats`` times; returns its
    number, params, worker record and the heartbeats seen."""
    deadline = time.monotonic() + TIMEOUT
    seen: dict[int, list[float]] = {}
    while True:
        assert proc.poll() is None, "the sweep ended before a trial was caught running"
        assert time.monotonic() < deadline, "no trial ran"
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            beat = t.user_attrs.get("heartbeat")
            if "worker" in t.user_attrs and beat is not None:
                got = seen.setdefault(t.number, [])
                if not got or got[-1] != beat:
                    got.append(beat)
                if len(got) >= beats:
                    return {"number": t.number, "params": t.params, "worker": t.user_attrs["worker"], "beats": got}
        time.sleep(0.05)


def state_of(pid: int) -> str:
    stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def frozen_mid_trial(proc: subprocess.Popen[bytes], sweep_dir: pathlib.Path, beats: int = 3) -> dict[str, Any]:
    """Catch a trial running, then stop (SIGSTOP) every worker of the command, so that what the test
    does next lands mid-trial however busy the machine is. Returns the caught trial, with
    ``workers`` (their pids) and ``running`` (the numbers of all RUNNING trials). A worker
    that finished its trial between being caught and being stopped, or that was stopped while
    writing to the study, is let go, and caught again."""
    study = _open_study(proc, sweep_dir)
    while True:
        caught = caught_running(proc, study, beats)
        workers = children(proc.pid)
        for w in workers:
            os.kill(w, signal.SIGSTOP)
        for w in workers:
            while state_of(w) != "T":
                time.sleep(0.01)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        by_pid = {t.user_attrs["worker"]["pid"]: t.number for t in running if "worker" in t.user_attrs}
        # a worker stopped while it writes to the journal holds Optuna's lock on it: every other
        # process would wait 30 s for Optuna to free it (docs/sweeps.md), so it is let go and caught again
        writing = os.path.lexists(sweep_dir / "study.log.lock")
        if by_pid.get(caught["worker"]["pid"]) == caught["number"] and not writing:
            # every RUNNING trial: also one asked by a worker stopped before it recorded itself
            return {**caught, "workers": workers, "running": sorted(t.number for t in running)}
        for w in workers:
            os.kill(w, signal.SIGCONT)


def pending(pid: int, sig: int) -> bool:
    """``sig`` is waiting to be delivered to process ``pid`` (a stopped process holds it)."""
    status = pathlib.Path(f"/proc/{pid}/status").read_text().splitlines()
    masks = [int(line.split()[1], 16) for line in status if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(m & (1 << (sig - 1)) for m in masks)


def trials_of(sweep_dir: pathlib.Path, storage: str | None = None) -> dict[int, Any]:
    return {t.number: t for t in open_study(sweep_dir, storage).get_trials(deepcopy=False)}


def assert_retried_once(trials: dict[int, Any], number: int, params: dict[str, Any], error: str) -> None:
    """The faulted trial failed with ``error`` and exactly one complete trial retries it, with its params."""
    assert trials[number].state == TrialState.FAIL and trials[number].user_attrs["error"] == error
    retries = [t for t in trials.values() if t.user_attrs.get("retry_of") == number]
    assert len(retries) == 1, retries
    assert retries[0].state == TrialState.COMPLETE and retries[0].params == params


def complete(trials: dict[int, Any]) -> list[int]:
    return sorted(n for n, t in trials.items() if t.state == TrialState.COMPLETE)


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A 1-worker sweep whose worker is SIGKILLed mid-trial, then the same command again."""
    tmp_path = tmp_path_factory.mktemp("killed")
    file = sweep_file(tmp_path, trials=2, steps=STEPS)
    sweep_dir = tmp_path / "out"
    first = start(tmp_path, "first", str(file), "--out", str(sweep_dir))
    running = frozen_mid_trial(first, sweep_dir)
    pid = running["worker"]["pid"]
    assert parent_of(pid) == first.pid  # the worker process of this command, nothing else
    os.kill(pid, signal.SIGKILL)
    first_code, first_err = finish(first, tmp_path, "first")
    left = trials_of(sweep_dir)[running["number"]]
    rerun_code, rerun_err = finish(start(tmp_path, "rerun", str(file), "--out", str(sweep_dir)), tmp_path, "rerun")
    return {
        **running,
        "dir": sweep_dir,
        "first": (first_code, first_err),
        "left": left,
        "rerun": (rerun_code, rerun_err),
    }


def test_a_worker_s_heartbeat_advances_while_its_trial_runs(killed):
    beats = killed["beats"]
    assert len(beats) >= 3 and beats == sorted(beats) and len(set(beats)) == len(beats)
    assert killed["worker"]["host"] == socket.gethostname()
    # refreshed at the configured interval (0.2 s), not only at the trial's start and end
    assert beats[-1] - beats[0] < 5.0


def test_a_killed_worker_s_trial_is_failed_and_retried_by_the_rerun(killed):
    code, stderr = killed["first"]
    assert code == 1, stderr  # its only worker died: the sweep did not finish
    assert "worker 0 exited with -9" in stderr, stderr
    left = killed["left"]  # still RUNNING (its reaper is the rerun's worker) or failed by the command at its end
    assert left.state == TrialState.RUNNING or left.user_attrs["error"].startswith("worker died"), left
    code, stderr = killed["rerun"]
    assert code == 0, stderr
    sweep_dir, number, pid = killed["dir"], killed["number"], killed["worker"]["pid"]
    trials = trials_of(sweep_dir)
    assert len(complete(trials)) == 2
    assert_retried_once(trials, number, killed["params"], f"worker died (pid {pid} on {socket.gethostname()})")
    assert info(sweep_dir)["status"] == "completed" and info(sweep_dir)["counts"]["complete"] == 2
    table = {int(r["number"]): r for r in rows(sweep_dir)}
    assert table[number]["state"] == "failed" and table[number]["error"].startswith("worker died (pid ")
    assert [r["retry_of"] for r in table.values() if r["retry_of"]] == [str(number)]


def test_a_killed_worker_s_trial_is_failed_and_retried_by_the_other_worker(tmp_path):
    file = sweep_file(tmp_path, trials=2, steps=STEPS)
    sweep_dir = tmp_path / "out"
    proc = start(tmp_path, "first", str(file), "--out", str(sweep_dir), "--workers", "2")
    running = frozen_mid_trial(proc, sweep_dir, beats=2)
    pid = running["worker"]["pid"]
    os.kill(pid, signal.SIGKILL)
    for w in running["workers"] - {pid}:
        os.kill(w, signal.SIGCONT)
    code, stderr = finish(proc, tmp_path, "first")
    assert code == 0, stderr  # the surviving worker failed the trial, ran its retry and finished the sweep
    trials = trials_of(sweep_dir)
    assert len(complete(trials)) == 2
    assert_retried_once(
        trials, running["number"], running["params"], f"worker died (pid {pid} on {socket.gethostname()})"
    )
    (retry,) = [t for t in trials.values() if t.user_attrs.get("retry_of") == running["number"]]
    assert retry.user_attrs["worker"]["pid"] in running["workers"] - {pid}
    assert info(sweep_dir)["status"] == "completed"


def test_ctrl_c_exits_130_and_the_rerun_completes_exactly_n(tmp_path):
    file = sweep_file(tmp_path, trials=2, steps=STEPS)
    sweep_dir = tmp_path / "out"
    proc = start(tmp_path, "first", str(file), "--out", str(sweep_dir), "--workers", "2")
    running = frozen_mid_trial(proc, sweep_dir, beats=2)
    workers = running["workers"]
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
    deadline = time.monotonic() + TIMEOUT
    while not all(pending(w, signal.SIGINT) for w in workers):  # the command passes it on to each worker
        assert time.monotonic() < deadline, "the command did not pass the interrupt on to its workers"
        time.sleep(0.02)
    for w in workers:
        os.kill(w, signal.SIGCONT)
    code, stderr = finish(proc, tmp_path, "first")
    assert code == 130, stderr
    assert not any(faults.worker_alive({"host": socket.gethostname(), "pid": w}) for w in workers)  # none left behind
    assert info(sweep_dir)["status"] == "interrupted"
    trials = trials_of(sweep_dir)
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials.values() if t.user_attrs.get("error") == "interrupted"]
    # each one running then (and one a worker was asking for at that moment, if so)
    assert set(running["running"]) <= {t.number for t in interrupted}
    waiting = [t for t in trials.values() if t.state == TrialState.WAITING]
    assert sorted(t.user_attrs["retry_of"] for t in waiting) == sorted(t.number for t in interrupted)

    code, stderr = finish(start(tmp_path, "rerun", str(file), "--out", str(sweep_dir)), tmp_path, "rerun")
    assert code == 0, stderr
    trials = trials_of(sweep_dir)
    assert len(complete(trials)) == 2
    for t in interrupted:
        assert_retried_once(trials, t.number, t.params, "interrupted")
    assert info(sweep_dir)["status"] == "completed"


def test_a_second_ctrl_c_ends_a_worker_that_does_not_stop(tmp_path):
    """A worker stuck mid-iteration (stopped here) holds the first Ctrl-C; a second one kills it,
    the command exits 130 and its end leaves no trial RUNNING (failed as its worker died, retried)."""
    file = sweep_file(tmp_path, trials=2, steps=STEPS)
    sweep_dir = tmp_path / "out"
    proc = start(tmp_path, "first", str(file), "--out", str(sweep_dir))
    running = frozen_mid_trial(proc, sweep_dir, beats=2)
    (worker,) = running["workers"]
    os.kill(proc.pid, signal.SIGINT)
    deadline = time.monotonic() + TIMEOUT
    while not pending(worker, signal.SIGINT):  # passed on; the stopped worker cannot act on it
        assert time.monotonic() < deadline, "the command did not pass the interrupt on to its worker"
        time.sleep(0.02)
    deadline = time.monotonic() + 30
    while proc.poll() is None:  # the user insists
        assert time.monotonic() < deadline, "a second Ctrl-C did not end the command"
        os.kill(proc.pid, signal.SIGINT)
        time.sleep(0.5)
    code, stderr = finish(proc, tmp_path, "first")
    assert code == 130, stderr
    assert not faults.worker_alive(running["worker"])
    trials = trials_of(sweep_dir)
    assert not [t for t in trials.values() if t.state == TrialState.RUNNING]
    assert trials[running["number"]].user_attrs["error"].startswith("worker died")
    assert [t.user_attrs["retry_of"] for t in trials.values() if t.state == TrialState.WAITING] == [running["number"]]
    assert info(sweep_dir)["status"] == "interrupted"


def test_two_commands_on_one_sqlite_study_share_it(tmp_path):
    file = sweep_file(tmp_path, trials=6, steps=600)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    args = [str(file), "--storage", url, "--workers", "1", "--out", str(tmp_path / "out")]
    procs = [start(tmp_path, f"p{i}", *args) for i in range(2)]
    workers: dict[int, int] = {}  # worker pid -> the command that started it
    deadline = time.monotonic() + TIMEOUT
    while any(p.poll() is None for p in procs):
        assert time.monotonic() < deadline
        for i, p in enumerate(procs):
            workers.update(dict.fromkeys(children(p.pid), i))
        time.sleep(0.05)
    for i, p in enumerate(procs):
        code, stderr = finish(p, tmp_path, f"p{i}")
        assert code == 0, stderr
    trials = trials_of(tmp_path / "out", url)
    done = complete(trials)
    assert len(done) == 6 and len(trials) == 6, {n: t.state for n, t in trials.items()}
    ran_by = {workers.get(trials[n].user_attrs["worker"]["pid"]) for n in done}
    assert ran_by == {0, 1}, ran_by  # each command ran some of them
