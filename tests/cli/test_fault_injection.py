"""Fault injection: SIGKILL a run, and the resumes that continue it, at random (seeded) moments;
then resume to the end. The run must end bit for bit where an uninterrupted run ends, and its
metrics log must never lose or tear a completed row: after every kill the log is a prefix of the
uninterrupted run's log (every row of every step up to the last checkpoint included) plus at most
one torn last line, and at the end it is that log exactly, with metrics.csv the same rows.

Also: kills at random moments inside a resume's cut of a long log (in a forked child, so that many
fit in a few seconds), failures in the middle of the cut, and the rules of the cut itself."""

from __future__ import annotations

import csv
import errno
import json
import os
import pathlib
import random
import signal
import subprocess
import time
from typing import Any

import pytest

from onlytorch import metrics_log
from onlytorch.compile import compile_file
from onlytorch.run import Run
from onlytorch.train import Trainer

from . import CLI_CMD, SUBPROCESS_ENV, assert_same_state, checkpoint, info, spec, without_time

TIMEOUT = 90  # seconds for one subprocess: far more than any of these takes, even on a busy machine

# name -> (steps, overrides): a log row every step, a checkpoint every few steps (so that a kill
# leaves rows past the checkpoint), evaluations in between
CASES = {
    "xor": (150, ["data.train.n=64", "train.checkpoint_every=3", "train.eval_every=10"]),
    "gan_ring": (
        40,
        [
            "data.train.n=256",
            "data.batch_size=64",
            "eval.samples.n=64",
            "train.checkpoint_every=2",
            "train.eval_every=5",
        ],
    ),
}


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def launch(tmp_path: pathlib.Path, args: list[str], name: str) -> subprocess.Popen[bytes]:
    # stderr to a file: a pipe nobody reads could block the run
    with open(tmp_path / f"{name}.stderr", "wb") as err:
        return subprocess.Popen(
            [*CLI_CMD, *args], cwd=tmp_path, env=SUBPROCESS_ENV, stdout=subprocess.DEVNULL, stderr=err
        )


def finish(proc: subprocess.Popen[bytes], tmp_path: pathlib.Path, name: str) -> None:
    try:
        code = proc.wait(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = (tmp_path / f"{name}.stderr").read_text(errors="replace")
    assert code == 0, (name, code, stderr)
    assert "Traceback" not in stderr, stderr


def kill(proc: subprocess.Popen[bytes]) -> bool:
    """SIGKILL; False if the process had already ended by itself."""
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=TIMEOUT)
    return proc.returncode == -signal.SIGKILL


def logged_steps(run_dir: pathlib.Path) -> int:
    """The step of the last complete row of the log (0: none yet)."""
    try:
        text = (run_dir / metrics_log.LOG).read_text(errors="replace")
    except FileNotFoundError:
        return 0
    lines = text.split("\n")[:-1]
    return json.loads(lines[-1])["step"] if lines else 0


def wait_for(proc: subprocess.Popen[bytes], condition: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while proc.poll() is None and not condition():
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.002)


def log_stat(run_dir: pathlib.Path) -> tuple[int, int, int] | None:
    try:
        st = (run_dir / metrics_log.LOG).stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


def cutting(run_dir: pathlib.Path) -> bool:
    """A resume is replacing the log: its temporary file exists."""
    return any(p.name.startswith(".metrics.jsonl.") for p in run_dir.iterdir())


def snapshot(run_dir: pathlib.Path) -> tuple[str, int]:
    """The log as a kill left it, and the step of the checkpoint a resume continues from."""
    text = (run_dir / metrics_log.LOG).read_text(errors="replace") if (run_dir / metrics_log.LOG).exists() else ""
    return text, int(checkpoint(run_dir / "checkpoints/last.npz")["meta/step"])


def assert_log_is_a_prefix(text: str, step: int, reference: list[dict[str, Any]], when: str) -> None:
    """What a kill may leave: complete rows that begin the reference log, every row up to the
    checkpoint's ``step`` among them, and at most one torn line, the last."""
    *lines, _torn = text.split("\n")
    rows = []
    for i, line in enumerate(lines, 1):
        try:
            rows.append(without_time(json.loads(line)))
        except ValueError:
            raise AssertionError(f"{when}: line {i} of {len(lines)} is torn: {line[:80]!r}") from None
    assert rows == reference[: len(rows)], f"{when}: the log is not a prefix of the uninterrupted run's log"
    kept = sum(1 for r in reference if r["step"] <= step)
    assert len(rows) >= kept, f"{when}: {kept - len(rows)} rows at or before the checkpoint's step {step} are lost"


def assert_table_matches_log(run_dir: pathlib.Path) -> None:
    rows = [json.loads(line) for line in (run_dir / metrics_log.LOG).read_text().splitlines()]
    with open(run_dir / metrics_log.TABLE, newline="", encoding="utf-8") as fh:
        header, *body = list(csv.reader(fh))
    assert header == list(dict.fromkeys(k for r in rows for k in r))
    assert body == [["" if r.get(k) is None else str(r[k]) for k in header] for r in rows]


# the moments the resumes after the first kill are killed at (each process costs a start-up)
@pytest.mark.parametrize(
    ("name", "seed", "moments"), [("xor", 0, ("cut", "start-up")), ("gan_ring", 1, ("training", "cut"))]
)
def test_runs_killed_at_random_moments_resume_bit_for_bit(name, seed, moments, tmp_path):
    steps, overrides = CASES[name]
    rng = random.Random(seed)
    args = ["train", spec(name), "-q", "--set", f"train.steps={steps}", "--set", "train.log_every=1", *sets(overrides)]
    reference = launch(tmp_path, [*args, "--out", "ref"], "ref")
    run = tmp_path / "run"

    # 1. the first process, killed at a random step well into the run
    victim = launch(tmp_path, [*args, "--out", "run"], "run-0")
    target = rng.randint(steps // 6, steps // 3)
    wait_for(victim, lambda: logged_steps(run) >= target)
    time.sleep(rng.uniform(0, 0.02))
    assert kill(victim), "the run ended before it was killed"
    snapshots = [("killed while training", *snapshot(run))]

    # 2. resumes killed: at a random moment of their start-up (imports, loading the checkpoint,
    # cutting the log back, the first steps), the moment one is seen replacing the log (or at the
    # first change to the log, when the cut was too quick to see), or at a random later step
    args_of = {"start-up": rng.uniform(0.0, 1.5), "cut": None, "training": rng.randint(steps // 2, 4 * steps // 5)}
    for i, moment in enumerate(moments, 1):
        arg = args_of[moment]
        before = log_stat(run)
        victim = launch(tmp_path, [*args, "--out", "run", "--resume"], f"run-{i}")
        if moment == "start-up":
            deadline = time.monotonic() + arg
            wait_for(victim, lambda: time.monotonic() >= deadline)  # noqa: B023
        elif moment == "cut":
            wait_for(victim, lambda: cutting(run) or log_stat(run) != before)  # noqa: B023
        else:
            wait_for(victim, lambda: logged_steps(run) >= arg)  # noqa: B023
            time.sleep(rng.uniform(0, 0.02))
        kill(victim)
        snapshots.append((f"a resume killed during {moment}", *snapshot(run)))

    # 3. the last resume runs to the end
    finish(launch(tmp_path, [*args, "--out", "run", "--resume"], "run-last"), tmp_path, "run-last")
    finish(reference, tmp_path, "ref")

    ref_rows = [
        without_time(json.loads(line)) for line in (tmp_path / "ref" / metrics_log.LOG).read_text().splitlines()
    ]
    for when, text, at in snapshots:
        assert_log_is_a_prefix(text, at, ref_rows, when)
    text = (run / metrics_log.LOG).read_text()
    assert text.endswith("\n")
    assert_log_is_a_prefix(text, steps, ref_rows, "at the end")
    rows = [json.loads(line) for line in text.splitlines()]
    assert [without_time(r) for r in rows] == ref_rows
    assert len({(r["step"], r["kind"]) for r in rows}) == len(rows)
    assert_table_matches_log(run)
    assert not [p.name for p in run.iterdir() if p.name.startswith(".metrics.")]

    assert_same_state(tmp_path / "ref/checkpoints/last.npz", run / "checkpoints/last.npz")
    for extra in ("checkpoints/best.npz", "samples.npz"):
        assert (tmp_path / "ref" / extra).exists() == (run / extra).exists(), extra
        if (run / extra).exists():
            assert_same_state(tmp_path / "ref" / extra, run / extra)
    summary = info(run)
    assert summary["status"] == "completed" and summary["steps_done"] == steps
    assert summary["best"] == info(tmp_path / "ref")["best"]


# ------------------------------------------------------------------ kills inside the cut


@pytest.fixture
def xor_run(tmp_path: pathlib.Path) -> Run:
    compiled, report = compile_file(spec("xor"))
    assert compiled is not None, report.render()
    return Run(tmp_path / "run", compiled, Trainer(compiled), spec("xor"), [])


def long_log(kept: int, past: int) -> tuple[str, str]:
    """A log of ``kept`` rows at or before step ``kept`` and ``past`` rows after it, ending in a
    torn line (a process killed while appending), and the log cut back to step ``kept``."""

    def line(step: int, kind: str) -> str:
        values = {"fit/loss": 1.0 / step, "train/accuracy": (step % 7) / 7, "lr/opt": 0.05, "time": step * 1e-3}
        if kind == "eval":
            values = {"eval/accuracy": (step % 5) / 5, "eval/loss": 2.0 / step}
        return metrics_log.row_line({"step": step, "kind": kind, **values})

    def rows(first: int, last: int) -> str:
        return "".join(line(s, "train") + (line(s, "eval") if s % 10 == 0 else "") for s in range(first, last + 1))

    cut = rows(1, kept)
    return cut + rows(kept + 1, kept + past) + line(kept + past + 1, "train")[:40], cut


def in_child(body: Any) -> int:
    """Run ``body`` in a forked child (which never returns into pytest); its pid."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        code = 0
        try:
            body()
        except BaseException:
            import traceback

            traceback.print_exc()
            code = 1
        os._exit(code)
    return pid


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("seed", [0, 1])
def test_a_resume_killed_while_cutting_a_long_log_loses_no_row(xor_run, seed):
    run, rng = xor_run, random.Random(seed)
    run.path.mkdir()
    log, table = run.path / metrics_log.LOG, run.path / metrics_log.TABLE
    kept = 2_000
    original, cut = long_log(kept=kept, past=500)
    expected_rows = [json.loads(line) for line in cut.splitlines()]
    columns = list(metrics_log.table_columns(expected_rows))
    old_table = metrics_log.table_text(columns, expected_rows[:5])
    new_table = metrics_log.table_text(columns, expected_rows)
    run.trainer.step = kept  # the step of the checkpoint the resume continues from

    def restore() -> None:
        log.write_text(original)
        table.write_text(old_table)

    # how long one whole resume start takes here, so that the kills below land all over it
    restore()
    t0 = time.perf_counter()
    _, status = os.waitpid(in_child(lambda: run.start(resume=True)), 0)
    duration = time.perf_counter() - t0
    assert os.waitstatus_to_exitcode(status) == 0
    assert log.read_text() == cut and table.read_bytes().decode() == new_table

    # Half the kills land anywhere in the start; the others just after the temporary file that
    # replaces the log appears (writing it, syncing it, renaming it: the moments that matter).
    inside = 0
    for i in range(8):
        restore()
        # what an earlier kill left (the child's start removes it) is not this child's temporary file
        left = {n for n in os.listdir(run.path) if n.startswith(".metrics.jsonl.")}
        pid, status = in_child(lambda: run.start(resume=True)), None
        if i % 2:
            deadline = time.monotonic() + 10 * duration + 5
            while status is None and not {n for n in os.listdir(run.path) if n.startswith(".metrics.jsonl.")} - left:
                done, code = os.waitpid(pid, os.WNOHANG)
                status = code if done else None
                assert time.monotonic() < deadline, "the resume neither replaced the log nor ended"
            # at once or up to 2 ms later: on a fast disk the whole write, sync and rename takes
            # less than a millisecond, so only the immediate kills are sure to land inside it
            time.sleep(0 if i % 4 == 1 else rng.uniform(0, 0.002))
        else:
            time.sleep(rng.uniform(0, duration))
        if status is None:  # still running (or a zombie not reaped yet)
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) in (0, -signal.SIGKILL)
        now = log.read_text()
        assert now in (original, cut), "the log is neither the old one nor the cut one"
        assert table.read_bytes().decode() in (old_table, new_table)
        inside += bool({n for n in os.listdir(run.path) if n.startswith(".metrics.jsonl.")} - left)
    assert inside, "no kill landed while the log was being replaced: the test tests nothing"

    # whatever a kill left (temporary files included), the next resume finishes the cut
    run.start(resume=True)
    assert log.read_text() == cut and table.read_bytes().decode() == new_table
    assert run.rows == expected_rows
    assert_table_matches_log(run.path)
    assert not [p.name for p in run.path.iterdir() if p.name.startswith(".metrics.")]


def test_a_failure_in_the_middle_of_the_cut_leaves_the_old_log(xor_run, monkeypatch):
    run = xor_run
    run.path.mkdir()
    log, table = run.path / metrics_log.LOG, run.path / metrics_log.TABLE
    original, cut = long_log(kept=50, past=20)
    log.write_text(original)
    table.write_text("step,kind\r\n1,train\r\n")
    run.trainer.step = 50
    replace, fdopen = os.replace, os.fdopen

    def failing_replace(src: Any, dst: Any) -> None:
        if pathlib.Path(dst).name in (metrics_log.LOG, metrics_log.TABLE):
            raise OSError(errno.EIO, "simulated I/O error")
        replace(src, dst)

    class HalfWriter:
        """A file that takes half of what is written, then finds the disk full."""

        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def write(self, text: str) -> int:
            self.fh.write(text[: len(text) // 2])
            self.fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.fh, name)

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: Any) -> None:
            self.fh.close()

    def half_fdopen(fd: int, *a: Any, **k: Any) -> Any:
        return HalfWriter(fdopen(fd, *a, **k))

    for patch in (("replace", failing_replace), ("fdopen", half_fdopen)):
        with monkeypatch.context() as m:
            m.setattr(os, *patch)
            with pytest.raises(OSError):
                run.start(resume=True)
        assert log.read_text() == original, patch[0]
        assert table.read_bytes().decode() == "step,kind\r\n1,train\r\n", patch[0]
        assert not [p.name for p in run.path.iterdir() if p.name.endswith(".tmp")], patch[0]
    run.start(resume=True)
    assert log.read_text() == cut


def test_the_cut_drops_rows_past_the_checkpoint_and_a_torn_line_and_keeps_the_rest(tmp_path):
    log = tmp_path / metrics_log.LOG
    rows = [{"step": s, "kind": "train", "loss": 1.0 / s} for s in range(1, 6)]
    lines = [json.dumps(r) + "\n" for r in rows]
    # a damaged line (not written by onlytorch as it stands) stays where it is, and is not a row
    damaged = "#garbage\n" + "[" * 100_000 + "\n" + '"a string"\n{"step": "2"}\n'
    log.write_text(lines[0] + lines[1] + damaged + lines[2] + lines[3] + "#x\n" + lines[4] + '{"step": 6, "ki')
    kept = metrics_log.cut_to(tmp_path, 3)
    assert kept == rows[:3]
    assert log.read_text() == lines[0] + lines[1] + damaged + lines[2]
    # rows are kept whatever their order: never one at or before the step
    log.write_text(lines[0] + lines[4] + lines[2])
    assert metrics_log.cut_to(tmp_path, 3) == [rows[0], rows[2]]
    assert log.read_text() == lines[0] + lines[2]
    # a complete row whose newline was not written yet is torn too (it will be logged again)
    log.write_text(lines[0] + lines[1].rstrip("\n"))
    assert metrics_log.cut_to(tmp_path, 5) == [rows[0]]
    assert log.read_text() == lines[0]
    # nothing to drop: the file is left alone (not even rewritten)
    log.write_text(lines[0] + lines[1])
    before = log.stat()
    time.sleep(0.01)
    assert metrics_log.cut_to(tmp_path, 5) == rows[:2]
    after = log.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # no log at all
    log.unlink()
    assert metrics_log.cut_to(tmp_path, 5) == [] and not log.exists()


def test_each_row_is_appended_with_one_write_of_a_whole_line(xor_run, monkeypatch):
    from onlytorch.train import Record

    run = xor_run
    run.start(resume=False)
    writes: list[bytes] = []
    write = os.write

    def recording(fd: int, data: Any) -> int:
        writes.append(bytes(data))
        return write(fd, data)

    monkeypatch.setattr(os, "write", recording)
    run.log("train", Record(1, {"fit/loss": 0.5, "time": 0.1}))  # the first row: writes the table whole
    writes.clear()
    run.log("train", Record(2, {"fit/loss": 0.25, "time": 0.2}))
    assert writes == [
        b'{"step": 2, "kind": "train", "fit/loss": 0.25, "time": 0.2}\n',
        b"2,train,0.25,0.2\r\n",
    ]
    assert_table_matches_log(run.path)


def test_a_resume_rebuilds_a_torn_table_from_the_log(xor_run):
    # The final evaluation is logged after the last checkpoint: a kill can tear its table line
    # while the log already holds the row. The resume at the last step keeps the row and mends the table.
    run = xor_run
    run.path.mkdir()
    rows = [{"step": 1, "kind": "train", "fit/loss": 0.5}, {"step": 1, "kind": "eval", "eval/accuracy": 1.0}]
    (run.path / metrics_log.LOG).write_text("".join(metrics_log.row_line(r) for r in rows))
    (run.path / metrics_log.TABLE).write_text("step,kind,fit/loss\r\n1,train,0.5\r\n1,ev")
    run.trainer.step = 1
    run.start(resume=True)
    assert run.rows == rows
    assert_table_matches_log(run.path)
