"""The corpus of broken sweep files (``tests/sweep/broken/*.yaml``): every file names, on its first
line, EXACTLY the diagnostics ``load_sweep`` must report in the sweep file (``# expect: CODE
LINE:COL ...``, in report order), and its second line says what is wrong. The base spec's own
problems (E-SWEEP-SPEC in the spec file) are checked separately. Every diagnostic renders
compiler-style, promised did-you-mean hints are there, and no traceback reaches the user."""

from __future__ import annotations

import functools
import json
import pathlib
import re

import pytest

from onlytorch.spec import diagnostics
from onlytorch.sweep.load import SpecDiagnostic, load_sweep

BROKEN = pathlib.Path(__file__).resolve().parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))
EXPECT = re.compile(r"^# expect:((?: [EW]-[A-Z-]+ \d+:\d+)+)\s*$")
ITEM = re.compile(r"([EW]-[A-Z-]+) (\d+):(\d+)")
SWEEP_CODES = [c for c in diagnostics.CODES if "-SWEEP-" in c]


def expected(path: pathlib.Path) -> list[tuple[str, int, int]]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = EXPECT.match(first)
    assert m, f"{path.name}: the first line must be '# expect: CODE LINE:COL [...]', got {first!r}"
    return [(code, int(line), int(col)) for code, line, col in ITEM.findall(m.group(1))]


@functools.cache
def load_once(path: pathlib.Path) -> tuple[object, diagnostics.Report]:
    """load_sweep's result for a corpus file (the tests below only read it)."""
    return load_sweep(path)


def in_sweep_file(report: diagnostics.Report) -> list[diagnostics.Diagnostic]:
    return [d for d in report.sorted() if not isinstance(d, SpecDiagnostic)]


def test_the_corpus_covers_every_sweep_code_and_the_required_cases() -> None:
    assert len(SWEEP_CODES) == 8, SWEEP_CODES
    covered = {code for f in FILES for code, _, _ in expected(f)}
    assert set(SWEEP_CODES) <= covered, sorted(set(SWEEP_CODES) - covered)
    # the spec language's codes a sweep file shares (bad YAML, unsafe tags, unknown keys, types)
    assert {"E-YAML", "E-YAML-TAG", "E-YAML-DUP", "E-KEY", "E-TYPE", "E-MISSING"} <= covered
    names = {f.stem for f in FILES}
    for required in (
        "path_unknown_with_suggestion",
        "space_empty",
        "bounds_low_above_high",
        "metric_unknown",
        "yaml_unclosed_bracket",
        "key_unknown",
        "type_wrong",
        "spec_missing",
        "grid_continuous",
    ):
        assert required in names


def test_every_file_says_what_is_wrong_and_is_small() -> None:
    for f in FILES:
        lines = f.read_text(encoding="utf-8").splitlines()
        assert lines[1].startswith("# ") and len(lines[1]) > 10, f"{f.name}: line 2 must say what is broken"
        assert len(lines) <= 40, f.name


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_load_sweep_reports_exactly_the_expected_diagnostics(path: pathlib.Path) -> None:
    sweep, report = load_once(path)
    got = [(d.code, d.line, d.column) for d in in_sweep_file(report)]
    assert got == expected(path), "\n" + report.render()
    # a file with only warnings (W-SWEEP-TEST) still loads: warnings do not stop a sweep
    assert (sweep is None) == any(code.startswith("E-") for code, _, _ in expected(path))
    for d in report.items:
        assert d.code in diagnostics.CODES
        assert d.message and "Traceback" not in d.message


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_every_diagnostic_renders_with_its_line_and_a_caret(path: pathlib.Path) -> None:
    _, report = load_once(path)
    out = report.render().splitlines()
    source = path.read_text(encoding="utf-8").splitlines()
    heads = [i for i, text in enumerate(out) if text.startswith(f"{path}:")]
    want = expected(path)
    assert len(heads) == len(want), report.render()
    for i, (code, line, col) in zip(heads, want):
        assert out[i].startswith(f"{path}:{line}:{col}: {code} "), out[i]
        shown, at, _ = diagnostics.excerpt(source[line - 1], col)
        assert out[i + 1] == "    " + shown
        assert re.fullmatch(r" {4}" + " " * (at - 1) + r"\^~*", out[i + 2]), out[i + 2]
    payload = json.loads(report.to_json())
    assert [(d["code"], d["line"], d["column"]) for d in payload["diagnostics"] if d["file"] == str(path)] == want


HINTS = {
    "path_unknown_with_suggestion": "did you mean 'lr'?",
    "set_path_unknown": "did you mean 'steps'?",
    "metric_unknown": "did you mean 'accuracy'?",
    "key_unknown": "did you mean 'trials'?",
    "spec_missing": "did you mean 'xor.yaml'?",
    "many_errors": "did you mean 'betas'?",
    "metric_wrong_mode": "write mode: min",
    "grid_too_many_trials": "trials: 6",
    "prune_no_eval_every": "set train.eval_every in set:, e.g. train.eval_every: 100 (or pruner: {type: none})",
    "prune_eval_every_not_below_steps": "set train.eval_every below train.steps in set:, e.g. train.eval_every: 20",
    "test_split_by_default": "declare a val split in the base spec's data (data.val: {from_split: train, fraction:",
    "test_split_declared": "monitor: {metric: accuracy, split: val, mode: max}",
}


@pytest.mark.parametrize("name", sorted(HINTS))
def test_promised_hints_appear(name: str) -> None:
    _, report = load_once(BROKEN / f"{name}.yaml")
    assert f"    hint: {HINTS[name]}" in report.render(), report.render()


MESSAGES = {
    "path_unknown_with_suggestion": "space optimizers.opt.lrr: unknown key 'lrr'",
    "set_path_unknown": "no item 'fitt' here (use an index 0..0 or a name: fit)",
    "space_empty": "nothing to search",
    "bounds_low_above_high": "low must be below high, got [0.5, 0.01]",
    "bounds_loguniform_zero": "loguniform needs 0 < low",
    "bounds_int_not_integer": "is not a multiple of step 100",
    "metric_unknown": "unknown metric 'acuracy'; evaluation reports: loss, accuracy",
    "metric_nothing_evaluated": "evaluates nothing",
    "metric_without_mode": "accuracy has no declared direction",
    "grid_continuous": "loguniform without step is continuous",
    "tag_python": "is not allowed",
    "value_kind_wrong": "train.steps: must be an integer, not float 100.0",
    "space_two_kinds": "takes exactly one of 'loguniform', 'uniform', 'int', 'choice'",
    "path_seed_and_overlap": "the same part of the spec as set optimizers.opt",
    "path_monitor_and_space_overlap": "the monitored metric is what trials are compared by",
    "bounds_many": "step does not combine with log",
    "seeds_twice": "seed 1 appears twice",
    "seed_study_with_trials": "trials: 3 would repeat it",
    "trials_missing": "the sweep file needs the key 'version'",
    "many_errors": "sampler: unknown type 'tp'; use one of: tpe, random, grid, cmaes",
    "prune_no_eval_every": "pruner median has nothing to act on: the trial spec has no train.eval_every",
    "prune_eval_every_not_below_steps": "train.eval_every (200) is not below train.steps (200)",
    "test_split_by_default": "by loss on the test split (the base spec declares no val split",
    "test_split_declared": "by accuracy on the test split (the sweep's monitor: says split: test)",
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_say_what_is_wrong(name: str) -> None:
    _, report = load_once(BROKEN / f"{name}.yaml")
    assert any(MESSAGES[name] in d.message for d in report.items), report.render()


def test_the_base_spec_problems_are_located_in_the_spec_file() -> None:
    path = BROKEN / "spec_invalid.yaml"
    _, report = load_sweep(path)
    spec = BROKEN.parent.parent / "spec" / "broken" / "name_unknown_node.yaml"
    elsewhere = [d for d in report.items if isinstance(d, SpecDiagnostic)]
    assert [(d.code, d.line, d.column) for d in elsewhere] == [("E-SWEEP-SPEC", 16, 25)]
    assert "(E-NAME) unknown name 'logit'" in elsewhere[0].message
    text = report.render()
    name = elsewhere[0].file
    assert pathlib.Path(name).resolve() == spec.resolve() and ".." not in pathlib.Path(name).parts
    assert f"{name}:16:25: E-SWEEP-SPEC (E-NAME) unknown name 'logit'" in text
    assert "      loss: bce_with_logits(logit, y)" in text  # the spec's line, not the sweep file's
    assert "hint: did you mean 'logits'?" in text
    assert text.index(f"{path}:4:7") < text.index(f"{name}:16:25")  # the sweep file's own first
    files = {d["file"] for d in json.loads(report.to_json())["diagnostics"]}
    assert files == {str(path), elsewhere[0].file}


def test_a_required_case_shows_all_its_errors_at_once() -> None:
    _, report = load_sweep(BROKEN / "many_errors.yaml")
    assert len(report.errors) >= 8
    assert {d.path[0] for d in report.items if d.path} >= {"name", "monitor", "sampler", "pruner", "set", "space"}
