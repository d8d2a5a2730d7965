"""The gradient-setup warnings of onlytorch/spec/lint.py: W-DOUBLE-BATCH (the last micro-batch of an
accumulation counted twice), W-STEP-ROLE (an optimizer stepped on the other player's loss in a game),
W-DOUBLE-STEP and W-SHARED-PARAM (a parameter updated by two optimizers). Each warning is checked to
the code, message, hint and line:col; the legitimate patterns (every example spec, freeze-then-train,
alternating tasks, accumulation done right) must stay silent; and the batch rule the double-count
warning rests on is checked against the trainer itself."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from example_init import example_overrides
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file, compile_text
from onlytorch.compiler.lint import lint_schedule, simulate
from onlytorch.compiler.summary import summarize
from onlytorch.data.batches import Batches
from onlytorch.spec.diagnostics import CODES
from onlytorch.spec.yaml_loader import load
from onlytorch.train import Trainer, load_data

ROOT = pathlib.Path(__file__).resolve().parents[2]
SPECS = ROOT / "specs"
BROKEN = pathlib.Path(__file__).resolve().parent / "broken"
MINE = ("W-DOUBLE-BATCH", "W-GRAD-DISCARDED", "W-STEP-ROLE", "W-DOUBLE-STEP", "W-SHARED-PARAM")

ACCUMULATE = (BROKEN / "warn_accumulate_counts_last_batch_twice.yaml").read_text(encoding="utf-8")
GAN = (BROKEN / "warn_gan_generator_steps_d_opt.yaml").read_text(encoding="utf-8")
SHARED = (BROKEN / "warn_shared_parameter_two_optimizers.yaml").read_text(encoding="utf-8")
DOUBLE = (BROKEN / "warn_two_optimizers_one_phase.yaml").read_text(encoding="utf-8")


def compile_variant(text: str, *edits: tuple[str, str]):  # type: ignore[no-untyped-def]
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    compiled, report = compile_text(text, "variant.yaml", SPECS)
    assert compiled is not None, report.render()
    return compiled, [d for d in report.items if d.code in MINE], text


def line_col(text: str, needle: str, nth_in_line: str | None = None) -> tuple[int, int]:
    """1-based line of the first line holding needle, and the column of nth_in_line (or needle) in it."""
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i, line.index(nth_in_line or needle) + 1
    raise AssertionError(needle)


def test_the_codes_are_documented() -> None:
    for code in MINE:
        assert code in CODES and len(CODES[code]) > 30


# ---------------------------------------------------------------- W-DOUBLE-BATCH


def test_accumulation_then_a_stepping_phase_counts_the_last_micro_batch_twice() -> None:
    _, (w,), text = compile_variant(ACCUMULATE)
    assert w.code == "W-DOUBLE-BATCH" and w.severity == "warning"
    assert (w.line, w.column) == line_col(text, "      backward: [{loss: loss}]", "{loss")
    assert w.path == ("train", "schedule", 1, "backward", 0)
    assert w.message == (
        "phase update backpropagates loss again on a batch phase accumulate (zero_grad: never) already "
        "backpropagated it on, with no clearing in between: opt steps with that micro-batch counted twice "
        "(the first run of a phase reuses the batch the previous phase ended on)"
    )
    assert w.hint == (
        "to accumulate 4 micro-batches, make phases accumulate and update one phase with accumulate: 4 and "
        "step: [opt] (one step on the mean of their gradients, as with one batch 4 times as large); or, to "
        "step on exactly the sum phase accumulate accumulated, give this backward weight: 0"
    )


def test_the_hinted_accumulate_phase_is_silent() -> None:
    """The hint's first fix, written out: one phase with accumulate: 4 and the step."""
    phase = "    - name: update\n      accumulate: 4\n      backward: [{loss: loss}]\n      step: [opt]\n"
    fixed = ACCUMULATE.split("  schedule:")[0] + "  schedule:\n" + phase
    _, mine, _ = compile_variant(fixed)
    assert mine == []


def test_a_single_run_then_the_same_loss_again_keeps_the_clearing_hint() -> None:
    # Not an accumulation of micro-batches (no repeat): accumulate: K is not what it needs.
    _, (w,), _ = compile_variant(ACCUMULATE, ("      repeat: 4\n", ""))
    assert w.code == "W-DOUBLE-BATCH"
    assert w.hint == (
        "to step on exactly the micro-batches phase accumulate accumulated, give this backward weight: 0; "
        "or clear them first with zero_grad: before"
    )


def test_with_windowed_inputs_accumulate_is_not_offered() -> None:
    # accumulate with windowed inputs is an E-PHASE: the hint must not send the user there.
    text = (SPECS / "tbptt_sine.yaml").read_text(encoding="utf-8")
    fit = "    - name: fit\n      backward: [{loss: loss}]\n      step: [opt]\n"
    acc = "    - name: acc\n      repeat: 2\n      zero_grad: never\n      backward: [{loss: loss, wrt: [cell]}]\n"
    _, mine, _ = compile_variant(text, (fit, acc + fit.replace("backward", "zero_grad: after\n      backward")))
    crossing = [w for w in mine if w.path == ("train", "schedule", 1, "backward", 0)]
    assert [w.code for w in crossing] == ["W-DOUBLE-BATCH"]
    assert "accumulate:" not in (crossing[0].hint or "") and "weight: 0" in (crossing[0].hint or "")


def _step_delta(text: str) -> dict[str, np.ndarray]:
    """(parameters before - after) / lr over one iteration of the trainer: the gradient SGD applied."""
    compiled, report = compile_text(text, "accumulate.yaml", SPECS)
    assert compiled is not None, report.render()
    trainer = Trainer(compiled)
    params = compiled.optimizer_params["opt"]
    before = {p.name: compiled.graph.get_node_value(p).astype(np.float64).copy() for p in params}
    trainer.run_iteration()
    lr = compiled.optimizers["opt"].lr
    return {p.name: (before[p.name] - compiled.graph.get_node_value(p).astype(np.float64)) / lr for p in params}


def _micro_batch_grads(text: str, n: int) -> list[dict[str, np.ndarray]]:
    """The gradient of each of the first n minibatches the trainer draws, computed one by one."""
    compiled, _ = compile_text(text, "accumulate.yaml", SPECS)
    assert compiled is not None and compiled.spec.data is not None
    g = compiled.graph
    batches = Batches(
        load_data(compiled)["train"], compiled.spec.data.batch_size, shuffle=compiled.spec.data.shuffle, seed=0
    )
    params, loss = compiled.optimizer_params["opt"], compiled.losses["loss"]
    out = []
    for _ in range(n):
        batch = batches.next_batch()
        g.set_value("x", batch["x"])
        g.set_value("y", batch["y"])
        g.clear_jacobi()
        g.forward_node(loss)
        g.backward_nodes(params, loss)
        out.append({p.name: g.get_node_grad(p).astype(np.float64) for p in params})
    return out


def test_the_double_count_is_real_and_weight_zero_fixes_it() -> None:
    """The rule the warning rests on, checked on the trainer: the stepping phase's first run reuses the
    accumulating phase's 4th batch, so the step applies g1 + g2 + g3 + 2 * g4; with weight: 0 on the
    stepping phase's backward it applies exactly g1 + g2 + g3 + g4, and the warning is gone."""
    g1, g2, g3, g4 = _micro_batch_grads(ACCUMULATE, 4)
    names = list(g1)
    assert not np.allclose(g3[names[0]], g4[names[0]])  # four distinct batches
    wrong = _step_delta(ACCUMULATE)
    for n in names:
        np.testing.assert_allclose(wrong[n], g1[n] + g2[n] + g3[n] + 2 * g4[n], rtol=2e-3, atol=1e-5)
    fixed_text = ACCUMULATE.replace("backward: [{loss: loss}]", "backward: [{loss: loss, weight: 0}]")
    _, mine, _ = compile_variant(fixed_text)
    assert mine == []
    fixed = _step_delta(fixed_text)
    for n in names:
        np.testing.assert_allclose(fixed[n], g1[n] + g2[n] + g3[n] + g4[n], rtol=2e-3, atol=1e-5)


def test_two_backward_calls_of_one_loss_in_a_phase_count_the_batch_twice() -> None:
    _, (w,), text = compile_variant(
        DOUBLE,
        ("step: [opt, body_opt]", "step: [opt]"),
        ("backward: [{loss: loss}]", "backward: [{loss: loss, retain_graph: true}, {loss: loss}]"),
    )
    assert w.code == "W-DOUBLE-BATCH"
    assert (
        w.message
        == "phase fit backpropagates loss twice on the same batch (backward 1 and 2): opt steps with that batch counted twice"
    )
    assert (w.line, w.column) == line_col(
        text, "backward: [{loss: loss, retain_graph: true}, {loss: loss}]", "{loss: loss}]"
    )
    assert w.hint == "remove one of the two backward calls, or give them wrt lists that do not overlap"


def test_repeated_runs_over_one_window_count_it_twice() -> None:
    # windowed inputs (truncated BPTT): every run of an iteration sees the same window
    text = (SPECS / "tbptt_sine.yaml").read_text(encoding="utf-8")
    _, (w,), text = compile_variant(
        text, ("    - name: fit\n", "    - name: fit\n      repeat: 2\n      zero_grad: never\n")
    )
    assert w.code == "W-DOUBLE-BATCH"
    assert "phase fit backpropagates loss on the same batch in two runs" in w.message
    assert "each run of the phase sees the same window of the windowed inputs" in w.message
    assert (w.line, w.column) == line_col(text, "backward: [{loss: loss}]", "{loss")
    # the same repeat that clears between runs is fine
    _, mine, _ = compile_variant(
        (SPECS / "tbptt_sine.yaml").read_text(encoding="utf-8"),
        ("    - name: fit\n", "    - name: fit\n      repeat: 2\n"),
    )
    assert mine == []


@pytest.mark.parametrize(
    "edits",
    [
        # accumulating a different loss on the same batch is a sum of losses, not a double count
        (
            (
                "  loss: bce_with_logits(logits, y)\n",
                "  loss: bce_with_logits(logits, y)\n  l1: mean(abs(logits - y))\n",
            ),
            ("[{loss: loss, wrt: [net]}]", "[{loss: l1, wrt: [net]}]"),
        ),
        # a loss that reads only noise sees fresh noise in every run
        (
            (
                "  y: {shape: [1], from: train.y}\n",
                "  y: {shape: [1], from: train.y}\n  z: {shape: [2], from: noise.normal}\n",
            ),
            ("  logits: net(x)\n", "  logits: net(x)\n  zl: net(z)\n"),
            ("  loss: bce_with_logits(logits, y)\n", "  loss: bce_with_logits(logits, y)\n  nl: mean(zl ** 2)\n"),
            ("[{loss: loss, wrt: [net]}]", "[{loss: nl, wrt: [net]}]"),
            ("backward: [{loss: loss}]", "backward: [{loss: nl}]"),
        ),
        # the accumulating phase after the stepping one: its gradients reach the next iteration's step,
        # which draws a new batch (wrap-around), so no batch counts twice in one step
        (
            (
                "    - name: accumulate\n      repeat: 4\n      zero_grad: never\n      backward: [{loss: loss, wrt: [net]}]\n",
                "",
            ),
            (
                "      step: [opt]\n",
                "      step: [opt]\n    - name: accumulate\n      repeat: 3\n      zero_grad: never\n      backward: [{loss: loss, wrt: [net]}]\n",
            ),
        ),
    ],
    ids=["other-loss", "noise-only", "wrap-around"],
)
def test_accumulation_variants_that_do_not_double_count(edits: tuple[tuple[str, str], ...]) -> None:
    _, mine, _ = compile_variant(ACCUMULATE, *edits)
    assert mine == []


# ---------------------------------------------------------------- W-GRAD-DISCARDED


def test_a_stepping_phase_that_clears_first_wipes_the_accumulation() -> None:
    # No batch counts twice, but the four accumulated micro-batches never reach a step.
    _, (w,), text = compile_variant(ACCUMULATE, ("      zero_grad: after\n", "      zero_grad: before\n"))
    assert w.code == "W-GRAD-DISCARDED" and w.severity == "warning"
    assert w.path == ("train", "schedule", 0, "backward", 0)
    assert (w.line, w.column) == line_col(text, "      backward: [{loss: loss, wrt: [net]}]", "{loss")
    assert w.message == (
        "the gradient of loss that phase accumulate accumulates is cleared by phase update (zero_grad: before, "
        "before its backward calls) before any step applies it: that backward changes nothing"
    )
    assert w.hint == (
        "give phase update zero_grad: after (it then clears after its own step, so what phase accumulate "
        "accumulated is applied first)"
    )


def test_the_wiped_accumulation_is_real() -> None:
    # What the warning claims, measured on the trainer: the step applies the stepping phase's own
    # micro-batch only, whatever the accumulating phase computed.
    wiped = ACCUMULATE.replace("      zero_grad: after\n", "      zero_grad: before\n", 1)
    alone = wiped.replace("[{loss: loss, wrt: [net]}]", "[{loss: loss, wrt: [net], weight: 0}]", 1)
    got, ref = _step_delta(wiped), _step_delta(alone)
    assert got.keys() == ref.keys() and all(np.array_equal(got[k], ref[k]) for k in got)


def test_a_phase_that_clears_its_own_gradients_without_a_step() -> None:
    _, (w,), _ = compile_variant(ACCUMULATE, ("      zero_grad: never\n", "      zero_grad: after\n"))
    assert w.code == "W-GRAD-DISCARDED" and w.path == ("train", "schedule", 0, "backward", 0)
    assert "cleared by phase accumulate (zero_grad: after, after its steps)" in w.message
    assert w.hint == (
        "give phase accumulate zero_grad: never so that a later phase's step applies it, or step in phase accumulate"
    )


def test_the_report_shows_what_a_step_applies_from_earlier_phases() -> None:
    compiled, _, _ = compile_variant(ACCUMULATE)
    lines = summarize(compiled).splitlines()
    assert "phase accumulate (repeat 4; zero_grad never)" in lines
    i = lines.index("phase update (steps opt; zero_grad after)")
    assert lines[i + 1 : i + 3] == [
        "  backward 1: loss reaches net (4 tensors)",
        "  step opt applies loss from phase accumulate, loss from phase update",
    ]
    # the wrap-around: what the accumulating phase leaves is applied by the next iteration's step
    moved = ACCUMULATE.replace(
        "    - name: accumulate\n      repeat: 4\n      zero_grad: never\n      backward: [{loss: loss, wrt: [net]}]\n",
        "",
    )
    moved += "    - name: accumulate\n      zero_grad: never\n      backward: [{loss: loss, wrt: [net]}]\n"
    compiled, _, _ = compile_variant(moved)
    assert "  step opt applies loss from phase update, loss from phase accumulate" in summarize(compiled).splitlines()


# ---------------------------------------------------------------- W-STEP-ROLE


def test_a_generator_phase_that_also_steps_d_opt() -> None:
    _, (w,), text = compile_variant(GAN)
    assert w.code == "W-STEP-ROLE"
    assert (w.line, w.column) == line_col(text, "step: [g_opt, d_opt]", "d_opt")
    assert w.path == ("train", "schedule", 1, "step", 1)
    assert w.message == (
        "phase generator steps d_opt on g_loss, the loss g_opt minimises, while phase discriminator steps d_opt "
        "on d_loss: both sides depend on D (4 tensors), G (4 tensors), in opposite roles, so here d_opt moves "
        "D (4 tensors) to minimise g_opt's loss"
    )
    assert w.hint == "remove d_opt from this step list, so that phase generator trains only g_opt on g_loss"


def test_a_discriminator_phase_that_also_steps_g_opt() -> None:
    path = BROKEN / "warn_gan_discriminator_steps_g_opt.yaml"
    compiled, report = compile_file(path)
    assert compiled is not None
    (w,) = report.items
    text = path.read_text(encoding="utf-8")
    assert w.code == "W-STEP-ROLE"
    assert (w.line, w.column) == line_col(text, "step: [d_opt, g_opt]", "g_opt")
    assert "phase discriminator steps g_opt on d_loss, the loss d_opt minimises" in w.message
    assert "so here g_opt moves G (4 tensors) to minimise d_opt's loss" in w.message
    assert w.hint == "remove g_opt from this step list, so that phase discriminator trains only d_opt on d_loss"


INFOGAN = (
    ("  D: [", "  Q: [{linear: 4}]\n  D: ["),
    ("  d_fake: D(fake)\n", "  d_fake: D(fake)\n  code: Q(fake)\n"),
    ("  g_loss: bce_with_logits(d_fake, 1)\n", "  g_loss: bce_with_logits(d_fake, 1)\n  info: mse(code, z)\n"),
    ("params: [D]}", "params: [D, Q]}"),
    ("      backward: [{loss: d_loss}]\n", "      backward: [{loss: d_loss}, {loss: info}]\n"),
    ("      backward: [{loss: g_loss}]\n", "      backward: [{loss: g_loss, retain_graph: true}, {loss: info}]\n"),
)


def test_a_loss_both_players_minimise_is_no_game_but_stepping_the_other_side_still_is() -> None:
    # InfoGAN: D's side (D and the code head Q) and G both minimise the mutual-information term
    # `info`; each also has an adversarial loss of its own. Sharing `info` is cooperation: silent.
    _, mine, _ = compile_variant(GAN, ("step: [g_opt, d_opt]", "step: [g_opt]"), *INFOGAN)
    assert mine == []
    # stepping d_opt in the generator phase puts D on G's side of the game: warned, naming both losses
    _, (w,), text = compile_variant(GAN, *INFOGAN)
    assert w.code == "W-STEP-ROLE"
    assert w.message.startswith(
        "phase generator steps d_opt on g_loss, info, the losses g_opt minimises, while phase discriminator "
        "steps d_opt on d_loss: both sides depend on"
    )
    assert w.message.endswith("to minimise g_opt's losses")
    assert (w.line, w.column) == line_col(text, "step: [g_opt, d_opt]", "d_opt")


@pytest.mark.parametrize(
    "edits",
    [
        # the correct GAN
        (("step: [g_opt, d_opt]", "step: [g_opt]"),),
        # simultaneous updates in one phase, each optimizer on its own loss
        (
            ("      step: [g_opt, d_opt]\n", "      step: [g_opt]\n"),
            (
                "    - name: discriminator\n      detach: [fake]\n      backward: [{loss: d_loss}]\n      step: [d_opt]\n",
                "    - name: both\n      backward:\n        - {loss: d_loss, wrt: [D], retain_graph: true}\n        - {loss: g_loss, wrt: [G]}\n      step: [d_opt, g_opt]\n",
            ),
            ("    - name: generator\n      backward: [{loss: g_loss}]\n      step: [g_opt]\n", ""),
        ),
        # freeze-then-train: the same optimizer on the same loss in two phases
        (
            ("step: [g_opt, d_opt]", "step: [g_opt]"),
            (
                "    - name: generator\n",
                "    - name: warm\n      backward: [{loss: g_loss, wrt: [G]}]\n      step: [g_opt]\n    - name: generator\n",
            ),
        ),
        # a gradient penalty in its own phase: d_opt takes two losses, g_opt neither of them
        (
            ("step: [g_opt, d_opt]", "step: [g_opt]"),
            ("  g_loss:", "  gp: mean(norm(grad(sum(d_real), real), axis=1) ** 2)\n  g_loss:"),
            (
                "    - name: generator\n",
                "    - name: penalty\n      backward: [{loss: gp}]\n      step: [d_opt]\n    - name: generator\n",
            ),
        ),
    ],
    ids=["gan", "simultaneous", "freeze-then-train", "penalty-phase"],
)
def test_legitimate_gan_schedules_are_silent(edits: tuple[tuple[str, str], ...]) -> None:
    _, mine, _ = compile_variant(GAN, *edits)
    assert mine == []


@pytest.mark.parametrize("head_optimizers", [False, True], ids=["one-optimizer", "head-optimizers"])
def test_alternating_tasks_are_silent(head_optimizers: bool) -> None:
    # phases that alternate between two tasks on a shared body: the second task's loss does not
    # depend on the first task's head, so no game, no warning
    text = SHARED.replace(
        "  cls_opt: {type: adam, lr: 1.0e-2, params: [body, cls_head]}\n  reg_opt: {type: sgd, lr: 0.1, params: [reg_head, body]}\n",
        "  opt: {type: adam, lr: 1.0e-2, params: [body, cls_head, reg_head]}\n",
    )
    text = text.replace("step: [cls_opt]", "step: [opt]").replace("step: [reg_opt]", "step: [opt]")
    if head_optimizers:
        text = text.replace(
            "params: [body, cls_head, reg_head]}\n",
            "params: [body]}\n  cls_opt: {type: sgd, lr: 0.1, params: [cls_head]}\n  reg_opt: {type: sgd, lr: 0.1, params: [reg_head]}\n",
        )
        text = text.replace("step: [opt]", "step: [opt, cls_opt]", 1).replace(
            "step: [opt]\n", "step: [opt, reg_opt]\n", 1
        )
    compiled, mine, _ = compile_variant(text)
    assert mine == []
    assert [ph.step for ph in compiled.phases] == (
        [["opt", "cls_opt"], ["opt", "reg_opt"]] if head_optimizers else [["opt"], ["opt"]]
    )


# ---------------------------------------------------------------- W-DOUBLE-STEP and W-SHARED-PARAM


def test_two_optimizers_stepped_in_one_phase_on_one_parameter() -> None:
    _, (w,), text = compile_variant(DOUBLE)
    assert w.code == "W-DOUBLE-STEP"
    assert (w.line, w.column) == line_col(text, "step: [opt, body_opt]", "body_opt")
    assert w.message == (
        "phase fit steps opt and body_opt, which both hold body (2 tensors): each step applies the same gradient, "
        "so those parameters move twice per run"
    )
    assert w.hint == "give each parameter to one optimizer (remove it from the params of opt or body_opt)"
    assert w.width == len("body_opt")


def test_one_optimizer_listed_twice_in_a_step() -> None:
    _, (w,), text = compile_variant(DOUBLE, ("step: [opt, body_opt]", "step: [opt, opt]"))
    assert w.code == "W-DOUBLE-STEP"
    assert (w.line, w.column) == (line_col(text, "step: [opt, opt]")[0], line_col(text, "step: [opt, opt]", "opt]")[1])
    assert w.message == (
        "phase fit lists opt twice in its step: body (2 tensors), head (2 tensors) move twice per run on the same gradient"
    )
    assert w.hint == "remove opt from this step list"


def test_two_optimizers_that_update_one_parameter_in_different_phases() -> None:
    _, (w,), text = compile_variant(SHARED)
    assert w.code == "W-SHARED-PARAM"
    assert (w.line, w.column) == line_col(text, "reg_opt: {type: sgd", "body]")
    assert w.path == ("optimizers", "reg_opt", "params", 1)
    assert w.message == (
        "optimizers cls_opt and reg_opt both update body (2 tensors) (cls_opt in phase classify, reg_opt in phase "
        "regress): each applies its own learning rate and moment estimates to them"
    )
    assert w.hint.startswith("give each parameter to one optimizer")


def test_sharing_is_silent_where_one_optimizer_never_moves_the_parameter() -> None:
    # reg_opt holds body but its phase detaches h, so only cls_opt ever moves body
    _, mine, _ = compile_variant(SHARED, ("    - name: regress\n", "    - name: regress\n      detach: [h]\n"))
    assert mine == []
    # an optimizer that no phase steps moves nothing
    _, mine, _ = compile_variant(SHARED, ("      step: [reg_opt]\n", "      step: [cls_opt]\n"))
    assert mine == []


# ---------------------------------------------------------------- legitimate examples and --strict


@pytest.mark.parametrize("path", sorted(SPECS.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_spec_is_silent(path: pathlib.Path) -> None:
    if "digits" in path.stem:
        pytest.importorskip("sklearn")
    if path.stem.endswith("_cartpole"):
        pytest.importorskip("gymnasium")
    compiled, report = compile_file(path, example_overrides(path))  # a teacher for distill_digits
    assert compiled is not None, report.render()
    assert [d for d in report.items if d.code in MINE] == []
    assert lint_schedule(compiled, load(path.read_text(encoding="utf-8"))) == []
    flow = simulate(compiled)
    assert flow.twice == {}
    for (pi, o), applied in flow.applied.items():  # every step applies its own phase's gradients only
        assert {k.phase for k in applied} == {pi}, (o, applied)


@pytest.mark.parametrize(
    "name",
    [
        "warn_accumulate_counts_last_batch_twice",
        "warn_accumulation_wiped_before_the_step",
        "warn_gan_generator_steps_d_opt",
        "warn_gan_discriminator_steps_g_opt",
        "warn_two_optimizers_one_phase",
        "warn_shared_parameter_two_optimizers",
    ],
)
def test_strict_turns_the_warnings_into_errors(name: str) -> None:
    path = str(BROKEN / f"{name}.yaml")
    ok = CliRunner().invoke(cli, ["validate", "-q", path])
    assert ok.exit_code == 0, ok.output
    strict = CliRunner().invoke(cli, ["validate", "--strict", path])
    assert strict.exit_code == 2, strict.output
    assert "W-" in strict.output and "Traceback" not in strict.output


def test_strict_exit_code_in_a_real_process() -> None:
    path = str(BROKEN / "warn_gan_generator_steps_d_opt.yaml")
    cmd = [sys.executable, "-c", "from onlytorch_cli.main import cli; cli()", "validate", "--strict", path]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert f"{path}:33:21: W-STEP-ROLE phase generator steps d_opt on g_loss" in out
    assert f"{path}: invalid (0 errors, 1 warning)" in out
