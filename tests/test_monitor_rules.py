"""Issue 12, item 4 (the monitored metric), the sentences that tests/test_best_checkpoint.py does
not show on its own: the default monitor is the FIRST loss in the spec's order (not the one called
"loss", not the alphabetically first), minimised, on val when val is declared; a loss may be
declared ``mode: min`` but never ``max``; run.json's ``best`` and the report's best column agree on
it."""

from __future__ import annotations

import json
import pathlib

from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch import monitor, report
from onlytorch.compile import compile_text

# Two losses: "zeta" comes first in the spec, "loss" is the one a name-guessing rule would pick,
# and "alpha" sorts first. Only "zeta" may be the default monitor.
SPEC = """\
version: 1
name: first-loss
seed: 0
data:
  train: {source: synthetic.xor, n: 128, noise: 0.05}
  val: {from_split: train, fraction: 0.25}
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
  zeta: mse(pred, y)
  loss: mean(abs(pred - y))
  alpha: mean(pred * pred)
optimizers:
  opt: {type: adam, lr: 0.05, params: [net]}
train:
  steps: 24
  log_every: 8
  eval_every: 3
  schedule:
    - name: fit
      backward: [{loss: zeta}]
      step: [opt]
eval:
  split: test
"""


def test_the_default_monitor_is_the_first_loss_in_spec_order_minimised_on_val() -> None:
    compiled, rep = compile_text(SPEC, "spec.yaml")
    assert compiled is not None, [d.message for d in rep.sorted()]
    assert monitor.resolve(compiled.spec) == monitor.Monitor("zeta", "val", "min")
    reordered = SPEC.replace("  zeta: mse(pred, y)\n", "").replace("  alpha: mean(pred * pred)\n", "")
    reordered = reordered.replace("losses:\n", "losses:\n  alpha: mean(pred * pred)\n  zeta: mse(pred, y)\n")
    compiled, _ = compile_text(reordered, "spec.yaml")
    assert compiled is not None
    assert monitor.resolve(compiled.spec) == monitor.Monitor("alpha", "val", "min")


def test_run_json_best_and_the_report_best_column_agree_on_the_default_monitor(tmp_path: pathlib.Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(SPEC)
    result = CliRunner().invoke(cli, ["train", str(spec), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    info = json.loads((run / "run.json").read_text())
    rows = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    # eval_every evaluates val; eval.split (test) is reported at the end only
    assert [r["step"] for r in evals] == list(range(3, 25, 3))
    assert all("val/zeta" in r for r in evals) and [r["step"] for r in evals if "eval/zeta" in r] == [24]
    logged = [(r["step"], r["val/zeta"]) for r in evals]
    lowest = min(logged, key=lambda p: p[1])
    assert info["monitor"] == {"metric": "zeta", "split": "val", "mode": "min"}
    best = info["best"]
    assert {k: best[k] for k in ("metric", "split", "mode", "step", "value")} == {
        "metric": "zeta",
        "split": "val",
        "mode": "min",
        "step": lowest[0],
        "value": lowest[1],
    }
    qs = {q.name: q for q in report.quantities(report.read_run(run))}
    assert (qs["val/zeta"].best, qs["val/zeta"].best_step, qs["val/zeta"].mode) == (lowest[1], lowest[0], "min")
    # every loss is minimised in the report too (a loss has one direction, whatever its name)
    assert qs["val/alpha"].mode == qs["val/loss"].mode == "min"


def test_a_loss_may_be_declared_min_but_never_max() -> None:
    def with_monitor(text: str) -> str:
        return SPEC.replace("  eval_every: 3\n", f"  eval_every: 3\n  monitor: {text}\n")

    compiled, rep = compile_text(with_monitor("{metric: alpha, mode: min}"), "spec.yaml")
    assert compiled is not None, [d.message for d in rep.sorted()]
    assert monitor.resolve(compiled.spec) == monitor.Monitor("alpha", "val", "min", declared_split=False)
    text = with_monitor("{metric: alpha, mode: max}")
    compiled, rep = compile_text(text, "spec.yaml")
    assert compiled is None
    (d,) = rep.sorted()
    lines = text.splitlines()
    line = next(i for i, t in enumerate(lines, 1) if "monitor: {metric: alpha, mode: max}" in t)
    assert (d.code, d.line, d.column) == ("E-MONITOR", line, lines[line - 1].index("max") + 1)
    assert "alpha is a loss, always minimised" in d.message
