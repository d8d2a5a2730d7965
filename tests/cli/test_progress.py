"""What ``onlytorch train`` prints while it trains (cli/progress.py; docs/runs.md, "What train
prints"): on a terminal one tqdm line redrawn in place, checked here in a real pseudo-terminal;
off a terminal a line per train row with the same fields; every evaluation as a line; nothing with
--quiet; tqdm never imported to parse the command line. And a run killed mid-window (SIGKILL)
resumes into the log the uninterrupted run writes."""

from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time

from . import CLI_CMD, SUBPROCESS_ENV, checkpoint, info, ok, rows, spec, without_time


def run_in_a_terminal(args: list[str], cwd: os.PathLike[str]) -> tuple[str, str, int]:
    """The CLI with its stderr on a pseudo-terminal (160 columns): what the terminal received,
    the stdout, the exit code."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen(
        [*CLI_CMD, *args],
        cwd=cwd,
        env=SUBPROCESS_ENV,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=slave,
    )
    os.close(slave)
    received = b""
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed its end
                    break
                if not chunk:
                    break
                received += chunk
            elif proc.poll() is not None:
                break
        out, _ = proc.communicate(timeout=60)
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return received.decode("utf-8", "replace"), out.decode(), proc.returncode


def test_the_terminal_shows_one_line_redrawn_in_place(tmp_path):
    steps = 3000
    args = ["train", spec("xor"), "--out", "run", "--set", f"train.steps={steps}", "--set", "train.eval_every=1000"]
    screen, out, code = run_in_a_terminal(args, tmp_path)
    assert code == 0, screen + out
    assert "Traceback" not in screen
    # the evaluations: lines of their own, ended by a newline (the terminal's \r\n)
    evals = re.findall(r"eval step (\d+): eval/accuracy \S+  eval/loss \S+\r\n", screen)
    assert evals == ["1000", "2000", "3000"], screen
    # the bar: drawings of one line separated by carriage returns, not by newlines
    drawn = [d for d in re.split(r"[\r\n]+", screen) if d.startswith("step ")]
    assert len(drawn) >= 5, screen
    lines = screen.split("\n")
    bar_lines = [line for line in lines if re.search(r"\rstep \d+/", line)]
    assert len(bar_lines) <= len(evals) + 1, "the bar was printed as lines, not redrawn"
    assert max(line.count("\rstep ") for line in bar_lines) >= 2  # several drawings on one line
    # its fields: step/total, elapsed<left (ETA), the rate, the window's mean loss, the latest evaluation
    field = re.compile(
        r"^step (\d+)/3000 .*? (\d\d:\d\d)<(\d\d:\d\d|\?)  ([\d.?]+)it/s(?:, (.*))?$",
    )
    parsed = [m for m in map(field.match, drawn) if m]
    assert len(parsed) == len(drawn), [d for d in drawn if not field.match(d)]
    assert parsed[-1].group(1) == "3000"
    steps_seen = [int(m.group(1)) for m in parsed]
    assert steps_seen == sorted(steps_seen) and len(set(steps_seen)) >= 3
    mid = [m for m in parsed if 1000 < int(m.group(1)) < 3000 and m.group(3) != "?"]
    assert mid, drawn
    status = mid[-1].group(5)
    assert re.search(r"fit/loss [\d.e+-]+", status) and re.search(r"eval/accuracy [\d.]+  eval/loss [\d.e+-]+", status)
    assert float(mid[-1].group(4)) > 0
    # the run ended, its tables on stdout
    assert f"final training losses (step {steps})" in out and "run directory: run" in out


def test_off_a_terminal_each_train_row_is_a_line_with_the_same_fields(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok("train", spec("xor"), "--out", "run", "--set", "train.steps=60", "--set", "train.eval_every=20")
    lines = result.output.splitlines()
    log = [r for r in rows(tmp_path / "run")]
    train = [r for r in log if r["kind"] == "train"]
    shown = [line for line in lines if line.startswith("step ")]
    assert len(shown) == len(train) == 2  # log_every 50: rows at 50 and 60
    line = re.compile(
        r"^step (\d+)/60  elapsed \d+:\d\d  eta \d+:\d\d  fit/loss (\S+)  train/accuracy (\S+)"
        r"(?:  eval/accuracy (\S+)  eval/loss (\S+))?(?:  (\d+) it/s)?$"
    )
    for text, row in zip(shown, train):
        m = line.match(text)
        assert m, text
        assert int(m.group(1)) == row["step"]
        assert m.group(2) == f"{row['fit/loss']:.4g}" and m.group(3) == f"{row['train/accuracy']:.4g}"
        # the latest evaluation before the row: the one of step 40 (50) and 60's own comes after the row
        latest = [r for r in log if r["kind"] == "eval" and r["step"] < row["step"]][-1]
        assert m.group(4) == f"{latest['eval/accuracy']:.4g}" and m.group(5) == f"{latest['eval/loss']:.4g}"
    assert "it/s" not in shown[0] and shown[1].endswith(" it/s")
    # every evaluation, its own line, in the order of the log
    evals = [line for line in lines if line.startswith("eval step ")]
    logged = [r for r in log if r["kind"] == "eval"]
    assert [e.split(":")[0] for e in evals] == [f"eval step {r['step']}" for r in logged] and len(evals) == 3
    assert (
        evals[0]
        == f"eval step 20: eval/accuracy {logged[0]['eval/accuracy']:.4g}  eval/loss {logged[0]['eval/loss']:.4g}"
    )
    assert lines.index(evals[1]) < lines.index(shown[0])  # step 40's evaluation is said before step 50's row


def test_a_val_split_evaluation_is_shown_with_its_keys(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok(
        "train",
        spec("xor"),
        "--out",
        "run",
        "--set",
        "train.steps=20",
        "--set",
        "train.eval_every=10",
        "--set",
        "train.log_every=10",
        "--set",
        "data.val={from_split: train, fraction: 0.25}",
    )
    evals = [line for line in result.output.splitlines() if line.startswith("eval step ")]
    assert re.fullmatch(r"eval step 10: val/accuracy \S+  val/loss \S+", evals[0]), evals
    # the last evaluation adds eval.split's values
    assert re.fullmatch(r"eval step 20: val/accuracy \S+  val/loss \S+  eval/accuracy \S+  eval/loss \S+", evals[1])


def test_quiet_prints_neither_rows_nor_evaluations(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = ok("train", spec("xor"), "--out", "run", "--set", "train.steps=40", "--set", "train.eval_every=10", "-q")
    assert not [line for line in result.output.splitlines() if line.startswith(("step ", "eval step"))]
    assert "final training losses (step 40)" in result.output


def test_help_does_not_import_tqdm():
    code = (
        "import sys\n"
        "from onlytorch_cli.main import cli\n"
        "for args in (['--help'], ['train', '--help']):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print(sorted(m for m in sys.modules if m == 'tqdm' or m.startswith('tqdm.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "--out" in out.stdout and out.stdout.splitlines()[-1] == "[]", out.stdout


# A run of fit that kills itself (SIGKILL: nothing is saved at the end) at step 9; its last
# checkpoint is step 7's, in the middle of the window of steps 6 to 10 (log_every 5).
KILLED = """
import os, signal, sys
import onlytorch
def progress(step, values):
    if step == 9:
        os.kill(os.getpid(), signal.SIGKILL)
onlytorch.fit(sys.argv[1], "run", overrides=sys.argv[2:], on_progress=progress)
"""


def test_a_run_killed_mid_window_resumes_into_the_uninterrupted_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets = ["data.train.n=73", "data.batch_size=16", "train.log_every=5", "train.checkpoint_every=7"]
    proc = subprocess.run(
        [sys.executable, "-c", KILLED, spec("xor"), "train.steps=20", *sets],
        cwd=tmp_path,
        env=SUBPROCESS_ENV,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = checkpoint(tmp_path / "run/checkpoints/last.npz")
    assert int(state["meta/step"]) == 7 and list(state["logwin/names"]) == ["fit/loss", "train/accuracy"]
    assert [r["step"] for r in rows(tmp_path / "run")] == [5]  # the row of step 10 never came
    args = [a for s in sets for a in ("--set", s)]
    ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=20", *args, "-q")
    ok("train", spec("xor"), "--out", "full", "--set", "train.steps=20", *args, "-q")
    assert info(tmp_path / "run")["status"] == "completed"
    resumed, full = rows(tmp_path / "run"), rows(tmp_path / "full")
    assert [r["step"] for r in resumed if r["kind"] == "train"] == [5, 10, 15, 20]
    assert [without_time(r) for r in resumed] == [without_time(r) for r in full]
