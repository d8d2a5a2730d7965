"""Resuming a run continues exactly as the uninterrupted run would have: 2N steps in one go and N
steps resumed for N more end with the same parameters, optimizer, schedule, RNG and data state to
the last bit. Also: refusing a changed spec (unless --force), usage errors, and interruption by
SIGINT/SIGTERM (exit 130, a checkpoint at an iteration boundary, a resumable run)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import time

import pytest

from onlytorch.train import Trainer

from . import (
    CLI_CMD,
    SUBPROCESS_ENV,
    assert_same_state,
    checkpoint,
    clean,
    fails,
    info,
    invoke,
    ok,
    rows,
    spec,
    without_time,
)

# name -> (N, overrides): each crosses what makes its resume delicate
CASES = {
    "xor": (10, ["data.train.n=64"]),  # several epochs of shuffled batches
    "digits": (4, ["data.batch_size=512"]),  # dropout, shuffling across epochs, a cosine schedule
    "gan_ring": (5, ["data.train.n=512"]),  # noise, two phases, a detach
    "wgan_gp": (2, ["data.train.n=1024"]),  # repeat 5 (a new batch each), grad penalty
    "multitask": (6, ["data.train.n=256"]),  # retain_graph
    "tbptt_sine": (13, ["data.train.n=64"]),  # windows + carry: 13 is not a multiple of the 10 windows
}


def sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


@pytest.mark.parametrize("name", sorted(CASES))
def test_resume_is_bit_exact(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n, overrides = CASES[name]
    base = ["train", spec(name), "-q", *sets(overrides), "--set", "train.log_every=1"]
    ok(*base, "--out", "full", "--set", f"train.steps={2 * n}")
    ok(*base, "--out", "half", "--set", f"train.steps={n}")
    assert int(checkpoint(tmp_path / "half/checkpoints/last.npz")["meta/step"]) == n
    started = info(tmp_path / "half")["started"]
    result = ok(*base, "--out", "half", "--resume", "--set", f"train.steps={2 * n}")
    assert f"resuming at step {n}" not in result.output  # -q
    assert_same_state(tmp_path / "full/checkpoints/last.npz", tmp_path / "half/checkpoints/last.npz")
    state = checkpoint(tmp_path / "half/checkpoints/last.npz")
    assert int(state["meta/step"]) == 2 * n
    assert any(k.startswith("opt/") for k in state) and any(k.startswith("rng/") for k in state)
    if name == "digits":
        assert any(k.startswith("sched/") for k in state)
    if name == "tbptt_sine":
        assert int(state["meta/window"]) == (2 * n) % 10 and "carry/h0" in state

    # the metrics log: every step once, the same values as the uninterrupted run's
    log = rows(tmp_path / "half")
    assert len({(r["step"], r["kind"]) for r in log}) == len(log)
    full_train = [without_time(r) for r in rows(tmp_path / "full") if r["kind"] == "train"]
    assert [without_time(r) for r in log if r["kind"] == "train"] == full_train
    summary = info(tmp_path / "half")
    assert summary["status"] == "completed" and summary["steps_done"] == 2 * n and summary["started"] == started


@pytest.mark.parametrize("name", ["xor", "gan_ring"])
def test_generated_code_changes_no_bit_of_a_run_nor_of_its_resume(name, tmp_path, monkeypatch):
    # Plans switch to straight-line code after codegen.HOT_RUNS runs: here mid-run, at a
    # different step in the resumed process than in the uninterrupted one, and never in "loops".
    from onlytorch import codegen

    monkeypatch.chdir(tmp_path)
    n, overrides = CASES[name]
    base = ["train", spec(name), "-q", *sets(overrides), "--set", "train.log_every=1"]
    monkeypatch.setattr(codegen, "HOT_RUNS", 10**9)
    ok(*base, "--out", "loops", "--set", f"train.steps={2 * n}")
    monkeypatch.setattr(codegen, "HOT_RUNS", 3)
    built: list[int] = []
    build = codegen._build
    monkeypatch.setattr(codegen, "_build", lambda *a, **k: built.append(1) or build(*a, **k))
    ok(*base, "--out", "full", "--set", f"train.steps={2 * n}")
    assert built, "no plan ran often enough to be turned into code"
    ok(*base, "--out", "half", "--set", f"train.steps={n}")
    ok(*base, "--out", "half", "--resume", "--set", f"train.steps={2 * n}")
    assert_same_state(tmp_path / "loops/checkpoints/last.npz", tmp_path / "full/checkpoints/last.npz")
    assert_same_state(tmp_path / "full/checkpoints/last.npz", tmp_path / "half/checkpoints/last.npz")
    full_train = [without_time(r) for r in rows(tmp_path / "full") if r["kind"] == "train"]
    assert [without_time(r) for r in rows(tmp_path / "loops") if r["kind"] == "train"] == full_train


def test_resume_prints_where_it_continues(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=5", "-q")
    result = ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=8")
    assert "resuming at step 5, 8 steps -> run" in result.output


def test_resuming_a_finished_run_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=10", "-q")
    before = rows(tmp_path / "run")
    params = {k: v for k, v in checkpoint(tmp_path / "run/checkpoints/last.npz").items() if k.startswith("param/")}
    ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=10", "-q")
    assert rows(tmp_path / "run") == before
    after = checkpoint(tmp_path / "run/checkpoints/last.npz")
    assert all(after[k].tobytes() == v.tobytes() for k, v in params.items())


def test_resume_with_a_changed_spec_is_refused_unless_forced(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=5", "-q")
    saved = (tmp_path / "run/checkpoints/last.npz").read_bytes()
    result = fails(
        2, "train", spec("xor"), "--out", "run", "--resume", "--set", "optimizers.opt.lr=0.01", "--set", "seed=2"
    )
    assert "the spec changed" in result.output
    assert "optimizers.opt.lr: 0.05 -> 0.01" in result.output and "seed: 0 -> 2" in result.output
    assert "--force" in result.output
    assert (tmp_path / "run/checkpoints/last.npz").read_bytes() == saved
    assert info(tmp_path / "run")["status"] == "completed"
    # train.steps (and the other RESUMABLE_CHANGES) are no change
    ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=7", "--set", "train.log_every=2", "-q")
    ok(
        "train",
        spec("xor"),
        "--out",
        "run",
        "--resume",
        "--set",
        "optimizers.opt.lr=0.01",
        "--set",
        "train.steps=9",
        "--force",
        "-q",
    )
    assert info(tmp_path / "run")["steps_done"] == 9
    assert json.loads((tmp_path / "run/spec.json").read_text())["optimizers"]["opt"]["lr"] == 0.01


def test_resume_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fails(2, "train", spec("xor"), "--resume")
    assert "--resume needs --out" in result.output
    (tmp_path / "empty").mkdir()
    result = fails(2, "train", spec("xor"), "--resume", "--out", "empty")
    assert "holds no checkpoint" in result.output
    result = fails(2, "train", spec("xor"), "--resume", "--out", "nowhere")
    assert "holds no checkpoint" in result.output
    assert not (tmp_path / "nowhere").exists()


def test_resume_from_a_corrupt_checkpoint_is_a_clear_error(tmp_path, monkeypatch):
    # Caught a bug: a truncated last.npz escaped as a zipfile.BadZipFile traceback.
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=5", "-q")
    last = tmp_path / "run/checkpoints/last.npz"
    last.write_bytes(last.read_bytes()[:1000])
    result = fails(2, "train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=10")
    assert "cannot resume" in result.output and "last.npz" in result.output


def test_resume_without_run_json(tmp_path, monkeypatch):
    # Caught a bug: a run whose run.json was lost could not be resumed ("cannot write the run
    # directory: No such file"), although its checkpoint holds everything needed.
    monkeypatch.chdir(tmp_path)
    ok("train", spec("xor"), "--out", "full", "--set", "train.steps=10", "-q")
    ok("train", spec("xor"), "--out", "run", "--set", "train.steps=5", "-q")
    (tmp_path / "run/run.json").unlink()
    ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=10", "-q")
    assert info(tmp_path / "run")["status"] == "completed"
    assert_same_state(tmp_path / "full/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")


# ------------------------------------------------------------------ interruption


def signal_during_phase(monkeypatch, phase: str, step: int, times: int = 1) -> None:
    """Deliver SIGINT to this process during `phase` of iteration `step`: mid-iteration."""
    original = Trainer._run_phase

    def run_phase(self, info):  # type: ignore[no-untyped-def]
        if info.name == phase and self.step + 1 == step:
            for _ in range(times):
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.01)  # let the handler run
        return original(self, info)

    monkeypatch.setattr(Trainer, "_run_phase", run_phase)


def test_a_signal_mid_iteration_stops_at_the_iteration_boundary(tmp_path, monkeypatch):
    # Caught a bug: the signal handler raised KeyboardInterrupt wherever it landed, so a Ctrl-C
    # during the generator phase checkpointed a half-done iteration (the discriminator stepped,
    # the batch taken, the step counter not advanced) and the resumed run was not the same run.
    monkeypatch.chdir(tmp_path)
    args = ["train", spec("gan_ring"), "-q", "--set", "data.train.n=512"]
    ok(*args, "--out", "ref", "--set", "train.steps=6")
    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with monkeypatch.context() as m:
        signal_during_phase(m, "generator", step=3)
        result = invoke(*args, "--out", "run", "--set", "train.steps=100")
    clean(result)
    assert result.exit_code == 130, result.output
    assert "interrupted at step 3" in result.output
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 3
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers  # restored
    ok(*args, "--out", "run", "--resume", "--set", "train.steps=6")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")


def test_a_second_signal_stops_at_once_without_a_half_done_checkpoint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["train", spec("gan_ring"), "-q", "--set", "data.train.n=512"]
    ok(*args, "--out", "ref", "--set", "train.steps=5")
    with monkeypatch.context() as m:
        signal_during_phase(m, "generator", step=4, times=2)
        result = invoke(*args, "--out", "run", "--set", "train.steps=100", "--set", "train.checkpoint_every=1")
    clean(result)
    assert result.exit_code == 130, result.output
    assert "interrupted twice" in result.output and "--resume" in result.output
    assert info(tmp_path / "run")["status"] == "interrupted"
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 3  # the last whole step
    ok(*args, "--out", "run", "--resume", "--set", "train.steps=5")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupted_subprocess_resumes_bit_exactly(sig, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sets_ = ["--set", "data.train.n=512", "--set", "train.log_every=5"]
    proc = subprocess.Popen(
        [*CLI_CMD, "train", spec("gan_ring"), "--out", "run", "--set", "train.steps=1000000", *sets_],
        cwd=tmp_path,
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "run/metrics.jsonl").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the run never started logging"
            time.sleep(0.02)
        time.sleep(0.1)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (out, err)
    assert "Traceback" not in out + err
    match = [line for line in err.splitlines() if line.startswith("interrupted at step")]
    assert match, err
    summary = info(tmp_path / "run")
    k = summary["steps_done"]
    assert summary["status"] == "interrupted" and k > 0 and f"interrupted at step {k};" in match[0]
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == k
    assert max(r["step"] for r in rows(tmp_path / "run")) <= k

    # the printed command continues the run (with its overrides); run it for a few more steps
    command = match[0].split("continue with: ", 1)[1]
    argv = shlex.split(command)
    assert argv[:2] == ["onlytorch", "train"] and "--resume" in argv and "train.steps=1000000" in argv
    ok(*argv[1:], "--set", f"train.steps={k + 4}", "-q")
    assert info(tmp_path / "run")["status"] == "completed"
    ok("train", spec("gan_ring"), "--out", "ref", "--set", f"train.steps={k + 4}", *sets_, "-q")
    assert_same_state(tmp_path / "ref/checkpoints/last.npz", tmp_path / "run/checkpoints/last.npz")
    log = rows(tmp_path / "run")
    assert len({(r["step"], r["kind"]) for r in log}) == len(log)
