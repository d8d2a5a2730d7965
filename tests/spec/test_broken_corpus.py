"""The corpus of broken specs (``tests/spec/broken/*.yaml``): every file names, on its first line,
EXACTLY the diagnostics ``validate`` must report (``# expect: CODE LINE:COL ...``, in report order),
and its second line says what is wrong. Each file runs through ``compile_file`` and through the
command line; the list must match to the column, every diagnostic must render compiler-style
(``file:line:col: CODE``, the source line, a caret), promised did-you-mean hints must be there, and
no Python traceback may ever reach the user."""

from __future__ import annotations

import json
import pathlib
import re

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file
from onlytorch.spec import diagnostics

BROKEN = pathlib.Path(__file__).resolve().parent / "broken"
FILES = sorted(BROKEN.glob("*.yaml"))
EXPECT = re.compile(r"^# expect:((?: [EW]-[A-Z-]+ \d+:\d+)+)\s*$")
ITEM = re.compile(r"([EW]-[A-Z-]+) (\d+):(\d+)")
ALL_CODES = list(diagnostics.CODES)


def expected(path: pathlib.Path) -> list[tuple[str, int, int]]:
    first = path.read_text(encoding="utf-8").splitlines()[0]
    m = EXPECT.match(first)
    assert m, f"{path.name}: the first line must be '# expect: CODE LINE:COL [...]', got {first!r}"
    return [(code, int(line), int(col)) for code, line, col in ITEM.findall(m.group(1))]


def ids(paths: list[pathlib.Path]) -> list[str]:
    return [p.stem for p in paths]


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    # a user's mistake must end in sys.exit(code), never in an exception escaping the command
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


# ---------------------------------------------------------------- the corpus itself


def test_the_corpus_is_large_and_covers_every_code() -> None:
    assert len(FILES) >= 45
    assert len(ALL_CODES) >= 19, ALL_CODES  # the table in onlytorch/spec/diagnostics.py
    covered = {code for f in FILES for code, _, _ in expected(f)}
    # the sweep file's codes have their corpus of broken sweep files (tests/sweep/test_broken_sweeps.py)
    sweeps = sorted((BROKEN.parents[1] / "sweep" / "broken").glob("*.yaml"))
    covered |= {code for f in sweeps for code, _, _ in expected(f) if "-SWEEP-" in code}
    assert covered == set(ALL_CODES), f"codes with no broken file: {sorted(set(ALL_CODES) - covered)}"


def test_every_file_says_what_is_wrong_and_is_small() -> None:
    for f in FILES:
        lines = f.read_text(encoding="utf-8").splitlines()
        assert lines[1].startswith("# ") and len(lines[1]) > 10, f"{f.name}: line 2 must say what is broken"
        assert len(lines) <= 60, f"{f.name}: keep corpus files small"


def test_several_files_hold_many_problems_in_different_sections() -> None:
    many = [f for f in FILES if f.stem.startswith("many_errors")]
    assert len(many) >= 3
    for f in many:
        found = expected(f)
        assert len(found) >= 5, f.name
        _, report = compile_file(f)
        sections = {d.path[0] for d in report.items if d.path}
        assert len(sections) >= 3, (f.name, sections)


# ---------------------------------------------------------------- through the compiler


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_compile_file_reports_exactly_the_expected_diagnostics(path: pathlib.Path) -> None:
    compiled, report = compile_file(path)
    got = [(d.code, d.line, d.column) for d in report.sorted()]
    assert got == expected(path), "\n" + report.render()
    assert (compiled is None) == bool(report.errors)
    for d in report.items:
        assert d.code in ALL_CODES
        assert d.message and "Traceback" not in d.message


# ---------------------------------------------------------------- through the command line


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_cli_validate_renders_every_diagnostic_with_its_line_and_caret(path: pathlib.Path) -> None:
    want = expected(path)
    has_errors = any(code.startswith("E-") for code, _, _ in want)
    code, out = run_cli("validate", str(path))
    assert code == (2 if has_errors else 0), out
    assert "Traceback" not in out
    lines = out.splitlines()
    source = path.read_text(encoding="utf-8").splitlines()
    heads = [i for i, text in enumerate(lines) if re.match(re.escape(f"{path}:") + r"\d+:\d+: ", text)]
    assert [tuple(lines[i][len(str(path)) + 1 :].split(": ", 1)[0].split(":")) for i in heads] == [
        (str(line), str(col)) for _, line, col in want
    ]
    for i, (dcode, line, col) in zip(heads, want):
        assert lines[i].startswith(f"{path}:{line}:{col}: {dcode} "), lines[i]
        shown, at, _ = diagnostics.excerpt(source[line - 1].rstrip("\n"), col)  # a long line: the part around col
        assert lines[i + 1] == "    " + shown, "the source line must follow"
        caret = lines[i + 2]
        assert re.fullmatch(r" {4}" + " " * (at - 1) + r"\^~*", caret), f"caret under column {col}: {caret!r}"
    verdict = "invalid" if has_errors else "valid"
    assert f"{path}: {verdict} (" in out


@pytest.mark.parametrize("path", FILES, ids=ids(FILES))
def test_cli_validate_json_lists_the_same_diagnostics(path: pathlib.Path) -> None:
    code, out = run_cli("validate", "--json", str(path))
    payload = json.loads(out[out.index("{") :])
    got = [(d["code"], d["line"], d["column"]) for d in payload["diagnostics"]]
    assert got == expected(path)
    assert code == (2 if payload["errors"] else 0)


WARNING_ONLY = [f for f in FILES if all(c.startswith("W-") for c, _, _ in expected(f))]


def test_there_are_warning_only_files() -> None:
    assert {p.stem for p in WARNING_ONLY} >= {
        "warn_retain_last_backward",
        "warn_unused_module",
        "warn_unused_parameter",
    }


@pytest.mark.parametrize("path", WARNING_ONLY, ids=ids(WARNING_ONLY))
def test_warnings_pass_validate_but_fail_it_with_strict(path: pathlib.Path) -> None:
    code, out = run_cli("validate", str(path))
    assert code == 0, out
    assert f"{path}: valid (0 errors" in out
    code, out = run_cli("validate", "--strict", str(path))
    assert code == 2, out
    assert f"{path}: invalid (0 errors" in out
    assert "Traceback" not in out


# ---------------------------------------------------------------- hints and messages


HINTS = {
    "gym_unknown_action_node": "did you mean 'action'?",
    "gym_float_action": "e.g. categorical_sample(logits)",
    "gym_unknown_field": "did you mean 'advantage'?",
    "gym_unknown_param": "did you mean 'gamma'?",
    "gym_obs_field_typo": "did you mean 'obs'?",
    "gym_action_is_a_module": "name a node that calls it",
    "key_top_level": "did you mean 'train'?",
    "key_in_data": "did you mean 'shuffle'?",
    "key_in_input": "did you mean 'dtype'?",
    "key_in_optimizer": "did you mean 'betas'?",
    "key_in_backward": "did you mean 'weight'?",
    "type_unknown_optimizer": "did you mean 'adam'?",
    "type_unknown_source": "did you mean 'synthetic.xor'?",
    "name_unknown_node": "did you mean 'logits'?",
    "name_unknown_function": "did you mean 'sigmoid'?",
    "name_unknown_module": "did you mean 'cell'?",
    "name_unknown_loss": "did you mean 'loss'?",
    "name_unknown_optimizer": "did you mean 'opt'?",
    "name_unknown_detach": "did you mean 'fake'?",
    "name_eval_metric": "did you mean 'accuracy'?",
    "module_unknown_layer": "did you mean 'tanh'?",
    "arg_unknown_keyword": "did you mean 'axis'?",
    "many_errors_everywhere": "did you mean 'int64'?",
    "released_multitask": "add retain_graph: true to backward 1",
    "shape_input_vs_data": "use shape: [2]",
    "warn_retain_last_backward": "remove retain_graph: true",
}


@pytest.mark.parametrize("name", sorted(HINTS))
def test_promised_hints_appear(name: str) -> None:
    path = BROKEN / f"{name}.yaml"
    _, out = run_cli("validate", str(path))
    assert f"    hint: {HINTS[name]}" in out, out


MESSAGES = {
    "gym_policy_with_dropout": "action node action goes through dropout: it is computed in eval mode while acting",
    "gym_unknown_env": "unknown environment 'CartPole-v9'; did you mean 'CartPole-v1'?",
    "gym_env_imports_module": "environment id 'os:CartPole-v1' contains ':', which gymnasium reads as a Python module",
    "gym_log_prob_integer": "log_prob node action must be float, not int64",
    # the E-OUTPUT of carry: and eval.samples, not "unknown node 'heads'; did you mean 'heads'?"
    "gym_value_several_outputs": "data.train.value: heads holds several outputs (logits, value); "
    "data.train.value names one tensor",
    "gym_phase_repeat_and_epochs": "phase a2c: give 'repeat' (runs per iteration) or 'epochs' (passes over the data), not both",
    "data_missing_file": "no such file",
    "data_wrong_noise": "use noise.normal or noise.uniform",
    "dup_module_named_like_op": "hides the function mean()",
    "dup_phase_name": "two phases are called 'discriminator'",
    "cycle_three": "logits -> c -> a -> logits",
    "phase_detach_cuts_optimizer": "phase generator steps g_opt, but no backward of the phase reaches its parameters: fake is detached",
    "released_multitask": "backward 2 (reg_loss) needs values that backward 1 (cls_loss) releases",
    "loss_non_scalar": "metric prob must be a scalar",
    "module_layer_as_list": "a layer is a name (relu) or a one-key mapping",
    "shape_layer_wrong_size": "calling module D",
    "type_from_and_carry": "exactly one of 'from' and 'carry'",
    "type_bad_betas": "betas must be a pair",
    "tag_python_apply": "'tag:yaml.org,2002:python/object/apply:os.system' is not allowed",
    "yaml_unclosed_quote": "never closed",
    "expr_deep_nesting": "nests too deeply",
    "expr_big_power": "too large",
    "warn_unused_parameter": "aux.0.weight, aux.0.bias are never updated",
}


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_messages_say_what_is_wrong(name: str) -> None:
    _, report = compile_file(BROKEN / f"{name}.yaml")
    assert any(MESSAGES[name] in d.message for d in report.items), report.render()


def test_no_cascade_from_broken_nodes() -> None:
    # fake (syntax), d_real (unknown name) and m1 (shape) are broken; d_fake, both losses, m2 and
    # both phases use them and must stay quiet, as must the modules they would have called.
    _, report = compile_file(BROKEN / "many_errors_no_cascade.yaml")
    reported = {d.path[:2] for d in report.items}
    for quiet in [
        ("nodes", "d_fake"),
        ("losses", "d_loss"),
        ("losses", "g_loss"),
        ("metrics", "m2"),
        ("train", "schedule"),
    ]:
        assert quiet not in reported, report.render()
    assert not report.warnings
