"""The run directory's lifecycle (docs/runs.md): one process at a time holds a run (an OS lock),
every ending of a process records a final status in run.json (only SIGKILL leaves ``running``,
and the next command that opens the run says it was killed), signals always give exit 130, a
full disk is a clear failure that keeps the last good checkpoint, a run killed before its first
checkpoint is started afresh by --resume, and bad paths on the command line are usage errors."""

from __future__ import annotations

import errno
import json
import os
import re
import resource
import signal
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from onlytorch_cli import train_cmd

from onlytorch import app, rundir
from onlytorch.evaluation import RunEvaluation
from onlytorch.run import Run
from onlytorch.train import Trainer

from . import CLI_CMD, SUBPROCESS_ENV, assert_same_state, checkpoint, clean, fails, info, invoke, ok, rows, spec

XOR = spec("xor")
LONG = ["--set", "train.steps=1000000", "--set", "train.log_every=1"]


def spawn(*args: str, cwd: Path, **kwargs) -> subprocess.Popen:  # type: ignore[no-untyped-def,type-arg]
    return subprocess.Popen(
        [*CLI_CMD, *args],
        cwd=cwd,
        env={**SUBPROCESS_ENV, "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def finish(proc: subprocess.Popen, timeout: float = 60) -> tuple[int, str]:  # type: ignore[type-arg]
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in out + err, out + err
    return proc.returncode, out + err


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:  # type: ignore[no-untyped-def,type-arg]
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, (what, proc.communicate())
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def status(run_dir: Path) -> str:
    return str(info(run_dir)["status"])


def running(run_dir: Path) -> bool:
    try:
        return status(run_dir) == "running" and (run_dir / "metrics.jsonl").exists()
    except (OSError, ValueError):
        return False


def no_duplicate_rows(run_dir: Path) -> None:
    log = rows(run_dir)
    assert len({(r["step"], r["kind"]) for r in log}) == len(log)


# ------------------------------------------------------------------ the lock


def test_the_lock_names_its_holder_and_a_clean_release_leaves_no_file(tmp_path):
    first = rundir.RunLock(tmp_path).acquire()
    assert first.stale_pid is None
    assert (tmp_path / ".lock").read_text().split()[0] == str(os.getpid())
    assert rundir.holder(tmp_path) == os.getpid()
    with pytest.raises(rundir.RunLocked) as caught:
        rundir.RunLock(tmp_path).acquire()
    assert f"in use by another onlytorch process (pid {os.getpid()})" in str(caught.value)
    first.release()
    assert not (tmp_path / ".lock").exists() and rundir.holder(tmp_path) is None
    # a lock file left by a killed holder: free at the OS level, its pid says who it was
    (tmp_path / ".lock").write_text("4242 somehost\n")
    assert rundir.holder(tmp_path) is None and rundir.left_pid(tmp_path) == 4242
    second = rundir.RunLock(tmp_path).acquire()
    assert second.stale_pid == 4242
    second.release()
    # looking never creates the file
    assert rundir.holder(tmp_path / "nowhere") is None and not (tmp_path / "nowhere").exists()


def test_a_lock_file_deleted_between_open_and_flock_is_not_trusted(tmp_path, monkeypatch):
    # The holder deletes the file before unlocking; a process that opened the old file just before
    # must not believe it holds the run after its flock succeeds on the deleted file.
    real_flock = rundir.fcntl.flock
    calls = {"n": 0}

    def flock(fd, op):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:  # as if the previous holder released (deleted) the file just now
            os.unlink(tmp_path / ".lock")
        return real_flock(fd, op)

    monkeypatch.setattr(rundir.fcntl, "flock", flock)
    lock = rundir.RunLock(tmp_path).acquire()
    assert calls["n"] == 2  # it started again with a new file
    assert os.stat(tmp_path / ".lock").st_ino == os.fstat(lock.fd).st_ino  # type: ignore[arg-type]
    lock.release()


def test_default_run_directories_are_claimed_atomically(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled = SimpleNamespace(spec=SimpleNamespace(name="xor"))
    (tmp_path / "runs/xor").mkdir(parents=True)  # taken, e.g. by a run that has not written yet
    claims = [train_cmd._claim_run_dir(compiled, None, False) for _ in range(2)]  # type: ignore[arg-type]
    assert [c.path.name for c in claims] == ["xor-2", "xor-3"]
    for c in claims:
        c.release()
    assert not (tmp_path / "runs/xor-2").exists()  # made by us and left empty: removed again
    assert (tmp_path / "runs/xor").is_dir()


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "a\0b"])
def test_a_spec_name_that_is_no_folder_name_needs_out(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled = SimpleNamespace(spec=SimpleNamespace(name=name))
    with pytest.raises(click.UsageError, match="cannot name a folder under runs/; give --out"):
        train_cmd._claim_run_dir(compiled, None, False)  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_a_spec_name_too_long_for_a_folder_is_a_short_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    compiled = SimpleNamespace(spec=SimpleNamespace(name="n" * 5000))
    with pytest.raises(click.UsageError) as caught:
        train_cmd._claim_run_dir(compiled, None, False)  # type: ignore[arg-type]
    message = caught.value.format_message()
    assert message.startswith("cannot use runs/nnnnnnnn") and "a name in it is too long for the file system" in message
    assert len(message) < 200
    assert list((tmp_path / "runs").iterdir()) == []


def test_two_trains_started_together_into_one_out_never_share_it(tmp_path):
    procs = [spawn("train", XOR, "--out", "run", "--set", "train.steps=1000", "-q", cwd=tmp_path) for _ in range(2)]
    results = [finish(p) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 2], results
    loser = next(text for code, text in results if code == 2)
    assert "in use by another onlytorch process (pid " in loser or "already holds a run" in loser
    assert status(tmp_path / "run") == "completed" and info(tmp_path / "run")["steps_done"] == 1000
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 1000
    no_duplicate_rows(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")) == []  # no .lock, no temp


def test_a_live_run_is_held_and_a_killed_one_is_reported_killed_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["--set", "train.checkpoint_every=20"]
    ok("train", XOR, "--out", "run", "--set", "train.steps=5", *args, "-q")
    last = tmp_path / "run/checkpoints/last.npz"
    holder = spawn("train", XOR, "--out", "run", "--resume", *LONG, *args, "-q", cwd=tmp_path)
    try:
        wait_for(lambda: running(tmp_path / "run") and int(checkpoint(last)["meta/step"]) > 5, holder, "a checkpoint")
        # a second --resume and a fresh train into the live run: exit 2 naming the holder
        for more in (["--resume", *LONG], ["--set", "train.steps=10"]):
            result = fails(2, "train", XOR, "--out", "run", *more, *args, "-q")
            assert f"run is in use by another onlytorch process (pid {holder.pid}); wait for it" in result.output
        # reading is free while it runs: the report says it is in progress
        report = ok("report", "run", "--no-plots")
        assert f"the run is in progress (pid {holder.pid})" in report.output
        holder.kill()
        holder.wait()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
    assert status(tmp_path / "run") == "running"  # nothing can record a SIGKILL...
    assert rundir.left_pid(tmp_path / "run") == holder.pid
    # ...but the next command that opens the run says what happened
    report = ok("report", "run", "--no-plots")
    assert f"interrupted: killed: the process that ran it (pid {holder.pid}) stopped without recording its end" in (
        report.output
    )
    assert "--resume" in report.output
    assert status(tmp_path / "run") == "running"  # report only reads
    refused = fails(2, "train", XOR, "--out", "run", "--set", "train.steps=10")
    assert f"killed: the process that ran it (pid {holder.pid})" in refused.output
    assert "already holds a run; continue it with --resume" in refused.output
    summary = info(tmp_path / "run")
    assert summary["status"] == "interrupted" and summary["message"].startswith("killed:")
    k = int(checkpoint(last)["meta/step"])
    ok("train", XOR, "--out", "run", "--resume", "--set", f"train.steps={k + 10}", *args, "-q")
    assert status(tmp_path / "run") == "completed" and info(tmp_path / "run")["steps_done"] == k + 10
    assert not (tmp_path / "run/.lock").exists()
    no_duplicate_rows(tmp_path / "run")
    ok("train", XOR, "--out", "ref", "--set", f"train.steps={k + 10}", *args, "-q")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", last)


# ------------------------------------------------------------------ the dead end


def killed_before_the_first_checkpoint(tmp_path: Path) -> None:
    proc = spawn("train", XOR, "--out", "run", *LONG, "-q", cwd=tmp_path)
    wait_for(lambda: running(tmp_path / "run") and len(rows(tmp_path / "run")) > 30, proc, "rows to be logged")
    proc.kill()
    proc.wait()
    assert not (tmp_path / "run/checkpoints/last.npz").exists() and status(tmp_path / "run") == "running"


def test_a_run_killed_before_its_first_checkpoint_is_started_afresh_by_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    killed_before_the_first_checkpoint(tmp_path)
    refused = fails(2, "train", XOR, "--out", "run", "--set", "train.steps=10", "--set", "train.log_every=1")
    assert "holds a run that stopped before its first checkpoint; start it again from step 0 with --resume" in (
        refused.output
    )
    assert status(tmp_path / "run") == "interrupted"  # the kill is recorded
    changed = fails(2, "train", XOR, "--out", "run", "--resume", "--set", "train.steps=10", "--set", "seed=5")
    assert "the spec changed" in changed.output and "seed: 0 -> 5" in changed.output
    result = ok("train", XOR, "--out", "run", "--resume", "--set", "train.steps=10", "--set", "train.log_every=1")
    assert "holds no checkpoint (its run stopped before the first one): starting afresh" in result.output
    assert [r["step"] for r in rows(tmp_path / "run") if r["kind"] == "train"] == list(range(1, 11))
    assert status(tmp_path / "run") == "completed"
    ok("train", XOR, "--out", "ref", "--set", "train.steps=10", "--set", "train.log_every=1", "-q")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")


def test_resume_of_a_folder_that_never_held_a_run_still_refuses(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    result = fails(2, "train", XOR, "--out", "empty", "--resume")
    assert "holds no checkpoint to continue from" in result.output
    assert list((tmp_path / "empty").iterdir()) == []  # not even a lock file left


# ------------------------------------------------------------------ signals


def handlers_installed(pid: int) -> bool:
    """The process catches SIGTERM: the CLI's handlers are in place (Python catches only SIGINT)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = int(next(line for line in text.splitlines() if line.startswith("SigCgt:")).split()[1], 16)
    return bool(caught & (1 << (signal.SIGTERM - 1)))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_start_up_exits_130(sig, tmp_path):
    proc = spawn("train", XOR, "--out", "run", *LONG, cwd=tmp_path)
    wait_for(lambda: handlers_installed(proc.pid), proc, "the signal handlers", timeout=30)
    proc.send_signal(sig)  # while the command imports the engine
    code, text = finish(proc)
    assert code == 130, text
    assert "interrupted" in text and "Aborted" not in text
    assert not (tmp_path / "run/run.json").exists() or status(tmp_path / "run") != "running"


def test_a_signal_while_the_data_loads_leaves_no_trace(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", XOR, "--out", "done", "--set", "train.steps=5", "-q")
    before = (tmp_path / "done/run.json").read_bytes()
    with monkeypatch.context() as m:
        send_sigint_when(m, app, "_trainer", lambda compiled: True)
        fresh = invoke("train", XOR, "--out", "new", "-q")
        resumed = invoke("train", XOR, "--out", "done", "--resume", "--set", "train.steps=10", "-q")
    for result, where in ((fresh, "new"), (resumed, "done")):
        clean(result)
        assert result.exit_code == 130, result.output
        assert f"interrupted during start-up, before training began; nothing written in {where}" in result.output
    assert not (tmp_path / "new").exists()  # made for the run, left empty: removed
    assert (tmp_path / "done/run.json").read_bytes() == before and not (tmp_path / "done/.lock").exists()


def send_sigint_when(monkeypatch, target: object, name: str, when) -> None:  # type: ignore[no-untyped-def]
    original = getattr(target, name)

    def wrapped(*args, **kwargs):  # type: ignore[no-untyped-def]
        if when(*args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.01)  # let the handler run here
        return original(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapped)


def test_a_signal_during_the_final_evaluation_exits_130_and_resume_finishes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        send_sigint_when(m, RunEvaluation, "evaluate", lambda run, step: step == 20)
        result = invoke("train", XOR, "--out", "run", "--set", "train.steps=20", "-q")
    clean(result)
    assert result.exit_code == 130, result.output
    assert "interrupted after the last step (20), during the final evaluation" in result.output
    summary = info(tmp_path / "run")
    assert summary["status"] == "interrupted" and "final evaluation" in summary["message"]
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 20
    ok("train", XOR, "--out", "run", "--resume", "--set", "train.steps=20", "-q")
    assert status(tmp_path / "run") == "completed"
    assert [r["step"] for r in rows(tmp_path / "run") if r["kind"] == "eval"] == [20]


def test_a_signal_after_the_run_completed_exits_130_and_keeps_completed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        send_sigint_when(m, train_cmd, "_table", lambda title, values: title.startswith("final training"))
        result = invoke("train", XOR, "--out", "run", "--set", "train.steps=20", "-q")
    clean(result)
    assert result.exit_code == 130 and "interrupted" in result.output, result.output
    assert "Aborted" not in result.output
    assert status(tmp_path / "run") == "completed"


def signal_in_step(monkeypatch, step: int) -> None:
    send_sigint_when(monkeypatch, Trainer, "run_iteration", lambda trainer: trainer.step + 1 == step)


def signal_in_save(monkeypatch, times: int) -> list[int]:
    """Each checkpoint archive written after the training loop stopped gets `times` SIGINTs while it
    is written (checkpoint._write_npz: what np.savez writes)."""
    from onlytorch import checkpoint as ckpt

    real = ckpt._write_npz
    calls: list[int] = []

    def savez(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 1:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)
        return real(file, *args, **kwargs)

    monkeypatch.setattr(ckpt, "_write_npz", savez)
    return calls


def test_a_second_signal_while_the_interrupt_checkpoint_is_written_finishes_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", XOR, "--out", "run", "--set", "train.steps=100", "-q"]
    with monkeypatch.context() as m:
        signal_in_step(m, 4)  # the loop stops after step 4
        m.setattr(Run, "checkpoint", _arm_save(Run.checkpoint, m, times=1))
        result = invoke(*args)
    clean(result)
    assert result.exit_code == 130, result.output
    assert "finishing the write in progress first; interrupt again to abandon it" in result.output
    assert "interrupted at step 4; checkpoint run/checkpoints/last.npz" in result.output
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 4
    assert info(tmp_path / "run")["status"] == "interrupted"


def test_a_third_signal_abandons_the_interrupt_checkpoint_and_keeps_the_previous(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", XOR, "--out", "run", "--set", "train.steps=100", "--set", "train.checkpoint_every=3", "-q"]
    with monkeypatch.context() as m:
        signal_in_step(m, 4)
        m.setattr(Run, "checkpoint", _arm_save(Run.checkpoint, m, times=2))
        result = invoke(*args)
    clean(result)
    assert result.exit_code == 130, result.output
    assert "interrupted at step 4; the checkpoint was abandoned (the last checkpoint is run/checkpoints/last.npz)" in (
        result.output
    )
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 3
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["last.npz"]  # no temporary left
    summary = info(tmp_path / "run")
    assert summary["status"] == "interrupted" and "abandoned" in summary["message"]
    ok("train", XOR, "--out", "run", "--resume", "--set", "train.steps=6", "-q")
    ok("train", XOR, "--out", "ref", "--set", "train.steps=6", "-q")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")


def _arm_save(original, monkeypatch, times: int):  # type: ignore[no-untyped-def]
    """Run.checkpoint that signals during the save of the checkpoint an interruption writes (the
    one written in the handler's critical mode)."""
    from onlytorch_cli import interrupts

    def checkpoint_(self, name="last"):  # type: ignore[no-untyped-def]
        if interrupts.current().mode == "critical" and interrupts.current().received:
            signal_in_save(monkeypatch, times)
        return original(self, name)

    return checkpoint_


# ------------------------------------------------------------------ failures and full disks


@pytest.mark.parametrize(
    "exc, message",
    [
        (RuntimeError("boom"), "internal error: RuntimeError: boom (a bug in onlytorch; please report it)"),
        (MemoryError(), "out of memory: the model, batch or data do not fit in this machine's memory"),
    ],
)
def test_an_unexpected_error_is_recorded_as_failed_without_a_traceback(exc, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    real = Trainer.run_iteration

    def run_iteration(self):  # type: ignore[no-untyped-def]
        if self.step == 7:
            raise exc
        return real(self)

    monkeypatch.setattr(Trainer, "run_iteration", run_iteration)
    result = fails(1, "train", XOR, "--out", "run", "--set", "train.steps=20", "--set", "train.checkpoint_every=5")
    assert f"error: {message}" in result.output
    assert "the last good checkpoint is run/checkpoints/last.npz" in result.output
    summary = info(tmp_path / "run")
    assert summary["status"] == "failed" and summary["message"] == message
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 5


def limit_file_size(limit: int):  # type: ignore[no-untyped-def]
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_full_disk_fails_clearly_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets_ = ["--set", "train.log_every=1", "--set", "train.checkpoint_every=10"]
    proc = spawn(
        "train", XOR, "--out", "run", "--set", "train.steps=2000", *sets_, "-q", cwd=tmp_path,
        preexec_fn=limit_file_size(16_000),
    )  # fmt: skip
    code, text = finish(proc)
    assert code == 1, text
    assert re.search(r"error: cannot write run/metrics\.(jsonl|csv)\S*( \(or metrics\.csv\))?: File too large", text), (
        text
    )
    assert "free some space, then continue with --resume" in text
    summary = info(tmp_path / "run")
    assert summary["status"] == "failed" and "File too large" in summary["message"]
    k = int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"])
    assert k % 10 == 0 and 0 < k < 2000
    assert not [p for p in (tmp_path / "run").rglob("*") if p.name.endswith(".tmp")]
    ok("train", XOR, "--out", "run", "--resume", "--set", f"train.steps={k + 10}", *sets_, "-q")
    ok("train", XOR, "--out", "ref", "--set", f"train.steps={k + 10}", *sets_, "-q")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")
    no_duplicate_rows(tmp_path / "run")


def test_run_json_is_written_over_its_own_blocks_when_the_disk_is_full(tmp_path, monkeypatch):
    import onlytorch.run as run_module

    monkeypatch.chdir(tmp_path)
    real_write, real_log = run_module.write_text_atomic, Run.log
    full = {"on": False}

    def write_text_atomic(path, text):  # type: ignore[no-untyped-def]
        if full["on"]:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(path, text)

    def log(self, kind, record):  # type: ignore[no-untyped-def]
        if record.step == 6:
            full["on"] = True
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_log(self, kind, record)

    monkeypatch.setattr(run_module, "write_text_atomic", write_text_atomic)
    monkeypatch.setattr(Run, "log", log)
    args = ["train", XOR, "--set", "train.steps=20", "--set", "train.log_every=1", "-q"]
    result = fails(1, *args, "--out", "run")
    assert re.search(r"error: cannot write run/metrics\.(jsonl|csv).*: No space left on device", result.output)
    summary = info(tmp_path / "run")
    assert summary["status"] == "failed" and "No space left" in summary["message"]
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]

    # and where even that does not fit, it says so plainly
    full["on"] = False
    monkeypatch.setattr(run_module, "overwrite_in_place", lambda path, text: False)
    result = fails(1, *args, "--out", "run2")
    assert "the run's end (failed) could not be recorded in run2/run.json: No space left on device" in result.output
    assert status(tmp_path / "run2") == "running"
    assert "interrupted: killed:" in ok("report", "run2", "--no-plots").output


# ------------------------------------------------------------------ paths on the command line


LONG_NAME = "n" * 300


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", XOR, "--out", LONG_NAME], "has 300 characters; at most 255 fit here"),
        (["train", XOR, "--out", f"runs/{LONG_NAME}/x"], "has 300 characters"),
        (["train", XOR, "--out", "a\0b"], "contains a NUL byte"),
        (["train", "a\0b.yaml"], "contains a NUL byte"),
        (["validate", "~nosuchuser/x.yaml"], "there is no user 'nosuchuser'"),
        (["train", XOR, "--out", "~nosuchuser/x"], "there is no user 'nosuchuser' (a leading ~ names a home folder"),
        (["eval", XOR, "--checkpoint", "c\0.npz"], "contains a NUL byte"),
        (["report", "r\0"], "contains a NUL byte"),
        (["report", "~nosuchuser/run"], "there is no user 'nosuchuser'"),
        (["report", LONG_NAME], "has 300 characters"),
        (["graph", XOR, "--output", "~nosuchuser/g.md"], "there is no user 'nosuchuser'"),
    ],
)
def test_a_bad_path_is_a_usage_error(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fails(2, *args)
    assert message in result.output
    assert list(tmp_path.iterdir()) == []


def test_an_out_through_a_file_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("mine")
    result = fails(2, "train", XOR, "--out", "taken/run")
    assert "cannot use taken/run: a part of it is a file, not a folder" in result.output
    assert (tmp_path / "taken").read_text() == "mine"


def test_a_home_folder_path_is_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    ok("train", XOR, "--out", "~/run", "--set", "train.steps=3", "-q")
    assert status(tmp_path / "run") == "completed"
    assert re.search(r"^status +completed$", ok("report", "~/run", "--no-plots").output, re.M)


def test_run_json_and_spec_files_are_written_under_unique_temporary_names(tmp_path, monkeypatch):
    # Caught a bug: run.json went through a fixed ".run.json.tmp", so two writers crashed on each
    # other's temporary file.
    monkeypatch.chdir(tmp_path)
    made: list[str] = []
    real = rundir.tempfile.mkstemp

    def mkstemp(*args, **kwargs):  # type: ignore[no-untyped-def]
        fd, name = real(*args, **kwargs)
        made.append(os.path.basename(name))
        return fd, name

    monkeypatch.setattr(rundir.tempfile, "mkstemp", mkstemp)
    ok("train", XOR, "--out", "run", "--set", "train.steps=3", "-q")
    assert made and len(set(made)) == len(made)
    assert {n.split(".tmp")[0].rsplit(".", 1)[0] for n in made} >= {".run.json", ".spec.yaml", ".spec.json"}
    assert json.loads((tmp_path / "run/run.json").read_text())["status"] == "completed"


def test_a_resume_removes_what_writers_killed_mid_write_left_behind(tmp_path, monkeypatch):
    # SIGKILL during an atomic write leaves its temporary file; the next holder of the lock clears
    # them (no live writer can own one) and keeps every real file.
    monkeypatch.chdir(tmp_path)
    ok("train", XOR, "--out", "run", "--set", "train.steps=4", "-q")
    leftovers = [
        tmp_path / "run" / ".run.json.ab12cd.tmp",
        tmp_path / "run" / ".metrics.jsonl.x1y2.tmp",
        tmp_path / "run" / "checkpoints" / ".last.npz.q9w8.tmp",
    ]
    for stale in leftovers:
        stale.write_text("half a write")
    ok("train", XOR, "--out", "run", "--resume", "--set", "train.steps=6", "-q")
    assert not any(p.exists() for p in leftovers)
    assert status(tmp_path / "run") == "completed" and (tmp_path / "run/checkpoints/last.npz").exists()


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_while_the_command_imports_exits_130(tmp_path, sig):
    # The signal lands after the package is imported but before click and the engine are: the
    # moment that used to give a KeyboardInterrupt traceback (SIGINT) or exit 143 (SIGTERM).
    code = (
        "import os, signal, time; import onlytorch_cli; "
        f"os.kill(os.getpid(), {int(sig)}); time.sleep(5); "
        "from onlytorch_cli.main import cli; cli()"
    )
    proc = subprocess.run(
        [CLI_CMD[0], "-c", code, "train", XOR, "--out", "run"],
        cwd=tmp_path,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 130, proc.stderr
    assert proc.stderr.strip() == "interrupted" and "Traceback" not in proc.stderr
    assert not (tmp_path / "run").exists()
