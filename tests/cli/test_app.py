"""The application layer (onlytorch/app.py): ``onlytorch.fit`` trains a spec into a run directory and
resumes it exactly as ``onlytorch train`` does, and ``onlytorch.evaluate_checkpoint`` gives what
``onlytorch eval`` prints. Also the README's "Training from Python" example, run as written."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
from typing import Any

import pytest

import onlytorch as ot
from onlytorch.app import BadInput, InvalidSpec, Note, Refused, SpecChanged, Started, load_spec
from onlytorch.metrics_log import Record
from onlytorch.rundir import RunLock

from . import assert_same_state, info, invoke, ok, rows, without_time

ROOT = pathlib.Path(__file__).resolve().parents[2]
XOR = str(ROOT / "specs" / "xor.yaml")

# The README's example (section "Training from Python"), run from a folder holding specs/xor.yaml.
EXAMPLE = """\
import onlytorch as ot

# Train specs/xor.yaml for 200 steps into runs/xor-demo; stop after step 120, as Ctrl-C would.
seen = []
result = ot.fit(
    "specs/xor.yaml",
    "runs/xor-demo",
    overrides=["train.steps=200"],
    on_progress=lambda step, losses: seen.append(step),
    should_stop=lambda: len(seen) >= 120,
)
print(result.status, result.steps, result.checkpoint)  # interrupted 120 runs/xor-demo/checkpoints/last.npz

# Continue it from its last checkpoint, bit for bit as if it had never stopped.
result = ot.fit("specs/xor.yaml", "runs/xor-demo", overrides=["train.steps=200"], resume=True)
print(result.status, result.steps)  # completed 200
print(result.metrics)  # the final evaluation on the test split: accuracy, loss
print(result.best)  # best.npz: the step and value of the monitored loss

# Later, more steps: a resume may raise train.steps.
result = ot.fit("specs/xor.yaml", "runs/xor-demo", overrides=["train.steps=400"], resume=True)
print(result.status, result.steps)  # completed 400

# The checkpoint's metrics, as `onlytorch eval` prints them.
print(ot.evaluate_checkpoint("specs/xor.yaml", "runs/xor-demo/checkpoints/last.npz").metrics)
"""

BLOWUP = """\
version: 1
name: blowup
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
nodes:
  pred: net(x)
losses:
  loss: mse(pred, y)
optimizers:
  opt: {type: sgd, lr: 1.0e+30, params: [net]}
train:
  steps: 5
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def readme_example() -> str | None:
    """The first python block of README.md's "Training from Python" section, if it has one."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.partition("\n## Training from Python\n")[2]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    return found.group(1) if section and found else None


def stop_after(n: int) -> tuple[list[int], Any]:
    seen: list[int] = []
    return seen, lambda: len(seen) >= n


def test_the_readme_example_runs_as_written(tmp_path, monkeypatch, capsys):
    (tmp_path / "specs").mkdir()
    shutil.copy(XOR, tmp_path / "specs" / "xor.yaml")
    monkeypatch.chdir(tmp_path)
    exec(compile(readme_example() or EXAMPLE, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "interrupted 120 runs/xor-demo/checkpoints/last.npz"
    assert printed[1] == "completed 200" and printed[4] == "completed 400"
    assert set(json.loads(printed[2].replace("'", '"'))) == {"accuracy", "loss"}
    summary = info(tmp_path / "runs/xor-demo")
    assert summary["status"] == "completed" and summary["steps_done"] == 400
    assert summary["overrides"] == ["train.steps=400"]


def test_the_readme_holds_this_example():
    found = readme_example()
    if found is None:
        pytest.skip("README.md has no 'Training from Python' section yet (the integrator adds it)")
    assert found == EXAMPLE


def test_a_stopped_fit_resumed_is_bit_for_bit_the_uninterrupted_one(tmp_path):
    seen, stop = stop_after(37)
    sets = ["train.steps=90", "train.log_every=10", "train.checkpoint_every=25", "train.eval_every=30"]
    first = ot.fit(XOR, tmp_path / "run", overrides=sets, on_progress=lambda s, v: seen.append(s), should_stop=stop)
    assert (first.status, first.stopped, first.steps) == ("interrupted", "saved", 37)
    assert first.checkpoint == tmp_path / "run/checkpoints/last.npz" and first.checkpoint.exists()
    assert info(tmp_path / "run")["status"] == "interrupted"
    assert info(tmp_path / "run")["message"] == "interrupted at step 37"

    resumed = ot.fit(XOR, tmp_path / "run", overrides=sets, resume=True)
    whole = ot.fit(XOR, tmp_path / "whole", overrides=sets)
    assert resumed.status == whole.status == "completed" and resumed.steps == whole.steps == 90
    assert_same_state(tmp_path / "run/checkpoints/last.npz", tmp_path / "whole/checkpoints/last.npz")
    assert_same_state(tmp_path / "run/checkpoints/best.npz", tmp_path / "whole/checkpoints/best.npz")
    assert resumed.metrics == whole.metrics and resumed.train == whole.train and resumed.best == whole.best
    assert [without_time(r) for r in rows(tmp_path / "run")] == [without_time(r) for r in rows(tmp_path / "whole")]


def test_fit_writes_the_run_directory_that_onlytorch_train_writes(tmp_path):
    sets = ["train.steps=60", "train.log_every=20"]
    result = ot.fit(XOR, tmp_path / "lib", overrides=sets, seed=3)
    ok("train", XOR, "--out", tmp_path / "cli", *[a for s in sets for a in ("--set", s)], "--seed", "3", "-q")
    assert_same_state(tmp_path / "lib/checkpoints/last.npz", tmp_path / "cli/checkpoints/last.npz")
    assert sorted(p.name for p in (tmp_path / "lib").rglob("*")) == sorted(
        p.name for p in (tmp_path / "cli").rglob("*")
    )
    lib, cli = info(tmp_path / "lib"), info(tmp_path / "cli")
    assert sorted(lib) == sorted(cli)
    same = ("status", "steps_done", "spec_hash", "seed", "overrides", "final", "best", "monitor", "directions")
    assert {k: lib[k] for k in same} == {k: cli[k] for k in same}
    assert lib["overrides"] == ["train.steps=60", "train.log_every=20", "seed=3"]
    assert [without_time(r) for r in rows(tmp_path / "lib")] == [without_time(r) for r in rows(tmp_path / "cli")]
    assert result.run_dir == tmp_path / "lib" and result.ok
    assert result.metrics == {k.removeprefix("eval/"): v for k, v in lib["final"].items() if k.startswith("eval/")}
    assert result.best is not None and result.best["checkpoint"] == "checkpoints/best.npz"


def test_fit_reports_through_its_callbacks(tmp_path):
    started: list[Started] = []
    logged: list[Record] = []
    evaluated: list[tuple[int, dict[str, float]]] = []
    result = ot.fit(
        XOR,
        tmp_path / "run",
        overrides=["train.steps=40", "train.log_every=10", "train.eval_every=20"],
        on_start=started.append,
        on_log=logged.append,
        on_eval=lambda step, values: evaluated.append((step, values)),
    )
    assert started == [Started("xor", tmp_path / "run", 0, 40, False)]
    assert [r.step for r in logged] == [10, 20, 30, 40] and "fit/loss" in logged[-1].values
    assert [s for s, _ in evaluated] == [20, 40] and evaluated[-1][1] == result.metrics


def test_a_compiled_spec_fits_too(tmp_path):
    from onlytorch.compile import compile_text

    compiled, report = compile_text(pathlib.Path(XOR).read_text(encoding="utf-8").replace("steps: 400", "steps: 30"))
    assert compiled is not None, report.render()
    result = ot.fit(compiled, tmp_path / "run")
    assert result.status == "completed" and result.steps == 30
    assert info(tmp_path / "run")["spec_file"] == "<xor, compiled in Python>"
    with pytest.raises(TypeError, match="seed and overrides apply to a spec file"):
        ot.fit(compiled, tmp_path / "other", seed=1)


def test_a_diverging_spec_ends_diverged(tmp_path):
    path = tmp_path / "blowup.yaml"
    path.write_text(BLOWUP, encoding="utf-8")
    result = ot.fit(path, tmp_path / "run")
    assert result.status == "diverged" and not result.ok
    assert result.message is not None and result.message.startswith("training diverged at step 2, phase 'fit'")
    assert isinstance(result.error, ot.GraphError) and result.checkpoint is None and result.started
    assert info(tmp_path / "run")["status"] == "diverged"
    assert info(tmp_path / "run")["message"] == result.message


def test_an_invalid_spec_raises_with_its_report(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text(pathlib.Path(XOR).read_text(encoding="utf-8").replace("net(x)", "nett(x)"), encoding="utf-8")
    with pytest.raises(InvalidSpec) as caught:
        ot.fit(path, tmp_path / "run")
    assert isinstance(caught.value, ot.FitError)
    assert [d.code for d in caught.value.report.errors] == ["E-NAME"]
    assert "did you mean 'net'?" in caught.value.report.render() and "invalid (1 error)" in str(caught.value)
    assert not (tmp_path / "run").exists()


def test_a_bad_override_is_refused():
    with pytest.raises(ValueError, match=r"--set takes KEY=VALUE, got 'train\.steps'"):
        load_spec(XOR, overrides=["train.steps"])


def test_a_locked_or_taken_run_directory_is_refused(tmp_path):
    (tmp_path / "run").mkdir()
    lock = RunLock(tmp_path / "run").acquire()
    try:
        with pytest.raises(Refused, match="is in use by another onlytorch process"):
            ot.fit(XOR, tmp_path / "run", overrides=["train.steps=5"])
    finally:
        lock.release()
    ot.fit(XOR, tmp_path / "run", overrides=["train.steps=5"])
    with pytest.raises(Refused, match="already holds a run; continue it with --resume"):
        ot.fit(XOR, tmp_path / "run", overrides=["train.steps=5"])
    with pytest.raises(Refused, match="holds no checkpoint to continue from"):
        ot.fit(XOR, tmp_path / "nothing", resume=True)


def test_a_resume_with_another_spec_is_refused_unless_forced(tmp_path):
    ot.fit(XOR, tmp_path / "run", overrides=["train.steps=5"])
    with pytest.raises(SpecChanged) as caught:
        ot.fit(XOR, tmp_path / "run", overrides=["train.steps=10", "optimizers.opt.lr=0.01"], resume=True)
    assert isinstance(caught.value, BadInput) and caught.value.hint == "resume with --force to continue anyway"
    assert caught.value.changes == ["optimizers.opt.lr: 0.05 -> 0.01"]
    result = ot.fit(
        XOR, tmp_path / "run", overrides=["train.steps=10", "optimizers.opt.lr=0.01"], resume=True, force=True
    )
    assert result.status == "completed" and result.steps == 10


def test_a_killed_run_is_noted_and_recorded(tmp_path):
    ot.fit(XOR, tmp_path / "run", overrides=["train.steps=5"])
    summary = info(tmp_path / "run")
    (tmp_path / "run/run.json").write_text(json.dumps({**summary, "status": "running"}), encoding="utf-8")
    notes: list[Note] = []
    result = ot.fit(XOR, tmp_path / "run", overrides=["train.steps=8"], resume=True, on_note=notes.append)
    assert [n.kind for n in notes] == ["killed"] and result.notes == notes
    assert notes[0].text.endswith("recorded as interrupted") and result.status == "completed"


def test_an_interruption_that_may_have_cut_an_iteration_writes_no_checkpoint(tmp_path, monkeypatch):
    from onlytorch.train import Trainer

    real = Trainer.run_iteration

    def run_iteration(self):  # type: ignore[no-untyped-def]
        if self.step == 6:
            raise KeyboardInterrupt  # Ctrl-C inside an iteration, no guard holding it back
        return real(self)

    monkeypatch.setattr(Trainer, "run_iteration", run_iteration)
    result = ot.fit(XOR, tmp_path / "run", overrides=["train.steps=20"])
    assert (result.status, result.stopped, result.steps, result.checkpoint) == ("interrupted", "cut", 6, None)
    assert info(tmp_path / "run")["message"] == "interrupted twice after step 6; no checkpoint written"


def test_evaluate_checkpoint_gives_what_onlytorch_eval_prints(tmp_path):
    ot.fit(XOR, tmp_path / "run", overrides=["train.steps=50"])
    last = tmp_path / "run/checkpoints/last.npz"
    printed = json.loads(ok("eval", XOR, "--checkpoint", last, "--json").stdout)
    result = ot.evaluate_checkpoint(XOR, last)
    assert (result.split, result.metrics) == (printed["split"], printed["metrics"])
    on_train = ot.evaluate_checkpoint(XOR, last, split="train")
    assert (
        on_train.metrics
        == json.loads(ok("eval", XOR, "--checkpoint", last, "--split", "train", "--json").stdout)["metrics"]
    )
    with pytest.raises(Refused, match="the spec has no 'val' split to evaluate"):
        ot.evaluate_checkpoint(XOR, last, split="val")
    with pytest.raises(Refused, match="--episodes and --policy apply to specs with a gym training source"):
        ot.evaluate_checkpoint(XOR, last, episodes=3)
    other = tmp_path / "other.npz"
    other.write_bytes(b"not a checkpoint")
    with pytest.raises(BadInput):
        ot.evaluate_checkpoint(XOR, other)
    assert invoke("eval", XOR, "--checkpoint", other).exit_code == 2


def test_fit_runs_on_the_threads_it_is_given_and_gives_them_back(tmp_path):
    from onlytorch import threads

    during: list[int] = []
    result = ot.fit(
        XOR,
        tmp_path / "run",
        overrides=["train.steps=3"],
        threads=2,  # the policy alone runs this small model on one thread
        on_progress=lambda s, v: during.append(ot.get_num_threads()),
    )
    assert result.ok and during == [2, 2, 2] and threads.forced() is None


def test_a_memory_bound_refuses_the_spec_before_anything_is_written(tmp_path):
    with pytest.raises(InvalidSpec) as caught:
        ot.fit(XOR, tmp_path / "run", max_memory=1000)
    assert {d.code for d in caught.value.report.errors} == {"E-MEMORY"}
    assert not (tmp_path / "run").exists()
