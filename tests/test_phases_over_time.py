"""Phases over time and gradient accumulation (issue 12, items 1 and 3): ``start``/``until``/``every``
decide at which iterations a phase runs, ``batch: new|same`` which batch it sees, ``accumulate: K``
sums K micro-batches' gradients (each loss scaled by 1/K) before one step. Checked on the trainer
itself (which phases ran at which step, which samples each saw), against one big batch in float64
(the accumulation equivalence, SGD and Adam), across a resume in the middle of a range, and in the
compile report, the drawing and the warnings."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from onlytorch import phases
from onlytorch.compile import compile_text
from onlytorch.compiler.drawing import dot, mermaid
from onlytorch.compiler.summary import summarize
from onlytorch.spec.schema import PhaseSpec
from onlytorch.train import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROKEN = ROOT / "tests" / "spec" / "broken"

BASE = """\
version: 1
name: timed
dtype: float64
seed: 0
data:
  train: {source: synthetic.xor, n: 256}
  batch_size: BATCH
  shuffle: false
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [1], from: train.y}
modules:
  body: [{linear: 6}, tanh]
  head: [{linear: 1}]
nodes:
  h: body(x)
  out: head(h)
losses:
  loss: mse(out, y)
optimizers:
  opt: OPT
train:
  steps: STEPS
  schedule:
SCHEDULE"""


def make(
    schedule: str, steps: int = 10, batch: int = 8, opt: str = "{type: sgd, lr: 0.1, params: [body, head]}"
) -> str:
    return (
        BASE.replace("BATCH", str(batch)).replace("STEPS", str(steps)).replace("OPT", opt).replace("SCHEDULE", schedule)
    )


def compiled_of(text: str):  # type: ignore[no-untyped-def]
    compiled, report = compile_text(text, "timed.yaml", ROOT)
    assert compiled is not None, report.render()
    return compiled, report


def rows_data(n: int = 64) -> dict[str, dict[str, np.ndarray]]:
    """Training data whose x[:, 0] is the row's index: every sample a phase sees can be named."""
    x = np.stack([np.arange(n, dtype=np.float64), np.linspace(-1, 1, n)], axis=1)
    y = np.sin(np.arange(n, dtype=np.float64))[:, None] * 0.5
    return {"train": {"x": x, "y": y}}


class Seen:
    """Wraps a trainer's micro-batch so that the rows each phase's forward saw are recorded."""

    def __init__(self, trainer: Trainer) -> None:
        self.rows: list[tuple[int, str, list[int]]] = []  # (step, phase, row indices)
        inner = trainer._forward_backward

        def spy(phase):  # type: ignore[no-untyped-def]
            x = trainer.g.get_node_value(trainer.c.inputs["x"])
            self.rows.append((trainer.step, phase.name, [int(v) for v in np.asarray(x)[:, 0]]))
            return inner(phase)

        trainer._forward_backward = spy  # type: ignore[method-assign]


# ------------------------------------------------------------------ the rules, as arithmetic


def spec_of(**kw) -> PhaseSpec:  # type: ignore[no-untyped-def]
    return PhaseSpec(name="p", backward=[{"loss": "loss"}], **kw)


def test_active_follows_start_until_every() -> None:
    assert [i for i in range(12) if phases.active(spec_of(), i)] == list(range(12))
    assert [i for i in range(12) if phases.active(spec_of(until=4), i)] == [0, 1, 2, 3]
    assert [i for i in range(12) if phases.active(spec_of(start=7), i)] == [7, 8, 9, 10, 11]
    assert [i for i in range(30) if phases.active(spec_of(start=3, every=5), i)] == [3, 8, 13, 18, 23, 28]
    assert [i for i in range(30) if phases.active(spec_of(start=2, until=14, every=4), i)] == [2, 6, 10]


def test_first_and_last_runs_and_words() -> None:
    p = spec_of(start=2, until=14, every=4)
    assert (phases.first_run(p, 100), phases.last_run(p, 100)) == (2, 10)
    assert phases.last_run(p, 9) == 6
    assert phases.first_run(spec_of(start=20), 20) is None and phases.first_run(spec_of(start=20), 21) == 20
    assert phases.last_run(spec_of(start=3), None) is None
    assert phases.describe(spec_of()) is None
    assert phases.describe(spec_of(until=1000)) == "iterations 0-999"
    assert phases.describe(spec_of(start=1000)) == "from 1000"
    assert phases.describe(spec_of(every=5)) == "every 5 from 0"
    assert phases.describe(spec_of(start=2, until=14, every=4)) == "every 4 in iterations 2-13"
    assert phases.describe(spec_of(start=5, until=6)) == "iteration 5"
    assert phases.notes(spec_of(accumulate=4, batch="new"), 1) == ["accumulate 4", "batch new"]
    assert phases.notes(spec_of(batch="new"), 0) == [] and phases.notes(spec_of(batch="same"), 2) == []


def test_combinations_that_run_together() -> None:
    a, b, c = spec_of(until=10), spec_of(start=10), spec_of(every=3)
    assert phases.together([a, b], 20) == [(0,), (1,)]
    assert phases.together([a, b, c], 20) == [(0, 2), (0,), (1,), (1, 2)]  # 10 % 3 != 0
    assert not phases.overlap(a, b, None) and phases.overlap(a, c, None)
    # a phase that starts after the run's end is in no combination
    assert phases.together([a, spec_of(start=30)], 20) == [(0,)]
    assert [s.words() for s in phases.stretches([a, b, c], 25)] == ["iterations 0-9", "iterations 10-24"]


# ------------------------------------------------------------------ the trainer


def test_phases_run_only_in_their_ranges() -> None:
    text = make(
        """    - name: warm
      until: 3
      backward: [{loss: loss}]
      step: [opt]
    - name: main
      start: 2
      backward: [{loss: loss}]
      step: [opt]
    - name: probe
      start: 1
      every: 3
      backward: [{loss: loss}]
      step: [opt]
""",
        steps=12,
    )
    compiled, _ = compiled_of(text)
    trainer = Trainer(compiled)
    ran = []
    for _ in range(12):
        values = trainer.run_iteration()
        ran.append(sorted(k.split("/")[0] for k in values))
    want = [
        sorted(name for name, yes in (("warm", i < 3), ("main", i >= 2), ("probe", i >= 1 and (i - 1) % 3 == 0)) if yes)
        for i in range(12)
    ]
    assert ran == want
    assert ran[0] == ["warm"] and ran[4] == ["main", "probe"]


def test_batch_new_and_same_and_accumulate_see_the_documented_samples() -> None:
    text = make(
        """    - name: first
      until: 1
      backward: [{loss: loss}]
      step: [opt]
    - name: reuse
      backward: [{loss: loss}]
      step: [opt]
    - name: fresh
      batch: new
      backward: [{loss: loss}]
      step: [opt]
    - name: micro
      accumulate: 2
      backward: [{loss: loss}]
      step: [opt]
    - name: twice
      repeat: 2
      backward: [{loss: loss}]
      step: [opt]
""",
        batch=4,
    )
    compiled, _ = compiled_of(text)
    trainer = Trainer(compiled, data=rows_data())
    seen = Seen(trainer)
    trainer.run_iteration()
    trainer.run_iteration()
    b = [list(range(4 * k, 4 * k + 4)) for k in range(16)]
    assert seen.rows == [
        # iteration 0: first draws (new), reuse sees it (same), fresh draws, micro's first micro-batch
        # reuses fresh's (same) and its second draws; each further run of twice draws
        (0, "first", b[0]),
        (0, "reuse", b[0]),
        (0, "fresh", b[1]),
        (0, "micro", b[1]),
        (0, "micro", b[2]),
        (0, "twice", b[2]),
        (0, "twice", b[3]),
        # iteration 1: first is over, so reuse (same) is the first phase to run: it draws
        (1, "reuse", b[4]),
        (1, "fresh", b[5]),
        (1, "micro", b[5]),
        (1, "micro", b[6]),
        (1, "twice", b[6]),
        (1, "twice", b[7]),
    ]


def test_an_iteration_where_no_phase_runs_draws_nothing() -> None:
    text = make(
        """    - name: late
      start: 2
      backward: [{loss: loss}]
      step: [opt]
""",
        batch=4,
    )
    compiled, _ = compiled_of(text)
    trainer = Trainer(compiled, data=rows_data())
    seen = Seen(trainer)
    before = {p.name: compiled.graph.get_node_value(p).copy() for p in compiled.graph.parameters()}
    assert trainer.run_iteration() == {} and trainer.run_iteration() == {}
    assert all(np.array_equal(compiled.graph.get_node_value(p), before[p.name]) for p in compiled.graph.parameters())
    trainer.run_iteration()
    assert seen.rows == [(2, "late", [0, 1, 2, 3])] and trainer.step == 3


def test_resume_in_the_middle_of_a_range_continues_bit_for_bit() -> None:
    text = make(
        """    - name: warm
      until: 4
      detach: [h]
      backward: [{loss: loss}]
      step: [opt]
    - name: all
      start: 4
      accumulate: 3
      backward: [{loss: loss}]
      step: [opt]
    - name: extra
      start: 1
      every: 3
      batch: new
      backward: [{loss: loss}]
      step: [opt]
""",
        steps=12,
        opt="{type: adam, lr: 0.01, params: [body, head]}",
    )
    straight = Trainer(compiled_of(text)[0])
    for _ in range(12):
        straight.run_iteration()
    first = Trainer(compiled_of(text)[0])
    for _ in range(6):  # stops inside all's range and between two runs of extra
        first.run_iteration()
    state = {k: np.array(v, copy=True) for k, v in first.state().items()}
    resumed = Trainer(compiled_of(text)[0])
    resumed.restore(state)
    for _ in range(6):
        resumed.run_iteration()
    a, b = straight.state(), resumed.state()
    assert set(a) == set(b)
    for k in a:
        assert np.array_equal(a[k], b[k], equal_nan=a[k].dtype.kind == "f"), k  # unset hyper-parameters are NaN


# ------------------------------------------------------------------ accumulation equivalence


def _params_after(text: str, iterations: int) -> dict[str, np.ndarray]:
    compiled, _ = compiled_of(text)
    trainer = Trainer(compiled)
    for _ in range(iterations):
        trainer.run_iteration()
    return {p.name: compiled.graph.get_node_value(p).copy() for p in compiled.graph.parameters()}


@pytest.mark.parametrize(
    "opt",
    [
        "{type: sgd, lr: 0.5, params: [body, head]}",
        "{type: sgd, lr: 0.1, momentum: 0.9, params: [body, head]}",
        "{type: adam, lr: 0.05, eps: 1.0e-3, params: [body, head]}",
    ],
    ids=["sgd", "sgd-momentum", "adam"],
)
def test_k_micro_batches_step_like_one_batch_of_k_times_b(opt: str) -> None:
    """With a mean loss in float64 and an unshuffled data order, accumulate: 4 over batches of 8 takes
    the same steps as batches of 32 (the 4 micro-batches are exactly the big batch's samples)."""
    micro = make(
        "    - name: fit\n      accumulate: 4\n      backward: [{loss: loss}]\n      step: [opt]\n", batch=8, opt=opt
    )
    big = make("    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n", batch=32, opt=opt)
    start = _params_after(big, 0)
    for iterations in (1, 3):
        a, b = _params_after(micro, iterations), _params_after(big, iterations)
        for name in a:
            assert np.abs(a[name] - b[name]).max() <= 1e-10, (name, iterations)
            assert np.abs(a[name] - start[name]).max() > 1e-4  # the steps really moved it
    # the sum without the 1/K scale would be a different step: the check can tell
    summed = make(
        "    - name: fit\n      accumulate: 4\n      backward: [{loss: loss, weight: 4}]\n      step: [opt]\n",
        batch=8,
        opt=opt,
    )
    c, b = _params_after(summed, 1), _params_after(big, 1)
    assert max(np.abs(c[n] - b[n]).max() for n in c) > 1e-6


def test_the_logged_loss_of_an_accumulating_phase_is_the_mean_over_its_micro_batches() -> None:
    micro = make("    - name: fit\n      accumulate: 4\n      backward: [{loss: loss}]\n      step: [opt]\n", batch=8)
    big = make("    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n", batch=32)
    logged = Trainer(compiled_of(micro)[0]).run_iteration()["fit/loss"]
    whole = Trainer(compiled_of(big)[0]).run_iteration()["fit/loss"]
    assert abs(logged - whole) <= 1e-12 and logged > 0.01


def test_zero_grad_before_clears_once_per_accumulated_step() -> None:
    """zero_grad: before clears before the first micro-batch only (else only the last would count);
    ``after`` clears after the step: the gradients left are zero."""
    text = make(
        "    - name: fit\n      accumulate: 2\n      zero_grad: after\n      backward: [{loss: loss}]\n      step: [opt]\n",
        batch=16,
    )
    compiled, _ = compiled_of(text)
    Trainer(compiled).run_iteration()
    for p in compiled.graph.parameters():
        grad = compiled.graph.get_node_grad(p)
        assert grad is None or not np.any(grad)
    a = _params_after(text, 2)
    b = _params_after(make("    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n", batch=32), 2)
    assert all(np.abs(a[n] - b[n]).max() <= 1e-10 for n in a)


# ------------------------------------------------------------------ report, drawing, checks


FREEZE = """    - name: frozen
      until: 5
      detach: [h]
      backward: [{loss: loss}]
      step: [head_opt]
    - name: all
      start: 5
      accumulate: 2
      backward: [{loss: loss}]
      step: [opt]
"""


def freeze_spec(extra: str = "") -> str:
    text = make(FREEZE + extra, opt="{type: sgd, lr: 0.01, params: [body, head]}")
    return text.replace("optimizers:\n", "optimizers:\n  head_opt: {type: sgd, lr: 0.1, params: [head]}\n")


def test_compile_report_shows_ranges_and_idle_parameters() -> None:
    compiled, report = compiled_of(freeze_spec())
    assert report.warnings == [], report.render()  # time-disjoint optimizers share head: no W-SHARED-PARAM
    lines = summarize(compiled).splitlines()
    assert "phase frozen (iterations 0-4; detach h; steps head_opt)" in lines
    assert "phase all (from 5; accumulate 2; steps opt)" in lines
    assert lines[-1] == "body (2 tensors): not updated during iterations 0-4"


def test_overlapping_optimizers_still_warn() -> None:
    extra = (
        "    - name: probe\n      every: 3\n      batch: new\n      backward: [{loss: loss}]\n      step: [head_opt]\n"
    )
    compiled, report = compiled_of(freeze_spec(extra))
    assert [w.code for w in report.warnings] == ["W-SHARED-PARAM"]
    assert "phase probe (every 3 from 0; batch new; steps head_opt)" in summarize(compiled).splitlines()


def test_graph_shows_the_ranges() -> None:
    compiled, _ = compiled_of(freeze_spec())
    m, d = mermaid(compiled), dot(compiled)
    assert '  schedule_note["schedule<br/>phase frozen: iterations 0-4<br/>phase all: from 5; accumulate 2"]' in m
    assert '"h (N, 6) | detached in frozen (iterations 0-4)"' in m
    assert (
        '  schedule_note [label="schedule\\nphase frozen: iterations 0-4\\nphase all: from 5; accumulate 2", shape=note];'
        in d
    )


def test_no_double_batch_warning_for_phases_that_never_run_together() -> None:
    """The accumulate-then-step pattern that counts the last micro-batch twice warns only when both
    phases run in the same iteration."""
    text = (BROKEN / "warn_accumulate_counts_last_batch_twice.yaml").read_text(encoding="utf-8")
    _, report = compiled_of(text)
    assert [w.code for w in report.warnings] == ["W-DOUBLE-BATCH"]
    apart = text.replace("      zero_grad: never\n", "      zero_grad: never\n      until: 5\n").replace(
        "      zero_grad: after\n", "      zero_grad: after\n      start: 5\n"
    )
    _, report = compiled_of(apart)
    assert "W-DOUBLE-BATCH" not in [w.code for w in report.items]
    # accumulate: 4 in one phase is the way to step on four micro-batches: no warning at all
    right = text.replace("      repeat: 4\n      zero_grad: never\n", "      accumulate: 4\n      step: [opt]\n")
    right = right[: right.index("    - name: update")]
    _, report = compiled_of(right)
    assert report.items == []


def _codes(text: str) -> list[tuple[str, int, int]]:
    _, report = compile_text(text, "timed.yaml", ROOT)
    return [(d.code, d.line or 0, d.column or 0) for d in report.items]


def test_checks_of_the_new_keys() -> None:
    phase = "    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n"
    base = make(phase, steps=10)
    line = base.splitlines().index("    - name: fit") + 1
    reversed_ = base.replace("      backward", "      start: 5\n      until: 5\n      backward")
    assert _codes(reversed_) == [("E-RANGE", line + 2, 14)]
    late = base.replace("      backward", "      start: 10\n      backward")
    assert _codes(late) == [("W-NEVER-RUNS", line + 1, 14)]
    assert _codes(base.replace("      backward", "      start: 9\n      backward")) == []
    zero = base.replace("      backward", "      accumulate: 0\n      backward")
    assert _codes(zero) == [("E-TYPE", line + 1, 19)]
    both = base.replace("      backward", "      accumulate: 2\n      epochs: 2\n      backward")
    assert _codes(both) == [("E-ARG", line + 1, 7)]


def test_a_run_whose_first_iterations_run_no_phase_logs_and_completes(tmp_path: pathlib.Path) -> None:
    """Iterations 0 and 1 run no phase: their log rows hold no loss and no train metric (there is no
    batch of theirs to measure), and the run goes on to train from iteration 2."""
    import json

    from click.testing import CliRunner
    from onlytorch_cli.main import cli

    text = make("    - name: late\n      start: 2\n      backward: [{loss: loss}]\n      step: [opt]\n", steps=4)
    text = text.replace("  steps: 4\n", "  steps: 4\n  log_every: 1\n").replace(
        "optimizers:", "metrics:\n  err: mean(abs(out - y))\noptimizers:"
    )
    path = tmp_path / "late.yaml"
    path.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["train", str(path), "--out", str(tmp_path / "run"), "-q"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in rows if r["kind"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3, 4]
    assert [("late/loss" in r, "train/err" in r) for r in train] == [(False, False)] * 2 + [(True, True)] * 2
