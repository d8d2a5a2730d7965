"""The command line's op listing (the registry as users see it)."""

from click.testing import CliRunner
from onlytorch_cli.main import cli


def test_ops_lists_the_registry():
    result = CliRunner().invoke(cli, ["ops"])
    assert result.exit_code == 0
    names = {line.split()[0] for line in result.output.splitlines() if line.strip()}
    for op in ("tanh", "matmul", "cross_entropy", "stop_gradient", "dropout", "logsumexp"):
        assert op in names
    assert "sum_to" not in names  # internal gradient plumbing is not listed


def test_ops_shows_one_op():
    result = CliRunner().invoke(cli, ["ops", "sum"])
    assert result.exit_code == 0
    assert "sum(x, axis=None, keepdims=False)" in result.output
    assert "derivative: yes" in result.output
    result = CliRunner().invoke(cli, ["ops", "stop_gradient"])
    assert "aliases: detach" in result.output and "derivative: none" in result.output


def test_unknown_op_is_a_usage_error_with_a_suggestion():
    result = CliRunner().invoke(cli, ["ops", "tahn"])
    assert result.exit_code == 2
    assert "did you mean 'tanh'" in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0 and "onlytorch" in result.output


def test_help_and_version_start_without_numpy_or_the_engine():
    # `onlytorch --help` must be instant: the numpy-heavy modules are imported by the commands
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from onlytorch_cli.main import cli\n"
        "for args in (['--help'], ['train', '--help'], ['--version']):\n"
        "    try:\n"
        "        cli(args)\n"
        "    except SystemExit as e:\n"
        "        assert e.code == 0, e.code\n"
        "print(sorted(m for m in ('numpy', 'onlytorch.graph', 'pydantic', 'yaml') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "[]", out


def test_an_error_no_command_handles_is_one_line_and_exit_1():
    # Out of memory while compiling, or a bug: a failed command, never a traceback.
    import pathlib

    import pytest

    import onlytorch.compile as compile_module

    xor = str(pathlib.Path(__file__).resolve().parents[1] / "specs" / "xor.yaml")
    for raised, expected in [
        (MemoryError(), "error: out of memory: the model, batch or data do not fit in this machine's memory"),
        (RuntimeError("boom"), "error: internal error: RuntimeError: boom (a bug in onlytorch; please report it)"),
    ]:

        def explode(*args, _raised=raised, **kwargs):  # type: ignore[no-untyped-def]
            raise _raised

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(compile_module, "compile_file", explode)
            result = CliRunner().invoke(cli, ["validate", xor])
        assert result.exit_code == 1, result.output
        assert result.output.strip() == expected
        assert result.exception is None or isinstance(result.exception, SystemExit)


EXTENSION = """
from pydantic import Field
from onlytorch import nn


class ShiftOptions(nn.LayerOptions):
    init: str = Field("zeros", description="the initialiser of the shift")


@nn.layer("cli_shift", ShiftOptions, doc="x + b", params=lambda width, o: {"bias": (width,)})
def cli_shift(g, x, o, name):
    b = g.parameter(f"{name}.bias", shape=(x.shape[-1],), init=o.init)
    return lambda v: v + b
"""


def test_import_loads_the_user_s_declarations_before_the_command(tmp_path, monkeypatch):
    import pathlib
    import sys

    from onlytorch import nn

    xor = (pathlib.Path(__file__).resolve().parent.parent / "specs" / "xor.yaml").read_text()
    spec = tmp_path / "shifted.yaml"
    spec.write_text(
        xor.replace("net: [{linear: 8}, tanh, {linear: 1}]", "net: [{cli_shift: {}}, {linear: 8}, tanh, {linear: 1}]")
    )
    assert "cli_shift" in spec.read_text()
    (tmp_path / "my_cli_ext.py").write_text(EXTENSION)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(tmp_path))])
    try:
        unknown = CliRunner().invoke(cli, ["validate", str(spec), "-q"])
        assert unknown.exit_code == 2 and "E-MODULE unknown layer 'cli_shift'" in unknown.output
        done = CliRunner().invoke(cli, ["--import", "my_cli_ext", "validate", str(spec)])
        assert done.exit_code == 0, done.output
        assert "net.0.bias" in done.output or "5 parameter tensors" in done.output
        missing = CliRunner().invoke(cli, ["--import", "no_such_extension", "validate", str(spec)])
        assert missing.exit_code == 2
        assert "--import no_such_extension: ModuleNotFoundError" in missing.output
    finally:
        if "cli_shift" in nn.LAYERS:
            nn.unregister("cli_shift")
        sys.modules.pop("my_cli_ext", None)
