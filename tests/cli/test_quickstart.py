"""The README's quick start, run twice the way a new user would: ``onlytorch train specs/xor.yaml
--report`` trains into runs/xor, then runs/xor-2, and each time writes that run's own report (the
same files ``onlytorch report RUN_DIR`` writes), never touching the earlier run. Without the plot
extra, --report is refused before training; a diverged run that logged rows gets its report too."""

from __future__ import annotations

import hashlib
import json
import pathlib
import shutil
import sys

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import cli

ROOT = pathlib.Path(__file__).resolve().parents[2]
PICTURE = b"\x89PNG\r\n\x1a\n"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exc_info
    return result.exit_code, result.output


def snapshot(folder: pathlib.Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture
def workdir(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> pathlib.Path:
    (tmp_path / "specs").mkdir()
    shutil.copy(ROOT / "specs" / "xor.yaml", tmp_path / "specs" / "xor.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_the_quick_start_runs_twice_each_run_with_its_own_report(workdir: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    code, first = run("train", "specs/xor.yaml", "--report")
    assert code == 0, first
    runs = workdir / "runs"
    assert (runs / "xor" / "report" / "report.html").is_file()
    before = snapshot(runs / "xor")

    code, second = run("train", "specs/xor.yaml", "--report")
    assert code == 0, second
    report = runs / "xor-2" / "report"
    pictures = sorted(p.name for p in report.glob("*.png"))
    assert "losses.png" in pictures, pictures
    for name in pictures:
        assert (report / name).read_bytes().startswith(PICTURE), name
    html = (report / "report.html").read_text(encoding="utf-8")
    assert html.count("data:image/png;base64,") == len(pictures)  # self-contained: every picture inlined
    # the page is this run's (its directory; the two runs may start within the same second)
    assert "runs/xor-2" in html
    assert "runs/xor-2" not in (runs / "xor" / "report" / "report.html").read_text(encoding="utf-8")
    # it says where the report is, and it is this run's, not the first one's
    assert "report of runs/xor-2:" in second
    assert f"{pathlib.Path('runs/xor-2/report/report.html')}" in second
    assert "runs/xor/" not in second.replace("runs/xor-2", "")
    assert snapshot(runs / "xor") == before  # the first run is untouched
    assert sorted(p.name for p in runs.iterdir()) == ["xor", "xor-2"]

    # exactly what `onlytorch report RUN_DIR` writes: running it again rewrites the same files
    written = snapshot(report)
    code, output = run("report", "runs/xor-2")
    assert code == 0, output
    assert sorted(snapshot(report)) == sorted(written)
    assert {k: v for k, v in snapshot(report).items() if k.endswith(".png")} == {
        k: v for k, v in written.items() if k.endswith(".png")
    }


def test_report_without_matplotlib_is_refused_before_training(
    workdir: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    code, output = run("train", "specs/xor.yaml", "--report")
    assert code == 2
    assert "--report needs the plot extra: pip install 'onlytorch[plot]'" in output
    assert not (workdir / "runs").exists()  # refused at once: nothing trained, nothing written
    code, output = run("train", "specs/xor.yaml", "-q", "--no-tensorboard")  # without --report it trains
    assert code == 0, output
    assert (workdir / "runs" / "xor" / "checkpoints" / "last.npz").is_file()


BLOWUP = """version: 1
name: blowup
data:
  train: {source: synthetic.regression, n: 64, features: 3}
  batch_size: 16
inputs:
  x: {shape: [3], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  net: [{linear: 1}]
losses:
  loss: mse(net(x), y)
optimizers:
  opt: {type: sgd, lr: LR, params: [net]}
train:
  steps: 40
  log_every: 1
  schedule:
    - name: fit
      backward: [{loss: loss}]
      step: [opt]
"""


def test_a_diverged_run_gets_its_report_when_it_logged_rows(workdir: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    (workdir / "blowup.yaml").write_text(BLOWUP.replace("LR", "1.0e+3"))
    code, output = run("train", "blowup.yaml", "--report", "-q", "--no-tensorboard")
    assert code == 3, output  # still the exit code of a divergence
    assert "training diverged at step 7" in output and "report of runs/blowup:" in output
    report = workdir / "runs" / "blowup" / "report"
    assert (report / "report.html").is_file() and (report / "losses.png").is_file()

    # diverging at the first step leaves no row: no report, said so, the exit code unchanged
    (workdir / "blowup1.yaml").write_text(BLOWUP.replace("name: blowup", "name: blowup1").replace("LR", "1.0e+30"))
    code, output = run("train", "blowup1.yaml", "--report", "-q", "--no-tensorboard", "--set", "train.log_every=50")
    assert code == 3, output
    assert "no report: runs/blowup1 logged no rows before it ended" in output
    assert not (workdir / "runs" / "blowup1" / "report").exists()


def test_an_early_stopped_run_gets_its_report(workdir: pathlib.Path) -> None:
    pytest.importorskip("matplotlib")
    stop = ["--set", "train.eval_every=50", "--set", "train.early_stopping={patience: 1, min_delta: 10}"]
    code, output = run("train", "specs/xor.yaml", "--report", "-q", "--no-tensorboard", *stop)
    assert code == 0, output
    assert "early stopped at step 100" in output and "report of runs/xor:" in output
    assert json.loads((workdir / "runs" / "xor" / "run.json").read_text())["status"] == "early_stopped"
    assert (workdir / "runs" / "xor" / "report" / "report.html").is_file()
