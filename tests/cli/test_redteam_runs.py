"""Regression tests of a red-team pass over run directories under signals, kills and failures:
signals during the interpreter's shutdown, a second signal while the first one ends the command,
an interruption inside a checkpoint's zip member, a ``.lock`` that is a symbolic link, a signal
just after the lock is taken, and write errors that name the file."""

from __future__ import annotations

import errno
import os
import pathlib
import signal
import subprocess
import zipfile

import numpy as np
import pytest
from onlytorch_cli import interrupts, train_cmd

from onlytorch import checkpoint as ckpt
from onlytorch.rundir import RunLock, target_of_temporary, write_text_atomic

from . import CLI_CMD, SUBPROCESS_ENV, clean, fails, info, invoke, spec

XOR = spec("xor")
SHORT = ["--set", "train.steps=5", "--set", "data.train.n=64", "-q"]


def test_the_command_ends_without_an_interpreter_shutdown(tmp_path):
    # A SIGTERM or second Ctrl-C arriving while Python wound down used to kill the process by the
    # signal (-15, -2): Python resets the handlers during its shutdown. The command now ends with
    # os._exit, so nothing runs after it (here: an atexit hook that would signal the process).
    code = (
        "import os, signal, atexit; "
        "atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM)); "
        "from onlytorch_cli.main import cli; cli()"
    )
    proc = subprocess.run(
        [CLI_CMD[0], "-c", code, "train", XOR, "--out", "run", *SHORT],
        cwd=tmp_path,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=90,
    )
    # the command ends with os._exit: atexit never runs, so the signal is never sent
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and info(tmp_path / "run")["status"] == "completed"


def test_a_second_signal_while_the_first_ends_the_command_is_not_aborted(monkeypatch):
    its = interrupts.Interrupts()
    with pytest.raises(KeyboardInterrupt):
        its._handler(signal.SIGINT, None)
    its._handler(signal.SIGINT, None)  # while the first one's ending runs: counted, never raised
    assert its.received == 2 and its.ending


def test_end_process_is_only_for_the_command_itself(monkeypatch):
    # in an application (or pytest) nothing is ended
    monkeypatch.setattr("onlytorch_cli.STANDALONE", False)
    assert interrupts.end_process(0) is None


@pytest.mark.parametrize("where", ["close", "write"])
def test_an_interruption_inside_a_zip_member_stays_an_interruption(where, tmp_path, monkeypatch, capfd):
    original = getattr(zipfile._ZipWriteFile, where)
    calls = {"n": 0}

    def cut(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(zipfile._ZipWriteFile, where, cut)
    with pytest.raises(KeyboardInterrupt):  # was: zipfile's ValueError ("Can't close the ZIP file ...")
        ckpt.save(tmp_path / "last.npz", {"a": np.zeros(1000), "b": np.ones(3)})
    import gc

    gc.collect()
    assert "Traceback" not in capfd.readouterr().err  # was: ZipFile.__del__ writing into a closed file
    assert list(tmp_path.iterdir()) == []


def test_checkpoints_are_what_np_savez_writes(tmp_path):
    arrays = {"a": np.arange(5), "meta/x": np.array("hi"), "b": np.zeros((2, 3), np.float32)}
    ckpt.save(tmp_path / "ours.npz", arrays)
    np.savez(tmp_path / "numpy.npz", **arrays)
    ours, theirs = zipfile.ZipFile(tmp_path / "ours.npz"), zipfile.ZipFile(tmp_path / "numpy.npz")
    assert [(i.filename, i.compress_type, i.file_size) for i in ours.infolist()] == [
        (i.filename, i.compress_type, i.file_size) for i in theirs.infolist()
    ]
    loaded = ckpt.load(tmp_path / "ours.npz")
    assert all(loaded[k].tobytes() == v.tobytes() and loaded[k].dtype == v.dtype for k, v in arrays.items())


def test_a_lock_that_is_a_symbolic_link_is_never_followed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    (tmp_path / "run").mkdir()
    (tmp_path / "run/.lock").symlink_to(target)
    result = fails(2, "train", XOR, "--out", "run", *SHORT)
    assert "run/.lock" in result.output
    assert target.read_text() == "keep me"  # was: truncated and overwritten with the pid


def test_a_signal_just_after_the_lock_is_taken_releases_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    original = RunLock.acquire

    def acquire_then_signal(self):  # type: ignore[no-untyped-def]
        lock = original(self)
        os.kill(os.getpid(), signal.SIGINT)
        return lock

    monkeypatch.setattr(RunLock, "acquire", acquire_then_signal)
    result = invoke("train", XOR, "--out", "run", *SHORT)
    clean(result)
    assert result.exit_code == 130, result.output
    assert not (tmp_path / "run").exists()  # was: the folder and its .lock left behind


def test_a_lock_that_cannot_be_written_leaves_no_empty_folder_and_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def full(self):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path))

    monkeypatch.setattr(RunLock, "acquire", full)
    result = fails(1, "train", XOR, "--out", "run", *SHORT)
    assert "run/.lock: No space left on device" in result.output
    assert not (tmp_path / "run").exists()


def test_a_read_only_folder_for_out_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def denied(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        raise PermissionError(errno.EACCES, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "mkdir", denied)
    result = fails(2, "train", XOR, "--out", "ro/run", *SHORT)
    assert "cannot use ro/run: you may not write there" in result.output


def test_write_errors_name_the_file_not_its_temporary(tmp_path, monkeypatch):
    def full(fd):  # type: ignore[no-untyped-def]
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:
        m.setattr(os, "fsync", full)
        with pytest.raises(OSError) as e:
            write_text_atomic(tmp_path / "run.json", "{}")
    assert e.value.filename == str(tmp_path / "run.json") and list(tmp_path.iterdir()) == []
    assert target_of_temporary("/r/checkpoints/.last.npz.mpy3e58h.tmp") == "/r/checkpoints/last.npz"
    assert target_of_temporary("/r/run.json") == "/r/run.json"
    message = train_cmd.failure_message(PermissionError(errno.EACCES, "Permission denied", "/r/.spec.json.ab12.tmp"))
    assert message == "/r/spec.json: Permission denied"


def test_a_full_disk_while_the_run_starts_names_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from onlytorch import rundir

    original = rundir.write_text_atomic

    def full_for_spec_json(path, text):  # type: ignore[no-untyped-def]
        if path.name == "spec.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(path, text)

    monkeypatch.setattr("onlytorch.run.write_text_atomic", full_for_spec_json)
    result = fails(1, "train", XOR, "--out", "run", *SHORT)
    assert "error: cannot write run/spec.json: No space left on device" in result.output
    assert not (tmp_path / "run/.lock").exists()


def test_a_second_signal_after_the_last_step_does_not_name_a_step_past_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    from onlytorch.evaluation import RunEvaluation

    original = RunEvaluation.evaluate

    def twice(self, step, final=None):  # type: ignore[no-untyped-def]
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)
        return original(self, step, final)

    monkeypatch.setattr(RunEvaluation, "evaluate", twice)
    result = invoke("train", XOR, "--out", "run", "--set", "train.eval_every=5", *SHORT)
    clean(result)
    assert result.exit_code == 130, result.output
    assert "interrupted twice after step 5" in result.output and "step 6" not in result.output
    assert info(tmp_path / "run")["status"] == "interrupted"


def test_a_metrics_log_that_is_a_symbolic_link_is_never_appended_to(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok_run = invoke("train", XOR, "--out", "run", *SHORT)
    assert ok_run.exit_code == 0, ok_run.output
    target = tmp_path / "precious.txt"
    log = tmp_path / "run/metrics.jsonl"
    target.write_bytes(log.read_bytes())  # the same rows: the resume's cut finds nothing to drop
    before = target.read_bytes()
    log.unlink()
    log.symlink_to(target)
    result = fails(
        1, "train", XOR, "--out", "run", "--resume", "--set", "train.steps=8", "--set", "data.train.n=64", "-q"
    )
    assert "run/metrics.jsonl: a symbolic link, which onlytorch never writes through" in result.output
    assert target.read_bytes() == before  # was: the resumed run's rows appended to the file it points to
    assert info(tmp_path / "run")["status"] == "failed"
