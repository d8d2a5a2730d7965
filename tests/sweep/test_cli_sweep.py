"""``onlytorch sweep`` (cli/sweep_cmd.py): exit codes, --check, progress lines, reruns, refusals,
and no optuna or ray imported until a sweep runs."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner, Result
from onlytorch_cli.main import cli

from .engine_helpers import info, rows, run_dirs, write_sweep

SPACE = """\
trials: 3
space:
  optimizers.opt.lr: {loguniform: [0.001, 0.1]}
"""


def invoke(*args: object) -> Result:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


def test_the_command_line_imports_no_optuna_or_ray():
    code = (
        "import sys\n"
        "from onlytorch_cli.main import cli\n"
        "try:\n"
        "    cli(['sweep', '--help'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "bad = [m for m in ('optuna', 'ray', 'sqlalchemy', 'numpy') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    # the library's sweep package too imports neither until a sweep runs
    code = "import sys, onlytorch.sweep; bad = [m for m in ('optuna', 'ray') if m in sys.modules]; assert not bad, bad"
    subprocess.run([sys.executable, "-c", code], check=True)
    result = invoke("sweep", "--help")
    assert result.exit_code == 0
    for option in ("--workers", "--storage", "--executor", "--address", "--out", "--check", "--quiet"):
        assert option in result.output


def test_check_prints_the_plan_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    file = write_sweep(tmp_path, SPACE + "seeds: 2\npruner: {type: median, startup_trials: 2}\n")
    result = invoke("sweep", file, "--check", "--workers", 2, "--storage", "postgresql://me:pw@db/x")
    assert result.exit_code == 0, result.output
    for text in (
        "sweep s: 3 trials",
        "optimizers.opt.lr: loguniform [0.001, 0.1]",
        "seeds 0, 1",
        "sampler: tpe",
        "pruner: median (startup_trials 2",
        "storage: postgresql://me:***@db/x",
        "local, 2 workers",
    ):
        assert text in result.output, (text, result.output)
    assert "pw@" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.yaml"]


def test_an_invalid_sweep_file_exits_2_located_and_writes_nothing(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    monkeypatch.chdir(tmp_path)
    file = write_sweep(tmp_path, "trials: 2\nspace:\n  optimizers.opt.lrr: {loguniform: [0.001, 0.1]}\n")
    result = invoke("sweep", file)
    assert result.exit_code == 2
    assert "s.yaml:" in result.output and "E-SWEEP-PATH" in result.output and "optimizers.opt.lr" in result.output
    assert not (tmp_path / "sweeps").exists()


def test_usage_mistakes_exit_2(tmp_path):
    file = write_sweep(tmp_path, SPACE)
    assert invoke("sweep", file, "--address", "ray://head:10001").exit_code == 2
    assert invoke("sweep", file, "--workers", 0).exit_code == 2
    assert invoke("sweep", file, "--executor", "slurm").exit_code == 2
    assert invoke("sweep", tmp_path / "missing.yaml").exit_code == 2


def test_a_sweep_runs_end_to_end_reruns_and_refuses_another(tmp_path):
    pytest.importorskip("optuna")
    file = write_sweep(tmp_path, SPACE)
    out = tmp_path / "sw"
    result = invoke("sweep", file, "--workers", 2, "--out", out)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("trial ")]
    assert len(lines) == 3 and all(" complete: value " in line for line in lines)
    assert lines[-1].endswith("3/3 done")
    assert "sweep s completed: 3 complete, 0 pruned, 0 failed of 3 requested" in result.output
    assert f"{out / 'best.yaml'}" in result.output
    assert len(rows(out)) == 3 and len(run_dirs(out)) == 3 and info(out)["status"] == "completed"

    again = invoke("sweep", file, "--workers", 2, "--out", out, "--quiet")
    assert again.exit_code == 0 and "nothing to do" not in again.output and "sweep s completed" in again.output
    assert len(rows(out)) == 3

    other = write_sweep(tmp_path, SPACE.replace("0.001", "0.0001"), name="other.yaml")
    refused = invoke("sweep", other, "--out", out)
    assert refused.exit_code == 2
    assert "holds another sweep" in refused.output and "params" in refused.output
    assert info(out)["sweep_file"] == str(file)


def test_an_unusable_storage_exits_1_and_leaves_no_record_naming_it(tmp_path):
    pytest.importorskip("optuna")
    file = write_sweep(tmp_path, SPACE)
    out = tmp_path / "sw"
    result = invoke("sweep", file, "--out", out, "--storage", "nosuchdb://u:secret@host/x")
    assert result.exit_code == 1
    assert "cannot open the study storage nosuchdb://u:***@host/x" in result.output
    assert "secret" not in result.output
    assert not (out / "sweep.json").exists()
    # the same directory then takes the sweep with a storage that works
    from onlytorch.sweep import runner as sweeping

    assert sweeping.run(file, out, executor="inline").status == "completed"
    assert info(out)["storage"] == {"kind": "journal", "path": "study.log"}
