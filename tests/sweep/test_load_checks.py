"""Two checks of what a sweep would silently do wrong: a pruner that no periodic evaluation feeds
(E-SWEEP-PRUNE: the trainer evaluates every train.eval_every iterations and once after the last,
so without an evaluation before the end a one-seed trial cannot be pruned), and parameters chosen
on the test split (W-SWEEP-TEST: a warning; the sweep still loads and runs, and the command shows
it)."""

from __future__ import annotations

import pathlib

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.sweep.load import load_sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
XOR = ROOT / "specs" / "xor.yaml"  # 400 steps, no eval_every, no val split (eval.split: test)
WITH_VAL = pathlib.Path(__file__).resolve().parent / "broken" / "specs" / "with_val.yaml"  # 10 steps, eval_every 5
SPACE = "trials: 4\nspace:\n  optimizers.opt.lr: {loguniform: [1.0e-3, 1.0e-1]}\n"


def load(tmp_path: pathlib.Path, text: str, spec: pathlib.Path = XOR) -> tuple[object, list[tuple[str, int, int]]]:
    path = tmp_path / "s.yaml"
    path.write_text(f"version: 1\nspec: {spec}\n{text}", encoding="utf-8")
    sweep, report = load_sweep(path)
    return sweep, [(d.code, d.line or 0, d.column or 0) for d in report.sorted()]


def codes(tmp_path: pathlib.Path, text: str, spec: pathlib.Path = XOR) -> list[str]:
    return [c for c, _, _ in load(tmp_path, text, spec)[1]]


# ---------------------------------------------------------------- E-SWEEP-PRUNE


@pytest.mark.parametrize("pruner", ["median", "successive_halving"])
def test_a_pruner_without_periodic_evaluations_is_an_error_at_its_type(tmp_path: pathlib.Path, pruner: str) -> None:
    sweep, found = load(tmp_path, f"pruner: {{type: {pruner}}}\n" + SPACE)
    assert sweep is None
    assert found == [("E-SWEEP-PRUNE", 3, 16)]


def test_eval_every_not_below_the_steps_is_an_error_and_below_is_fine(tmp_path: pathlib.Path) -> None:
    base = "pruner: {type: median}\nset: {train.steps: 100, train.eval_every: EVERY}\n" + SPACE
    assert codes(tmp_path, base.replace("EVERY", "100")) == ["E-SWEEP-PRUNE"]
    assert codes(tmp_path, base.replace("EVERY", "150")) == ["E-SWEEP-PRUNE"]
    # one evaluation before the last step is enough for the pruner to stop a trial there
    sweep, found = load(tmp_path, base.replace("EVERY", "99"), WITH_VAL)
    assert sweep is not None and found == []
    # the base spec's own eval_every counts, as does one set by set: (with_val evaluates every 5 of 10)
    sweep, found = load(tmp_path, "pruner: {type: median}\n" + SPACE, WITH_VAL)
    assert sweep is not None and found == []


def test_no_pruner_needs_no_evaluations(tmp_path: pathlib.Path) -> None:
    assert "E-SWEEP-PRUNE" not in codes(tmp_path, SPACE)
    assert "E-SWEEP-PRUNE" not in codes(tmp_path, "pruner: {type: none}\n" + SPACE)


def test_with_several_seeds_the_pruner_may_skip_the_remaining_seeds(tmp_path: pathlib.Path) -> None:
    # the final evaluation of each seed's run reaches the pruner before the next seed starts
    sweep, found = load(tmp_path, "seeds: 2\npruner: {type: median}\n" + SPACE.replace("trials: 4", "trials: 2"))
    assert "E-SWEEP-PRUNE" not in [c for c, _, _ in found]
    assert sweep is not None


def test_a_space_that_sets_eval_every_or_the_length_leaves_it_to_each_trial(tmp_path: pathlib.Path) -> None:
    every = "pruner: {type: median}\ntrials: 4\nspace:\n  train.eval_every: {int: [10, 50]}\n"
    assert "E-SWEEP-PRUNE" not in codes(tmp_path, every)
    length = (
        "pruner: {type: median}\nset: {train.eval_every: 100}\ntrials: 4\nspace:\n  train.steps: {int: [50, 400]}\n"
    )
    assert "E-SWEEP-PRUNE" not in codes(tmp_path, length)
    # but a space over the length does not give a run without eval_every anything to prune on
    length = "pruner: {type: median}\ntrials: 4\nspace:\n  train.steps: {int: [50, 400]}\n"
    assert codes(tmp_path, length) == ["E-SWEEP-PRUNE"]


def test_with_epochs_a_missing_eval_every_is_still_an_error(tmp_path: pathlib.Path) -> None:
    # with train.epochs a run's length depends on the data, so only a missing eval_every is certain
    text = XOR.read_text(encoding="utf-8")
    assert text.count("  steps: 400\n") == 1
    spec = tmp_path / "xor_epochs.yaml"
    spec.write_text(text.replace("  steps: 400\n", "  epochs: 2\n"), encoding="utf-8")
    assert codes(tmp_path, "pruner: {type: median}\n" + SPACE, spec) == ["E-SWEEP-PRUNE"]
    _, report = load_sweep(tmp_path / "s.yaml")
    assert "the trial spec has no train.eval_every" in report.errors[0].message
    epochs = "set: {train.eval_every: 1000}\npruner: {type: median}\n" + SPACE
    assert "E-SWEEP-PRUNE" not in codes(tmp_path, epochs, spec)


def test_the_prune_error_comes_with_the_other_errors(tmp_path: pathlib.Path) -> None:
    text = "pruner: {type: median}\ntrials: 4\nspace:\n  optimizers.opt.lrr: {loguniform: [1.0e-3, 1.0e-1]}\n"
    assert codes(tmp_path, text) == ["E-SWEEP-PRUNE", "E-SWEEP-PATH"]


# ---------------------------------------------------------------- W-SWEEP-TEST


def test_a_search_on_the_test_split_warns_but_loads(tmp_path: pathlib.Path) -> None:
    sweep, found = load(tmp_path, SPACE)
    assert found == [("W-SWEEP-TEST", 2, 7)]  # at spec: (the base spec's monitor falls back to eval.split)
    assert sweep is not None and sweep.split == "test"
    sweep, found = load(tmp_path, "monitor: {metric: accuracy, split: test, mode: max}\n" + SPACE, WITH_VAL)
    assert found == [("W-SWEEP-TEST", 3, 10)]  # at monitor:
    assert sweep is not None


def test_a_val_split_or_a_seed_study_gives_no_warning(tmp_path: pathlib.Path) -> None:
    assert codes(tmp_path, SPACE, WITH_VAL) == []  # its monitor uses its val split by default
    assert codes(tmp_path, "set: {data.val: {from_split: train, fraction: 0.1}}\n" + SPACE) == []
    assert codes(tmp_path, "monitor: {metric: accuracy, split: train, mode: max}\n" + SPACE) == []
    assert codes(tmp_path, "seeds: 3\n") == []  # a seed study chooses no parameters


def test_the_warning_waits_for_the_errors_to_be_fixed(tmp_path: pathlib.Path) -> None:
    assert codes(tmp_path, "pruner: {type: median}\n" + SPACE) == ["E-SWEEP-PRUNE"]


def test_the_command_prints_the_warning_and_still_runs(tmp_path: pathlib.Path, monkeypatch) -> None:
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "s.yaml"
    path.write_text(f"version: 1\nspec: {XOR}\n{SPACE}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", str(path), "--check"])
    assert result.exit_code == 0, result.output
    assert f"{path}:2:7: W-SWEEP-TEST the sweep chooses its parameters by loss on the test split" in result.output
    assert "hint: declare a val split" in result.output
    assert f"{path}: ok" in result.output
    assert not (tmp_path / "sweeps").exists()
    # a file without warnings prints none
    path.write_text(f"version: 1\nspec: {WITH_VAL}\n{SPACE}", encoding="utf-8")
    result = CliRunner().invoke(cli, ["sweep", str(path), "--check"])
    assert result.exit_code == 0 and "W-SWEEP" not in result.output, result.output
