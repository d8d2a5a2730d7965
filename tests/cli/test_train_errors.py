"""``onlytorch train`` when things go wrong: divergence (exit 3, naming step, phase and the first
bad node; the last good checkpoint kept), invalid specs and overrides (exit 2 with diagnostics),
missing or corrupt data, unwritable run directories, and checkpoint writes that fail halfway
(never a partial file). Never a traceback."""

from __future__ import annotations

import errno
import os
import pathlib
import textwrap

import numpy as np
import pytest

from onlytorch import checkpoint as ckpt
from onlytorch.compile import compile_file
from onlytorch.train import Trainer

from . import checkpoint, fails, info, ok, rows, spec

# A linear regression whose loss adds mean(log(x)): finite while x > 0. Batches of 8 in order
# (no shuffling); the data's rows 24..31 are negative, so the 4th step's loss is NaN.
DIVERGING = """\
version: 1
name: div
seed: 0
data:
  train: {source: file.npz, path: d.npz}
  batch_size: 8
  shuffle: false
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
nodes:
  lx: log(x)
losses:
  fit_loss: mse(net(x), y)
  loss: mse(net(x), y) + mean(lx)
optimizers:
  opt: {type: sgd, lr: 0.01, params: [net]}
train:
  steps: 10
  checkpoint_every: 1
  schedule:
"""
ONE_PHASE = """\
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""
TWO_PHASES = """\
    - name: warmup
      backward: [{loss: fit_loss}]
      step: [opt]
    - name: logs
      backward: [{loss: loss}]
      step: [opt]
"""


def write_data(folder: pathlib.Path) -> None:
    x = np.abs(np.random.default_rng(0).normal(size=(32, 2))).astype(np.float32) + 0.5
    x[24:] *= -1
    np.savez(folder / "d.npz", x=x, y=np.ones((32, 1), np.float32))


@pytest.mark.parametrize("schedule, phase", [(ONE_PHASE, "fit"), (TWO_PHASES, "logs")], ids=["one-phase", "two-phases"])
def test_divergence_exits_3_naming_step_phase_and_node(schedule, phase, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    (tmp_path / "div.yaml").write_text(DIVERGING + schedule)
    result = fails(3, "train", "div.yaml", "--out", "run", "--set", "train.log_every=1")
    assert f"diverged at step 4, phase '{phase}'" in result.output
    assert "loss 'loss' is nan" in result.output
    assert "the first node whose value went NaN/inf is 'lx'" in result.output
    assert "last good checkpoint is run/checkpoints/last.npz" in result.output
    summary = info(tmp_path / "run")
    assert summary["status"] == "diverged" and summary["steps_done"] == 3
    assert "step 4" in summary["message"] and "'lx'" in summary["message"]
    assert max(r["step"] for r in rows(tmp_path / "run")) == 3
    # the last good checkpoint: the step before, finite, and it loads into the spec
    state = checkpoint(tmp_path / "run/checkpoints/last.npz")
    assert int(state["meta/step"]) == 3
    assert all(np.isfinite(v).all() for k, v in state.items() if k.startswith("param/"))
    compiled, _ = compile_file(tmp_path / "div.yaml")
    trainer = Trainer(compiled)
    trainer.restore(ckpt.load(tmp_path / "run/checkpoints/last.npz"))
    assert trainer.step == 3
    # resuming runs into the same wall, at the same step
    result = fails(3, "train", "div.yaml", "--out", "run", "--resume")
    assert "diverged at step 4" in result.output


def test_a_huge_learning_rate_diverges(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec_text = textwrap.dedent("""\
        version: 1
        name: lr
        data:
          train: {source: synthetic.xor, n: 64, noise: 0.05}
          batch_size: 16
        inputs:
          x: {shape: [2], from: train.x}
          y: {shape: [1], from: train.y}
        modules:
          net: [{linear: 8}, {linear: 1}]
        losses:
          loss: mse(net(x), y)
        optimizers:
          opt: {type: sgd, lr: 1.0e+15, params: [net]}
        train:
          steps: 20
          schedule:
            - {name: fit, backward: [{loss: loss}], step: [opt]}
        """)
    (tmp_path / "lr.yaml").write_text(spec_text)
    result = fails(3, "train", "lr.yaml", "--out", "run")
    assert "diverged at step 2, phase 'fit'" in result.output
    assert "the first node whose value went NaN/inf is '" in result.output
    assert "no checkpoint was written before the divergence" in result.output
    assert info(tmp_path / "run")["status"] == "diverged"
    ok("train", "lr.yaml", "--out", "run2", "--set", "optimizers.opt.lr=0.01", "-q")


def test_a_non_finite_gradient_names_the_parameter(tmp_path, monkeypatch):
    # sqrt at 0: the loss is finite, its gradient is not. Caught a bug: the message said the
    # parameter's *value* had gone NaN/inf (first_nonfinite found nothing and fell back to it).
    monkeypatch.chdir(tmp_path)
    write_data(tmp_path)
    text = (DIVERGING + ONE_PHASE).replace("lx: log(x)", "z: net(x) * 0").replace("mean(lx)", "mean(sqrt(abs(z)))")
    (tmp_path / "g.yaml").write_text(text)
    result = fails(3, "train", "g.yaml", "--out", "run")
    assert "diverged at step 1, phase 'fit'" in result.output
    assert "the gradient of parameter 'net.0.weight' is not finite" in result.output
    assert "went NaN/inf in the backward pass" in result.output
    assert "whose value went NaN/inf is 'net.0.weight'" not in result.output


# ------------------------------------------------------------------ bad specs and overrides


def test_an_invalid_spec_exits_2_with_the_diagnostics(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = pathlib.Path(spec("xor")).read_text().replace("logits: net(x)", "logits: nett(x)")
    (tmp_path / "bad.yaml").write_text(text)
    result = fails(2, "train", "bad.yaml")
    assert "E-NAME" in result.output and "nett" in result.output and "'net'" in result.output
    assert "bad.yaml:" in result.output and "invalid" in result.output
    assert not (tmp_path / "runs").exists()


def test_set_typo_has_a_did_you_mean(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fails(2, "train", spec("xor"), "--set", "train.stpes=5")
    assert "unknown key 'stpes'" in result.output and "did you mean 'steps'" in result.output
    assert not (tmp_path / "runs").exists()


def test_set_without_equals_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = fails(2, "train", spec("xor"), "--set", "train.steps")
    assert "KEY=VALUE" in result.output and "Usage:" in result.output


def test_a_missing_data_file_is_caught_by_validation(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "div.yaml").write_text(DIVERGING + ONE_PHASE)
    result = fails(2, "train", "div.yaml")
    assert "no such file" in result.output and "d.npz" in result.output


def test_a_corrupt_data_file_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "div.yaml").write_text(DIVERGING + ONE_PHASE)
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 this is not an npz archive")
    result = fails(2, "train", "div.yaml")
    assert "cannot read" in result.output and "d.npz" in result.output
    assert "div.yaml:5:" in result.output  # caught by validation, pointing at the data entry
    # an archive whose arrays are damaged past their headers: validation (headers only) passes,
    # loading fails
    x = np.ones((50000, 2), np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=x[:, :1])
    data = bytearray((tmp_path / "d.npz").read_bytes())
    data[200000:200060] = b"\xff" * 60
    (tmp_path / "d.npz").write_bytes(bytes(data))
    result = fails(2, "train", "div.yaml", "--out", "run")  # bad input: nothing is written
    assert "error: data: file.npz: cannot read" in result.output and "d.npz" in result.output
    assert not (tmp_path / "run").exists()
    (tmp_path / "any.npz").write_bytes(b"")  # the data fails before the checkpoint is read
    result = fails(2, "eval", "div.yaml", "--checkpoint", "any.npz")
    assert "error: data: file.npz: cannot read" in result.output


def test_a_spec_without_train_section_is_a_usage_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    text = pathlib.Path(spec("xor")).read_text()
    text = text[: text.index("train:\n  steps")] + text[text.index("eval:") :]
    (tmp_path / "notrain.yaml").write_text(text)
    result = fails(2, "train", "notrain.yaml")
    assert "has no train section" in result.output
    assert not (tmp_path / "runs").exists()


# ------------------------------------------------------------------ the run directory


def test_a_run_directory_that_is_a_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "taken").write_text("mine")
    result = fails(2, "train", spec("xor"), "--out", "taken")
    assert "is a file" in result.output
    # a path through a file is the user's mistake (exit 2), not a failed run (docs/runs.md)
    result = fails(2, "train", spec("xor"), "--out", "taken/run")
    assert "cannot use taken/run: a part of it is a file, not a folder" in result.output
    assert (tmp_path / "taken").read_text() == "mine"


def test_an_unwritable_run_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        if os.access(parent, os.W_OK):
            pytest.skip("running as root: chmod does not stop writes")
        result = fails(1, "train", spec("xor"), "--out", "locked/run")
        assert "cannot write the run directory locked/run" in result.output and "Permission denied" in result.output
    finally:
        parent.chmod(0o755)


# ------------------------------------------------------------------ checkpoint writes that fail


def failing_savez(fail_on: int, exc: BaseException):  # type: ignore[no-untyped-def]
    """The checkpoint's archive writer (checkpoint._write_npz, what np.savez writes) that writes some
    bytes and then raises, on its fail_on-th call."""
    real = ckpt._write_npz
    calls = {"n": 0}

    def savez(file, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == fail_on:
            file.write(b"PK\x03\x04 half an archive")
            raise exc
        return real(file, *args, **kwargs)

    return savez


@pytest.mark.parametrize(
    "exc", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("boom"), KeyboardInterrupt()]
)
def test_a_failed_checkpoint_write_leaves_the_previous_file(exc, tmp_path, monkeypatch):
    path = tmp_path / "ck" / "last.npz"
    ckpt.save(path, {"a": np.arange(3)})
    before = path.read_bytes()
    monkeypatch.setattr(ckpt, "_write_npz", failing_savez(1, exc))
    with pytest.raises(ckpt.CheckpointError if isinstance(exc, OSError) else type(exc)) as info_:
        ckpt.save(path, {"a": np.arange(5)})
    if isinstance(exc, OSError):
        assert "cannot write checkpoint" in str(info_.value) and "No space left" in str(info_.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.npz"]
    assert list(ckpt.load(path)["a"]) == [0, 1, 2]


def test_training_whose_checkpoint_write_fails_exits_1_and_keeps_the_last_one(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with monkeypatch.context() as m:
        m.setattr(ckpt, "_write_npz", failing_savez(3, OSError(errno.ENOSPC, "No space left on device")))
        result = fails(
            1,
            "train",
            spec("xor"),
            "--out",
            "run",
            "--set",
            "train.steps=20",
            "--set",
            "train.checkpoint_every=5",
            "-q",
        )
    assert "cannot write checkpoint" in result.output and "No space left on device" in result.output
    assert int(checkpoint(tmp_path / "run/checkpoints/last.npz")["meta/step"]) == 10
    assert sorted(p.name for p in (tmp_path / "run/checkpoints").iterdir()) == ["last.npz"]
    summary = info(tmp_path / "run")
    assert summary["status"] == "failed" and "No space left" in summary["message"]
    # and it resumes from there
    ok("train", spec("xor"), "--out", "run", "--resume", "--set", "train.steps=20", "-q")
    assert info(tmp_path / "run")["steps_done"] == 20
