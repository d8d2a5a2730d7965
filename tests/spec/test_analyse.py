"""The analysis pass is a query: reach, cuts and releases come from plan.gradient_flow, and a
backward plan (gradient nodes) is built only when a later backward might read a value an earlier
one releases (issue 11: validate does no more work than it needs)."""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
from example_init import example_overrides

from onlytorch import footprint, op_memory, plan
from onlytorch.compile import compile_file, compile_text
from onlytorch.compiler import analyse

ROOT = pathlib.Path(__file__).resolve().parents[2]
BROKEN = ROOT / "tests" / "spec" / "broken"


def _refuse(*args: Any, **kwargs: Any) -> None:
    raise AssertionError("a backward plan was built")


@pytest.fixture
def no_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building a backward plan or any gradient node fails."""
    monkeypatch.setattr(plan.BackwardPlan, "__init__", _refuse)
    monkeypatch.setattr(plan, "build_gradients", _refuse)


@pytest.fixture
def plans_built(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The loss name of every backward plan built."""
    built: list[str] = []
    init = plan.BackwardPlan.__init__

    def counting(self: plan.BackwardPlan, g: Any, y: Any, xs: Any) -> None:
        built.append(y.name)
        init(self, g, y, xs)

    monkeypatch.setattr(plan.BackwardPlan, "__init__", counting)
    return built


def test_validating_gan_ring_builds_no_backward_plan(no_plans: None) -> None:
    compiled, report = compile_file(ROOT / "specs" / "gan_ring.yaml")
    assert compiled is not None, report.items
    assert not report.errors
    assert not any(n.hidden for n in compiled.graph.records())  # no gradient node either
    disc, gen = compiled.phases
    assert [b.plan for b in disc.backward + gen.backward] == [None, None]
    assert {p.name.split(".")[0] for p in disc.backward[0].reached} == {"D"}
    assert {p.name.split(".")[0] for p in gen.backward[0].reached} == {"G"}
    assert {p.split(".")[0] for p in disc.cut["fake"]} == {"G"}


def test_a_real_release_conflict_builds_the_later_plan_and_reports_e_released(plans_built: list[str]) -> None:
    compiled, report = compile_file(BROKEN / "released_multitask.yaml")
    assert compiled is None
    released = [d for d in report.items if d.code == "E-RELEASED"]
    assert [d.message for d in released] == [
        "phase joint: backward 2 (reg_loss) needs values that backward 1 (cls_loss) releases: 'h'"
    ]
    assert plans_built == ["reg_loss"]  # the later backward's only: what it reads is the question


def test_a_retain_nothing_needs_warns_without_a_plan_when_nothing_overlaps(plans_built: list[str]) -> None:
    compiled, report = compile_file(BROKEN / "warn_retain_last_backward.yaml")
    assert [d.code for d in report.items] == ["W-RETAIN"]
    assert compiled is not None
    assert plans_built == ["reg_loss"]  # the first retain overlaps the second backward's path: checked exactly


SEPARATE = """
version: 1
name: separate
data:
  train: {source: synthetic.moons, n: 64}
  batch_size: 16
inputs:
  x: {shape: [2], from: train.x}
  y: {shape: [], dtype: int64, from: train.y}
modules:
  a: [{linear: 2}]
  b: [{linear: 2}]
losses:
  la: cross_entropy(a(x), y)
  lb: cross_entropy(b(x), y)
optimizers:
  opt: {type: sgd, lr: 0.1, params: [a, b]}
train:
  steps: 2
  schedule:
    - name: both
      backward: [{loss: la, retain_graph: true}, {loss: lb}]
      step: [opt]
"""


def test_backwards_on_separate_paths_need_no_plan(no_plans: None) -> None:
    # la's path (a's layer and its loss) shares no value with lb's: the bound settles it, so the
    # retain_graph on the first backward is reported as wasted without any plan.
    compiled, report = compile_text(SEPARATE, data_root=None)
    assert [d.code for d in report.items] == ["W-RETAIN"]
    assert compiled is not None and [b.plan for b in compiled.phases[0].backward] == [None, None]


# Example specs changed the way a user would: (the example, (text, replacement) pairs).
VARIANTS = {
    # batch norm over (N, C, H, W): its derivative recomputes several values of its input's size
    "digits_cnn.yaml with batch_norm": ("digits_cnn.yaml", [("{group_norm: 4}", "batch_norm")]),
}


def _example(name: str) -> Any:
    if name not in VARIANTS:
        return compile_file(ROOT / "specs" / name, example_overrides(name))  # a teacher for distill_digits
    base, swaps = VARIANTS[name]
    text = (ROOT / "specs" / base).read_text()
    for old, new in swaps:
        assert old in text, (base, old)
        text = text.replace(old, new)
    return compile_text(text, name, ROOT / "specs", example_overrides(base))


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "specs").glob("*.yaml")) + sorted(VARIANTS))
def test_the_memory_model_of_working_gradients_is_near_the_built_plans(name: str) -> None:
    """The estimate's working gradients (a pure model over the flow path) against what the built
    plan's steps hold at once, freed at their last use (and an op's declared scratch while it
    runs, as memory_stats counts it): 0.85x-1.05x on every example spec and variant."""
    compiled, report = _example(name)
    assert compiled is not None, report.items
    g, batch = compiled.graph, compiled.spec.data.batch_size if compiled.spec.data else 1
    for ph in compiled.phases:
        for b in ph.backward:
            built = analyse.backward_plan(g, b.loss_node, b.targets, ph.detach)
            outputs = {gn.index for gn in built.grads if gn is not None}
            live = exact = 0
            for step, frees in zip(built.steps, built.frees):
                live += footprint.node_bytes(step, batch) if step.index not in outputs else 0
                exact = max(exact, live + op_memory.scratch_bytes(step, batch))
                live -= sum(footprint.node_bytes(f, batch) for f in frees)
            model = footprint.working_gradients(g, b, ph.detach, batch)
            assert 0.85 * exact <= model <= 1.05 * exact, (ph.name, b.loss, model, exact)
