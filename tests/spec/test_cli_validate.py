"""``onlytorch validate`` (and the spec commands' handling of bad files): exit codes, the compile
report, compiler-style diagnostics with carets, ``--json``, ``--strict``, ``-q``, and never a Python
traceback for a user's mistake."""

from __future__ import annotations

import json
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
from click.testing import CliRunner, Result
from example_init import example_in_place
from onlytorch_cli.main import cli

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
EXAMPLES = sorted(SPECS.glob("*.yaml"))
LOCATED = re.compile(r"^(?P<file>\S+?):(?P<line>\d+):(?P<col>\d+): (?P<code>[EW]-[A-Z-]+) ", re.M)

BROKEN = """\
# three mistakes at once
version: 1
name: broken
inputs:
  x: {shape: [2], from: noise.normal}
modules:
  net: [{linear: 8}, tanh, {linear: 1}]
nodes:
  out: nett(x)
  h: net(x)
losses:
  loss: mean(out)
  l2: mean(outt)
optimizers:
  opt: {type: adam, lr: 0.1, params: [net], betas2: [0.9, 0.99]}
train:
  steps: 10
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""

# Valid, but retain_graph on the only (so the last) backward keeps values nothing needs: W-RETAIN.
RETAIN = """\
# a warning only
version: 1
name: retain
inputs:
  x: {shape: [2], from: noise.normal}
modules:
  net: [{linear: 1}]
losses:
  loss: mean(net(x))
optimizers:
  opt: {type: sgd, lr: 0.1, params: [net]}
train:
  steps: 10
  schedule:
    - name: fit
      backward: [{loss: loss, retain_graph: true}]
      step: [opt]
"""


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def no_traceback(result: Result) -> None:
    assert "Traceback" not in result.output, result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)


def write(tmp_path: pathlib.Path, name: str, text: str | bytes) -> str:
    p = tmp_path / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text, encoding="utf-8")
    return str(p)


def needs(path: pathlib.Path) -> None:
    if "digits" in path.stem:
        pytest.importorskip("sklearn")


# ------------------------------------------------------------------ valid specs


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_validate_each_example(path: pathlib.Path) -> None:
    needs(path)
    path, flags = example_in_place(path)  # distill_digits: beside a teacher's run
    result = run("validate", str(path), *flags)
    no_traceback(result)
    assert result.exit_code == 0, result.output
    out = result.stdout.splitlines()
    assert out[0].startswith("spec '")  # the compile report ...
    assert any(line.startswith("phase ") for line in out)
    assert out[-1] == f"{path}: valid (0 errors, 0 warnings)"  # ... then the verdict
    assert result.stderr == ""


def test_quiet_prints_no_report() -> None:
    path = SPECS / "gan_ring.yaml"
    result = run("validate", "-q", str(path))
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [f"{path}: valid (0 errors, 0 warnings)"]
    assert run("validate", "--quiet", str(path)).stdout == result.stdout


def test_json_on_a_valid_spec() -> None:
    path = SPECS / "xor.yaml"
    result = run("validate", "--json", str(path))
    assert result.exit_code == 0
    data = json.loads(result.stdout)  # only the JSON on stdout: no report, no verdict line
    assert data == {"file": str(path), "errors": 0, "warnings": 0, "diagnostics": []}


# ------------------------------------------------------------------ invalid specs


def test_broken_spec_reports_every_mistake_with_location_and_caret(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "broken.yaml", BROKEN)
    result = run("validate", spec)
    no_traceback(result)
    assert result.exit_code == 2
    assert result.stdout == ""  # no report for an invalid spec; everything on stderr
    err = result.stderr
    found = [(int(m["line"]), int(m["col"]), m["code"]) for m in LOCATED.finditer(err)]
    assert all(m["file"] == spec for m in LOCATED.finditer(err))
    assert found == [(9, 8, "E-NAME"), (13, 12, "E-NAME"), (15, 45, "E-KEY")]
    lines = err.splitlines()
    # Each diagnostic quotes its line and puts a caret (with ~ over the rest of the name) under the spot.
    i = lines.index(f"{spec}:9:8: E-NAME unknown function 'nett'")
    assert lines[i + 1] == "      out: nett(x)"
    assert lines[i + 2] == "           ^~~~"
    assert lines[i + 3] == "    hint: did you mean 'net'?"
    i = next(k for k, line in enumerate(lines) if line.startswith(f"{spec}:15:45: E-KEY unknown key 'betas2'"))
    assert lines[i + 2] == "    " + " " * 44 + "^~~~~~"
    assert "did you mean 'betas'?" in lines[i + 3]
    assert "did you mean 'out'?" in err
    assert lines[-1] == f"{spec}: invalid (3 errors, 0 warnings)"


def test_broken_spec_as_json(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "broken.yaml", BROKEN)
    result = run("validate", "--json", spec)
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert data["file"] == spec and data["errors"] == 3 and data["warnings"] == 0
    assert len(data["diagnostics"]) == 3
    keys = {"file", "line", "column", "code", "severity", "message", "hint", "path"}
    for d in data["diagnostics"]:
        assert set(d) == keys
        assert d["file"] == spec and d["severity"] == "error"
        assert isinstance(d["line"], int) and isinstance(d["column"], int)
    first, second, third = data["diagnostics"]
    assert (first["line"], first["column"], first["code"]) == (9, 8, "E-NAME")
    assert first["message"] == "unknown function 'nett'" and first["hint"] == "did you mean 'net'?"
    assert first["path"] == ["nodes", "out"]
    assert (second["line"], second["code"], second["path"]) == (13, "E-NAME", ["losses", "l2"])
    assert (third["line"], third["column"], third["code"]) == (15, 45, "E-KEY")
    assert third["path"] == ["optimizers", "opt", "betas2"] and third["hint"] == "did you mean 'betas'?"


def test_warning_only_spec_passes_unless_strict(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "retain.yaml", RETAIN)
    result = run("validate", spec)
    no_traceback(result)
    assert result.exit_code == 0
    assert f"{spec}:16:45: W-RETAIN" in result.stderr
    assert "hint: remove retain_graph: true" in result.stderr
    assert result.stdout.startswith("spec 'retain'")  # the report is printed: the spec is valid
    assert result.stdout.splitlines()[-1] == f"{spec}: valid (0 errors, 1 warning)"

    strict = run("validate", "--strict", spec)
    no_traceback(strict)
    assert strict.exit_code == 2
    assert f"{spec}:16:45: W-RETAIN" in strict.stderr
    assert strict.stdout == ""
    assert strict.stderr.splitlines()[-1] == f"{spec}: invalid (0 errors, 1 warning)"

    as_json = run("validate", "--strict", "--json", spec)
    assert as_json.exit_code == 2
    data = json.loads(as_json.stdout)
    assert data["errors"] == 0 and data["warnings"] == 1
    (w,) = data["diagnostics"]
    assert (w["code"], w["severity"], w["line"], w["column"]) == ("W-RETAIN", "warning", 16, 45)
    assert w["path"][-1] == "retain_graph"
    assert run("validate", "--json", spec).exit_code == 0


def test_quiet_still_prints_diagnostics(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "retain.yaml", RETAIN)
    result = run("validate", "-q", spec)
    assert result.exit_code == 0
    assert "W-RETAIN" in result.stderr
    assert result.stdout.splitlines() == [f"{spec}: valid (0 errors, 1 warning)"]
    broken = run("validate", "-q", write(tmp_path, "broken.yaml", BROKEN))
    assert broken.exit_code == 2 and len(LOCATED.findall(broken.stderr)) == 3


# ------------------------------------------------------------------ files that are not specs


@pytest.mark.parametrize("command", ["validate", "graph"])
def test_missing_file_is_a_usage_error(tmp_path: pathlib.Path, command: str) -> None:
    result = run(command, str(tmp_path / "nope.yaml"))
    no_traceback(result)
    assert result.exit_code == 2
    assert "does not exist" in result.stderr
    assert len(result.stderr.splitlines()) <= 5


@pytest.mark.parametrize("command", ["validate", "graph"])
def test_directory_is_a_usage_error(tmp_path: pathlib.Path, command: str) -> None:
    result = run(command, str(tmp_path))
    no_traceback(result)
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert len(result.stderr.splitlines()) <= 5


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", "# only a comment\n", "# a comment\n\n# and another\n"],
    ids=["empty", "blank-lines", "comment", "comments"],
)
def test_empty_or_comment_only_file(tmp_path: pathlib.Path, text: str) -> None:
    spec = write(tmp_path, "empty.yaml", text)
    result = run("validate", spec)
    no_traceback(result)
    assert result.exit_code == 2
    assert re.search(rf"^{re.escape(spec)}:1:1: E-TYPE a spec is a mapping of sections", result.stderr, re.M), (
        result.stderr
    )
    assert result.stderr.splitlines()[-1] == f"{spec}: invalid (1 error, 0 warnings)"
    graph = run("graph", spec)
    no_traceback(graph)
    assert graph.exit_code == 2


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"], ids=["list", "string", "number"])
def test_top_level_not_a_mapping(tmp_path: pathlib.Path, text: str) -> None:
    spec = write(tmp_path, "s.yaml", text)
    result = run("validate", spec)
    no_traceback(result)
    assert result.exit_code == 2
    assert f"{spec}:1:1: E-TYPE" in result.stderr
    assert "    ^" in result.stderr


def test_non_utf8_bytes(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "latin1.yaml", b"version: 1\nname: caf\xe9\ninputs: {}\nlosses: {}\n")
    for args in (["validate", spec], ["validate", "--json", spec], ["graph", spec]):
        result = run(*args)
        no_traceback(result)
        assert result.exit_code == 2
    result = run("validate", spec)
    assert "E-YAML" in result.stderr
    assert "utf-8" in result.stderr.lower()  # says what is wrong with the file
    assert result.stderr.splitlines()[-1] == f"{spec}: invalid (1 error, 0 warnings)"
    data = json.loads(run("validate", "--json", spec).stdout)
    assert data["errors"] == 1 and data["diagnostics"][0]["code"] == "E-YAML"


def test_non_utf8_bytes_are_located(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, "latin1.yaml", b"version: 1\nname: caf\xe9\ninputs: {}\nlosses: {}\n")
    data = json.loads(run("validate", "--json", spec).stdout)
    (d,) = data["diagnostics"]
    assert (d["line"], d["column"]) == (2, 10)


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("version: 1\nname: [unclosed\n", "E-YAML"),
        ("version: 1\nname: a\nname: b\ninputs: {}\nlosses: {}\n", "E-YAML-DUP"),
        ("version: 1\nname: !!python/object:os.system x\ninputs: {}\nlosses: {}\n", "E-YAML-TAG"),
        ("version: 1\nname: a\ninputs:\n  x: {shape: [2], from: noise.normal}\nlosses:\n  l: mean(x ** )\n", "E-EXPR"),
        ("version: 1\nname: a\ninputs:\n  x: {shape: [2], from: noise.normal}\nlosses:\n  l: x.__class__\n", "E-EXPR"),
        (
            "version: 1\nname: a\ninputs:\n  x: {shape: [2], from: noise.normal}\nlosses:\n  l: __import__('os')\n",
            "E-NAME",
        ),
        ("*undefined\n", "E-YAML"),
        (
            "version: 1\nname: a\ninputs:\n  x: {shape: [2], from: noise.normal}\nlosses:\n  l: "
            + "(" * 300
            + "x"
            + ")" * 300
            + "\n",
            None,
        ),
    ],
    ids=["syntax", "duplicate-key", "python-tag", "bad-expression", "attribute", "import", "alias", "deep"],
)
def test_malformed_specs_exit_2_without_traceback(tmp_path: pathlib.Path, text: str, code: str | None) -> None:
    spec = write(tmp_path, "bad.yaml", text)
    for command in ("validate", "graph"):
        result = run(command, spec)
        no_traceback(result)
        assert result.exit_code == 2, (command, result.output)
    result = run("validate", spec)
    if code is not None:
        assert code in {m["code"] for m in LOCATED.finditer(result.stderr)}, result.stderr
    assert re.search(r"invalid \(\d+ errors?, \d+ warnings?\)$", result.stderr.strip())


# ------------------------------------------------------------------ the program as users run it


def test_help_lists_the_spec_commands() -> None:
    result = run("--help")
    assert result.exit_code == 0
    listed = set(re.findall(r"^  (\w+)\s", result.output, re.M))
    assert {"validate", "graph", "schema", "ops"} <= listed
    for command in ("validate", "graph", "schema", "ops"):
        sub = run(command, "--help")
        assert sub.exit_code == 0 and sub.output.startswith("Usage: ")
    v = run("validate", "--help").output
    for option in ("--strict", "--json", "--quiet", "-q"):
        assert option in v


def test_unknown_option_is_a_usage_error() -> None:
    result = run("validate", "--stirct", str(SPECS / "xor.yaml"))
    no_traceback(result)
    assert result.exit_code == 2 and "No such option" in result.stderr


def _command() -> list[str]:
    exe = shutil.which("onlytorch") or str(pathlib.Path(sys.executable).with_name("onlytorch"))
    if pathlib.Path(exe).exists():
        return [exe]
    return [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()"]


@pytest.mark.parametrize("via", ["console-script", "python"])
def test_real_process(tmp_path: pathlib.Path, via: str) -> None:
    """The installed program, in a real process: exit codes and streams as a shell sees them."""
    cmd = _command() if via == "console-script" else [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()"]
    ok = subprocess.run([*cmd, "validate", str(SPECS / "xor.yaml")], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1].endswith("xor.yaml: valid (0 errors, 0 warnings)")
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"version: 1\nname: \xff\xfe\n")
    for target in (str(bad), str(tmp_path / "missing.yaml"), str(tmp_path)):
        proc = subprocess.run([*cmd, "validate", target], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 2, (target, proc.stderr)
        assert "Traceback" not in proc.stderr + proc.stdout
        assert proc.stderr.strip()


def test_a_misspelt_module_call_is_reported_once(tmp_path: pathlib.Path) -> None:
    spec = write(
        tmp_path, "typo.yaml", RETAIN.replace("mean(net(x))", "mean(nett(x))").replace(", retain_graph: true", "")
    )
    result = run("validate", "--json", spec)
    assert result.exit_code == 2
    data = json.loads(result.stdout)
    assert [(d["code"], d["hint"]) for d in data["diagnostics"]] == [("E-NAME", "did you mean 'net'?")]
