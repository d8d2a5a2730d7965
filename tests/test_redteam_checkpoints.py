"""Red-team regressions (issue 10): the best checkpoint, names the metrics log reserves, and bad
checkpoints given to ``onlytorch train --resume`` that used to slip through or be named vaguely.

- A negative running average of squared gradients (Adam's ``exp_avg_sq``, RMSprop's
  ``square_avg``) was accepted and the resumed run diverged (exit 3, run.json rewritten).
- Invalid saved hyper-parameters of a schedule raised a message naming no entry; an optimizer's
  named only ``hyper/...``.
- A ``last.npz`` that is a broken link, or missing from a completed run, made ``--resume`` start
  the run afresh and delete its metrics log and best.npz.
- A checkpoint written for another spec, given to a run whose spec.json is unchanged, was
  reported as "the spec changed ... (the spec hash differs)".
- A phase called ``val`` (``eval``, ``lr``, ...) logged its losses under the keys of the
  validation evaluations: the report's "best" of ``val/<loss>`` was a training batch's loss.
- A metric of a GAN spec called ``modes_covered`` was silently overwritten by the sample score.
- A best record of another split or direction (a resume with ``--force`` after the monitor
  changed) was compared with the new monitor's values."""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from onlytorch_cli.main import cli

import onlytorch as ot
from onlytorch.compile import compile_text
from onlytorch.errors import GraphError

SPEC = """\
version: 1
name: rt
seed: 0
data:
  train: {source: synthetic.xor, n: 64, noise: 0.05}
  val: {source: synthetic.xor, n: 32, noise: 0.05}
  test: {source: synthetic.xor, n: 32, noise: 0.05}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  logits: net(x)
losses:
  loss: bce_with_logits(logits, y)
metrics:
  accuracy: mean(equal(greater(logits, 0), y))
optimizers:
  opt: {type: adam, lr: 0.05, params: [net], schedule: {type: cosine_annealing_lr, T_max: 50}}
train:
  steps: 6
  log_every: 2
  eval_every: 2
  checkpoint_every: 2
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
eval:
  split: test
"""


def invoke(*args: Any) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, result.output)
    return result


def snapshot(folder: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def read(path: pathlib.Path) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def write(path: pathlib.Path, arrays: dict[str, Any]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.fixture
def run(tmp_path: pathlib.Path) -> pathlib.Path:
    (tmp_path / "spec.yaml").write_text(SPEC, encoding="utf-8")
    result = invoke("train", tmp_path / "spec.yaml", "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "run"


def resume(run: pathlib.Path, *more: str) -> Result:
    return invoke("train", run.parent / "spec.yaml", "--out", run, "--resume", "--set", "train.steps=10", *more)


def refused_resume(run: pathlib.Path, *fragments: str) -> str:
    before = snapshot(run)
    result = resume(run)
    assert result.exit_code == 2, result.output
    for f in fragments:
        assert f in result.output, (f, result.output)
    assert snapshot(run) == before
    return result.output


# ---------------------------------------------------------------- optimizer and schedule state


def test_a_negative_second_moment_is_refused_naming_the_entry(run: pathlib.Path) -> None:
    last = run / "checkpoints" / "last.npz"
    state = read(last)
    key = "opt/opt/net.0.weight/exp_avg_sq"
    state[key] = -np.abs(state[key]) - 1.0
    write(last, state)
    refused_resume(run, str(last), key, "negative")


def test_rmsprop_square_avg_must_not_be_negative() -> None:
    g = ot.Graph(seed=0)
    w = g.parameter("w", value=np.ones((2, 3), np.float32))
    opt = ot.optim.RMSprop(g, [w], lr=0.01)
    state = opt.state_dict()
    state["w/square_avg"] = np.full((2, 3), -1.0, np.float32)
    with pytest.raises(GraphError, match=r"'w/square_avg' holds 6 negative"):
        opt.load_state_dict(state)
    assert (opt.state_dict()["w/square_avg"] == 0).all()  # nothing applied


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("sched/opt/hyper/T_max", np.array(0), "'sched/opt/hyper/T_max' is invalid"),
        ("sched/opt/hyper/eta_min", np.array(-1.0), "'sched/opt/hyper/eta_min' is invalid"),
        ("sched/opt/last_lr", np.array(-0.5), "'sched/opt/last_lr' is invalid"),
        ("opt/opt/hyper/lr", np.array(np.nan), "'opt/opt/hyper/lr' is invalid"),
        ("opt/opt/hyper/betas", np.array([1.5, 0.9]), "'opt/opt/hyper/betas' is invalid"),
        ("opt/opt/hyper/eps", np.array(-1.0), "'opt/opt/hyper/eps' is invalid"),
    ],
)
def test_invalid_saved_hyper_parameters_name_their_entry(
    run: pathlib.Path, key: str, value: np.ndarray, fragment: str
) -> None:
    last = run / "checkpoints" / "last.npz"
    state = read(last)
    state[key] = value
    write(last, state)
    refused_resume(run, str(last), fragment)


def test_hyper_parameters_invalid_only_together_say_so() -> None:
    g = ot.Graph(seed=0)
    w = g.parameter("w", value=np.ones(3, np.float32))
    opt = ot.optim.SGD(g, [w], lr=0.1, momentum=0.9)
    state = opt.state_dict()
    state["hyper/nesterov"] = np.array(True)
    state["hyper/momentum"] = np.array(0.0)
    with pytest.raises(GraphError, match=r"invalid together: SGD: Nesterov"):
        opt.load_state_dict(state)


# ---------------------------------------------------------------- a lost or linked last.npz


def test_a_dangling_last_checkpoint_link_is_refused_not_started_afresh(run: pathlib.Path) -> None:
    last = run / "checkpoints" / "last.npz"
    last.unlink()
    os.symlink(run / "nowhere.npz", last)
    log = (run / "metrics.jsonl").read_bytes()
    refused_resume(run, str(last))
    assert (run / "metrics.jsonl").read_bytes() == log
    assert (run / "checkpoints" / "best.npz").exists()
    assert os.path.islink(last)


def test_a_completed_run_whose_last_checkpoint_is_gone_is_not_started_afresh(run: pathlib.Path) -> None:
    (run / "checkpoints" / "last.npz").unlink()
    out = refused_resume(run, "last.npz is missing", "completed")
    assert "starting afresh" not in out


def test_a_checkpoint_of_another_spec_names_its_hash_entry(run: pathlib.Path) -> None:
    last = run / "checkpoints" / "last.npz"
    state = read(last)
    state["meta/spec_hash"] = np.array("0123456789abcdef")
    write(last, state)
    out = refused_resume(run, f"{last}: entry 'meta/spec_hash'", "'0123456789abcdef'", "--force")
    assert "(the spec hash differs)" not in out
    # --force goes on: every other check passes
    assert resume(run, "--force", "-q").exit_code == 0


# ---------------------------------------------------------------- names the metrics log reserves


@pytest.mark.parametrize("name", ["val", "eval", "test", "train_split", "lr", "grad_norm", "rollout"])
def test_a_phase_named_like_a_log_prefix_is_refused_at_its_name(name: str) -> None:
    text = SPEC.replace("    - name: fit\n", f"    - name: {name}\n")
    compiled, report = compile_text(text, "spec.yaml")
    assert compiled is None
    (d,) = [d for d in report.items if d.code == "E-DUP"]
    assert f"a phase may not be called {name!r}" in d.message
    assert d.line is not None
    assert text.splitlines()[d.line - 1].strip() == f"- name: {name}"


@pytest.mark.parametrize("name", ["train", "fit", "validation", "evaluate"])
def test_ordinary_phase_names_stay_valid(name: str) -> None:
    compiled, report = compile_text(SPEC.replace("    - name: fit\n", f"    - name: {name}\n"), "spec.yaml")
    assert compiled is not None, report.items
    assert not report.items


GAN = """\
version: 1
name: g
data:
  train: {source: synthetic.ring, n: 256, modes: 8}
  batch_size: 32
inputs:
  real: {shape: [2], from: train.x}
  z: {shape: [4], from: noise.normal}
modules:
  G: [{linear: 16}, relu, {linear: 2}]
  D: [{linear: 16}, relu, {linear: 1}]
nodes:
  fake: G(z)
  d_fake: D(fake)
losses:
  d_loss: bce_with_logits(D(real), 1) + bce_with_logits(d_fake, 0)
  g_loss: bce_with_logits(d_fake, 1)
metrics:
  NAME: mean(sigmoid(d_fake))
optimizers:
  d_opt: {type: adam, lr: 1.0e-3, params: [D]}
  g_opt: {type: adam, lr: 1.0e-3, params: [G]}
train:
  steps: 4
  eval_every: 2
  schedule:
    - name: discriminator
      detach: [fake]
      backward: [{loss: d_loss}]
      step: [d_opt]
    - name: generator
      backward: [{loss: g_loss}]
      step: [g_opt]
eval:
  split: train
  samples: {node: fake, n: 100}
"""


@pytest.mark.parametrize("name", ["modes_covered", "high_quality"])
def test_a_metric_named_like_a_sample_score_is_refused(name: str) -> None:
    text = GAN.replace("NAME", name)
    compiled, report = compile_text(text, "spec.yaml")
    assert compiled is None
    (d,) = [d for d in report.items if d.code == "E-DUP"]
    assert f"metric {name!r} has the name of a score" in d.message
    assert d.line is not None
    assert text.splitlines()[d.line - 1].strip().startswith(f"{name}:")


def test_the_same_metric_name_is_fine_where_samples_are_not_scored() -> None:
    text = GAN.replace("NAME", "modes_covered").replace("  samples: {node: fake, n: 100}\n", "")
    compiled, report = compile_text(text, "spec.yaml")
    assert compiled is not None, report.items


# ---------------------------------------------------------------- best records of another monitor


def test_a_best_record_of_another_split_is_not_compared_after_a_forced_resume(run: pathlib.Path) -> None:
    # the run chose best.npz on val; pretend its record was of the test split with an unbeatable value
    info_path = run / "run.json"
    info = json.loads(info_path.read_text())
    assert info["best"]["split"] == "val" and info["best"]["mode"] == "min"
    info["best"] = {**info["best"], "split": "test", "value": -1.0e9}
    info_path.write_text(json.dumps(info))
    result = resume(run, "-q")
    assert result.exit_code == 0, result.output
    best = json.loads(info_path.read_text())["best"]
    assert best["split"] == "val" and best["step"] > 6 and best["value"] > 0


def test_a_negative_batch_norm_running_variance_is_refused_by_eval_and_resume(tmp_path: pathlib.Path) -> None:
    text = SPEC.replace("[{linear: 8}, tanh, {linear: 1}]", "[{linear: 8}, {batch_norm: {}}, tanh, {linear: 1}]")
    (tmp_path / "spec.yaml").write_text(text, encoding="utf-8")
    run = tmp_path / "run"
    assert invoke("train", tmp_path / "spec.yaml", "--out", run, "-q").exit_code == 0
    last = run / "checkpoints" / "last.npz"
    state = read(last)
    (key,) = [k for k in state if k.startswith("state/") and k.endswith("running_var")]
    state[key] = -np.ones_like(state[key])
    write(last, state)
    refused_resume(run, str(last), key, "negative")
    result = invoke("eval", tmp_path / "spec.yaml", "--checkpoint", last)
    assert result.exit_code == 2 and key in result.output and "negative" in result.output, result.output


@pytest.mark.parametrize("step", [np.array(2**62), np.array(2**64 - 1, dtype=np.uint64)])
def test_an_absurd_step_count_is_refused(run: pathlib.Path, step: np.ndarray) -> None:
    last = run / "checkpoints" / "last.npz"
    state = read(last)
    state["meta/step"] = step
    write(last, state)
    refused_resume(run, str(last), "'meta/step'")
