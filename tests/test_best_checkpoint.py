"""What chooses ``best.npz`` (onlytorch.monitor): a declared ``train.monitor: {metric, split, mode}``,
a direction that is never guessed from a name (a loss is minimised whatever it is called; a metric of
the spec needs ``mode``), selection on the ``val`` split when the data declares one (logged as
``val/<name>``), a warning where the model would be chosen on the split the final evaluation
reports, ``run.json``'s record of what chose it, and the report's "best" column by the same rule."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from onlytorch_cli.main import cli

from onlytorch import monitor, report
from onlytorch.compile import compile_text
from onlytorch.metrics import SAMPLE_SCORES

# A regression whose loss is a negative log-likelihood bound under a name with no "loss" in it
# (as a VAE's neg_elbo): lower is better, and only the spec's losses section says so.
SPEC = """\
version: 1
name: neg-elbo
seed: 0
data:
  train: {source: synthetic.xor, n: 128, noise: 0.05}
  val: {source: synthetic.xor, n: 64, noise: 0.05}
  test: {source: synthetic.xor, n: 64, noise: 0.05}
  batch_size: 32
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  pred: net(x)
losses:
  neg_elbo: mse(pred, y)
metrics:
  closeness: -mean(abs(pred - y))
  spread: mean(abs(pred))
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 40
  log_every: 10
  eval_every: 4
  schedule:
    - name: fit
      backward: [{loss: neg_elbo}]
      step: [opt]
eval:
  split: test
  metrics: [neg_elbo, closeness, spread]
"""
NO_VAL = SPEC.replace("  val: {source: synthetic.xor, n: 64, noise: 0.05}\n", "")


def with_monitor(text: str, monitor_yaml: str) -> str:
    return text.replace("  eval_every: 4\n", f"  eval_every: 4\n  monitor: {monitor_yaml}\n")


def invoke(*args: Any) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), (result.exception, result.output)
    return result


def write(tmp_path: pathlib.Path, text: str, name: str = "spec.yaml") -> pathlib.Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def train(tmp_path: pathlib.Path, text: str) -> tuple[pathlib.Path, Result]:
    spec = write(tmp_path, text)
    result = invoke("train", spec, "--out", tmp_path / "run", "-q")
    assert result.exit_code == 0, result.output
    return tmp_path / "run", result


def eval_rows(run: pathlib.Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"]


def info(run: pathlib.Path) -> dict[str, Any]:
    return json.loads((run / "run.json").read_text())


def evaluate_checkpoint(spec: pathlib.Path, checkpoint: pathlib.Path, split: str) -> dict[str, float]:
    result = invoke("eval", spec, "--checkpoint", checkpoint, "--split", split, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)["metrics"]


def line_col(text: str, needle: str, occurrence: int = 0) -> tuple[int, int]:
    """1-based line and column of the start of needle in text."""
    at = [m.start() for m in re.finditer(re.escape(needle), text)][occurrence]
    line = text.count("\n", 0, at) + 1
    return line, at - (text.rfind("\n", 0, at) + 1) + 1


# ---------------------------------------------------------------- the best checkpoint at run time


def test_a_loss_without_a_magic_word_keeps_its_lowest_evaluation_chosen_on_val(tmp_path: pathlib.Path) -> None:
    run, result = train(tmp_path, SPEC)
    rows = eval_rows(run)
    # every periodic evaluation ran on val and says so; eval.split (test) only at the end
    assert [r["step"] for r in rows] == list(range(4, 41, 4))
    assert all({"val/neg_elbo", "val/closeness", "val/spread"} <= set(r) for r in rows)
    assert [r["step"] for r in rows if "eval/neg_elbo" in r] == [40]
    assert "evaluation on test (no_grad)" in result.output

    logged = [(r["step"], r["val/neg_elbo"]) for r in rows]
    lowest = min(logged, key=lambda p: p[1])
    highest = max(logged, key=lambda p: p[1])
    assert lowest[0] != highest[0]  # a direction guessed wrongly would pick another step
    best = info(run)["best"]
    assert best == {
        "checkpoint": "checkpoints/best.npz",
        "step": lowest[0],
        "metric": "neg_elbo",
        "split": "val",
        "mode": "min",
        "value": lowest[1],
    }
    assert info(run)["monitor"] == {"metric": "neg_elbo", "split": "val", "mode": "min"}
    # best.npz holds the weights of that step: evaluated again on val, it gives the recorded value
    spec = tmp_path / "spec.yaml"
    assert evaluate_checkpoint(spec, run / "checkpoints/best.npz", "val")["neg_elbo"] == lowest[1]
    assert evaluate_checkpoint(spec, run / "checkpoints/last.npz", "val")["neg_elbo"] == logged[-1][1]
    # the final evaluation on test is what run.json reports as final
    final = info(run)["final"]
    assert final["eval/neg_elbo"] == rows[-1]["eval/neg_elbo"] and final["val/neg_elbo"] == logged[-1][1]

    # the report: val rows are their own group; losses minimised; undeclared metrics get no best
    text = report.summary_table(report.read_run(run))
    assert "val metrics (evaluations that choose best.npz)" in text and "eval metrics (on test)" in text
    assert f"best checkpoint  checkpoints/best.npz (step {lowest[0]}, lowest neg_elbo on val = {lowest[1]:.5g})" in text
    cells = next(ln.split() for ln in text.splitlines() if ln.strip().startswith("val/neg_elbo "))
    assert cells[3:] == [f"{lowest[1]:.5g}", str(lowest[0])]
    cells = next(ln.split() for ln in text.splitlines() if ln.strip().startswith("val/closeness "))
    assert cells[3:] == ["-", "-"]


def test_a_metric_of_the_spec_monitored_with_mode_max(tmp_path: pathlib.Path) -> None:
    run, _ = train(tmp_path, with_monitor(SPEC, "{metric: closeness, mode: max}"))
    logged = [(r["step"], r["val/closeness"]) for r in eval_rows(run)]
    highest = max(logged, key=lambda p: p[1])
    assert min(logged, key=lambda p: p[1])[0] != highest[0]
    best = info(run)["best"]
    assert (best["metric"], best["split"], best["mode"]) == ("closeness", "val", "max")
    assert (best["step"], best["value"]) == highest
    assert info(run)["directions"]["closeness"] == "max" and "spread" not in info(run)["directions"]
    values = evaluate_checkpoint(tmp_path / "spec.yaml", run / "checkpoints/best.npz", "val")
    assert values["closeness"] == highest[1]
    qs = {q.name: q for q in report.quantities(report.read_run(run))}
    assert (qs["val/closeness"].best, qs["val/closeness"].best_step, qs["val/closeness"].mode) == (
        highest[1],
        highest[0],
        "max",
    )
    assert qs["val/spread"].best is None and qs["val/spread"].mode is None


def test_without_a_val_split_selection_uses_eval_split_and_logs_it_as_eval(tmp_path: pathlib.Path) -> None:
    run, _ = train(tmp_path, with_monitor(NO_VAL, "{metric: neg_elbo, split: test}"))
    rows = eval_rows(run)
    assert all("eval/neg_elbo" in r and not any(k.startswith("val/") for k in r) for r in rows)
    best = info(run)["best"]
    lowest = min(((r["step"], r["eval/neg_elbo"]) for r in rows), key=lambda p: p[1])
    assert (best["split"], best["mode"], best["step"], best["value"]) == ("test", "min", *lowest)


def test_a_nan_evaluation_is_never_the_best(tmp_path: pathlib.Path) -> None:
    from onlytorch.compile import compile_text as compile_
    from onlytorch.run import Run
    from onlytorch.train import Trainer

    compiled, rep = compile_(SPEC, "spec.yaml")
    assert compiled is not None, rep.render()
    r = Run(tmp_path / "run", compiled, Trainer(compiled), "spec.yaml", [])
    r.start(resume=False)
    m = monitor.resolve(compiled.spec)
    assert m is not None
    r._track_best(1, m, {"neg_elbo": float("nan")})
    assert r.info["best"] is None
    r._track_best(2, m, {"neg_elbo": 0.5})
    r._track_best(3, m, {"neg_elbo": float("nan")})
    r._track_best(4, m, {"neg_elbo": 0.7})
    assert (r.info["best"]["step"], r.info["best"]["value"]) == (2, 0.5)


# ---------------------------------------------------------------- validate: declared monitors


def validate(tmp_path: pathlib.Path, text: str, *flags: str) -> tuple[Result, str]:
    spec = write(tmp_path, text)
    return invoke("validate", *flags, "-q", spec), str(spec)


def test_a_metric_of_the_spec_without_mode_is_refused_with_its_location(tmp_path: pathlib.Path) -> None:
    text = with_monitor(SPEC, "{metric: closeness}")
    result, spec = validate(tmp_path, text)
    assert result.exit_code == 2
    line, col = line_col(text, "closeness}")
    assert (
        f"{spec}:{line}:{col}: E-MONITOR train.monitor: closeness has no declared direction (onlytorch never "
        "guesses one from a name): add mode: max (higher is better) or mode: min (lower is better)"
    ) in result.stderr
    assert "hint: monitor: {metric: closeness, mode: max} when higher is better, mode: min when lower" in result.stderr


def test_an_unknown_monitor_metric_is_a_name_error_with_a_suggestion(tmp_path: pathlib.Path) -> None:
    text = with_monitor(SPEC, "{metric: neg_elob}")
    result, spec = validate(tmp_path, text)
    assert result.exit_code == 2
    line, col = line_col(text, "neg_elob")
    assert (
        f"{spec}:{line}:{col}: E-NAME train.monitor: unknown metric 'neg_elob'; evaluation reports: "
        "neg_elbo, closeness, spread"
    ) in result.stderr
    assert "hint: did you mean 'neg_elbo'?" in result.stderr


def test_a_loss_monitored_with_mode_max_is_refused(tmp_path: pathlib.Path) -> None:
    text = with_monitor(SPEC, "{metric: neg_elbo, mode: max}")
    result, spec = validate(tmp_path, text)
    assert result.exit_code == 2
    line, col = line_col(text, "max}")
    assert (
        f"{spec}:{line}:{col}: E-MONITOR train.monitor: neg_elbo is a loss, always minimised; mode: max would keep "
        "its worst checkpoint"
    ) in result.stderr


def test_a_split_the_data_does_not_define_is_a_data_error(tmp_path: pathlib.Path) -> None:
    text = with_monitor(NO_VAL, "{metric: neg_elbo, split: val}")
    result, spec = validate(tmp_path, text)
    assert result.exit_code == 2
    line, col = line_col(text, "val}")
    assert (
        f"{spec}:{line}:{col}: E-DATA train.monitor uses the val split, which data does not define "
        "(it defines: train, test)"
    ) in result.stderr
    # a split that is no split at all: the schema's own message, located, with a suggestion
    text = with_monitor(NO_VAL, "{metric: neg_elbo, split: valid}")
    result, spec = validate(tmp_path, text)
    line, col = line_col(text, "valid}")
    assert result.exit_code == 2 and f"{spec}:{line}:{col}: E-TYPE train.monitor.split" in result.stderr


def test_a_monitor_needs_an_eval_section(tmp_path: pathlib.Path) -> None:
    text = with_monitor(SPEC, "{metric: neg_elbo}")
    text = text[: text.index("eval:\n")]
    result, spec = validate(tmp_path, text)
    assert result.exit_code == 2
    line, col = line_col(text, "{metric: neg_elbo}")
    assert f"{spec}:{line}:{col}: E-MONITOR train.monitor needs an eval section" in result.stderr
    # an eval section that is there but broken has its own diagnostic, and only that one
    result, _ = validate(tmp_path, with_monitor(SPEC, "{metric: neg_elbo}").replace("split: test", "split: tset"))
    assert result.exit_code == 2
    assert "E-TYPE eval.split" in result.stderr and "E-MONITOR" not in result.stderr


def test_selection_on_the_final_evaluation_split_is_a_warning_and_an_error_under_strict(
    tmp_path: pathlib.Path,
) -> None:
    result, spec = validate(tmp_path, NO_VAL)
    assert result.exit_code == 0
    line, col = line_col(NO_VAL, "eval_every: 4")
    col += len("eval_every: ")  # at the value that makes evaluations choose a checkpoint
    assert (
        f"{spec}:{line}:{col}: W-SELECT best.npz is chosen by neg_elbo on the test split, the split the final "
        "evaluation reports: the model is selected on the test set, so best.npz's test numbers are optimistic"
    ) in result.stderr
    assert "hint: declare a validation split (data.val: {from_split: train, fraction: 0.1})" in result.stderr
    assert result.stdout.splitlines()[-1] == f"{spec}: valid (0 errors, 1 warning)"

    strict, _ = validate(tmp_path, NO_VAL, "--strict")
    assert strict.exit_code == 2 and "W-SELECT" in strict.stderr
    # a declared val split, a stated monitor.split, or no periodic evaluation: nothing to warn about
    for text in (
        SPEC,
        with_monitor(NO_VAL, "{metric: neg_elbo, split: test}"),
        with_monitor(NO_VAL, "{metric: neg_elbo, split: train}"),
        NO_VAL.replace("  eval_every: 4\n", ""),
        SPEC.replace("  split: test\n", "  split: val\n"),  # chosen and reported on val: what val is for
    ):
        ok, _ = validate(tmp_path, text, "--strict")
        assert ok.exit_code == 0, ok.output
        assert "W-SELECT" not in ok.output


def test_selection_on_the_train_split_is_logged_apart_from_the_training_batches(tmp_path: pathlib.Path) -> None:
    run, _ = train(tmp_path, with_monitor(NO_VAL, "{metric: neg_elbo, split: train}"))
    rows = eval_rows(run)
    assert all("train_split/neg_elbo" in r and "train/closeness" not in r for r in rows)
    best = info(run)["best"]
    lowest = min(((r["step"], r["train_split/neg_elbo"]) for r in rows), key=lambda p: p[1])
    assert (best["split"], best["step"], best["value"]) == ("train", *lowest)
    groups = {q.name: q.group for q in report.quantities(report.read_run(run))}
    assert groups["train_split/neg_elbo"] == "train_split" and groups["train/closeness"] == "train"


# ---------------------------------------------------------------- the report's best column


def _run_dir(tmp_path: pathlib.Path, info_: dict[str, Any], rows: list[dict[str, Any]]) -> pathlib.Path:
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps(info_))
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return run


MSE_ROWS = [{"step": s, "kind": "eval", "eval/mse": v} for s, v in [(10, 0.5), (20, 0.1), (30, 0.9)]]


@pytest.mark.parametrize(
    ("recorded", "best"),
    [
        ({}, None),  # a metric called mse with no declared direction: no best is claimed
        ({"directions": {"mse": "min"}}, (0.1, 20)),  # a loss of the spec, or declared mode: min
        ({"directions": {"mse": "max"}}, (0.9, 30)),  # declared max: the name does not overrule it
        ({"best": {"metric": "mse", "split": "val", "mode": "min", "step": 20, "value": 0.1}}, (0.1, 20)),
    ],
)
def test_the_report_best_column_follows_declared_directions_only(
    tmp_path: pathlib.Path, recorded: dict[str, Any], best: tuple[float, int] | None
) -> None:
    run = report.read_run(_run_dir(tmp_path, {"name": "r", "status": "completed", **recorded}, MSE_ROWS))
    (q,) = report.quantities(run)
    assert (q.final, q.final_step) == (0.9, 30)
    assert (None if q.best is None else (q.best, q.best_step)) == best


# ---------------------------------------------------------------- the rule's single definition


def test_the_direction_rule() -> None:
    assert monitor.direction("neg_elbo", ["neg_elbo"]) == "min"
    assert monitor.direction("accuracy", ["loss"]) is None
    assert monitor.direction("accuracy", ["loss"], {"accuracy": "max"}) == "max"
    assert monitor.direction("mse", []) is None and monitor.direction("error_rate", []) is None
    assert monitor.direction("modes_covered", [], monitor.BUILTIN_MODES) == "max"
    assert monitor.direction("return_mean", [], monitor.BUILTIN_MODES) == "max"
    assert "episode_length" not in monitor.BUILTIN_MODES  # long is good in CartPole, bad in MountainCar
    assert set(SAMPLE_SCORES) <= set(monitor.BUILTIN_MODES)
    assert not hasattr(report, "lower_is_better")
    import onlytorch.run

    assert not hasattr(onlytorch.run, "lower_is_better")


def test_a_metric_of_the_spec_named_like_a_score_still_needs_mode(tmp_path: pathlib.Path) -> None:
    text = with_monitor(SPEC.replace("closeness", "high_quality"), "{metric: high_quality}")
    result, _ = validate(tmp_path, text)
    assert result.exit_code == 2 and "E-MONITOR train.monitor: high_quality has no declared direction" in result.stderr


def test_defaults_without_a_monitor() -> None:
    compiled, rep = compile_text(SPEC, "spec.yaml")
    assert compiled is not None, rep.render()
    assert monitor.resolve(compiled.spec) == monitor.Monitor("neg_elbo", "val", "min")
    compiled, _ = compile_text(NO_VAL, "spec.yaml")
    assert compiled is not None
    assert monitor.resolve(compiled.spec) == monitor.Monitor("neg_elbo", "test", "min")
    gan = (pathlib.Path(__file__).parents[1] / "specs" / "gan_ring.yaml").read_text()
    gan = gan.replace("  monitor: {metric: modes_covered, mode: max}", "")
    compiled, rep = compile_text(gan, "gan.yaml")
    assert compiled is not None, rep.render()
    assert monitor.resolve(compiled.spec) == monitor.Monitor("modes_covered", "samples", "max")


def test_episode_quantities_are_what_evaluation_episodes_return_and_a_split_does_not_apply(
    tmp_path: pathlib.Path,
) -> None:
    pytest.importorskip("gymnasium")
    from gym_chain import CHAIN

    from onlytorch.train import Trainer

    text = f"""\
version: 1
name: chain
seed: 0
data:
  train: {{source: gym.rollout, env: {CHAIN}, env_kwargs: {{max_episode_steps: 4}}, envs: 2, steps: 4, action: action}}
  batch_size: 8
inputs:
  obs: {{shape: [2], from: train.obs}}
  act: {{dtype: int64, from: train.action}}
  ret: {{from: train.return}}
modules:
  pi: [{{linear: 2}}]
nodes:
  logits: pi(obs)
  action: categorical_sample(logits)
losses:
  actor: -mean(categorical_log_prob(logits, act) * ret)
optimizers:
  opt: {{type: sgd, lr: 0.01, params: [pi]}}
train:
  steps: 2
  eval_every: 1
  schedule:
    - name: ac
      backward: [{{loss: actor}}]
      step: [opt]
"""
    compiled, rep = compile_text(text, "chain.yaml")
    assert compiled is not None, rep.render()
    assert monitor.resolve(compiled.spec) == monitor.Monitor("return_mean", "episodes", "max")
    returned = Trainer(compiled).episodes(2)
    assert set(returned) == set(monitor.EPISODE_QUANTITIES)
    assert all(np.isfinite(v) for v in returned.values())

    bad = with_monitor(text.replace("  eval_every: 1\n", "  eval_every: 4\n"), "{metric: return_mean, split: val}")
    result, spec = validate(tmp_path, bad)
    line, col = line_col(bad, "val}")
    assert result.exit_code == 2
    assert (
        f"{spec}:{line}:{col}: E-MONITOR train.monitor.split does not apply: return_mean is measured on whole "
        "episodes, not on a data split"
    ) in result.stderr
    bad = with_monitor(text.replace("  eval_every: 1\n", "  eval_every: 4\n"), "{metric: actor_loss}")
    result, spec = validate(tmp_path, bad)
    assert "E-NAME train.monitor: unknown metric 'actor_loss' (a gym source is evaluated in whole episodes)" in (
        result.stderr
    )
