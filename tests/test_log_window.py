"""Train rows as window means (train.log_train: mean, the default; onlytorch/log_window.py): each
loss the mean over the iterations since the previous row, each train metric the mean over the
samples of those iterations' batches; ``last`` keeps the last iteration's values; the open window
travels in the checkpoint."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest

from onlytorch import checkpoint as ckpt
from onlytorch.app import load_spec
from onlytorch.log_window import LogWindow
from onlytorch.train import Trainer, train_loop

XOR = pathlib.Path(__file__).resolve().parents[1] / "specs" / "xor.yaml"
# 73 samples in batches of 16: every fifth batch is a 9-sample remainder
SMALL = ["data.train.n=73", "data.batch_size=16", "train.log_every=5"]


def trainer(*overrides: str) -> Trainer:
    return Trainer(load_spec(XOR, overrides=[*SMALL, *overrides]).compiled)


def logged(t: Trainer, steps: int) -> list[dict[str, float]]:
    rows: list[dict[str, float]] = []
    train_loop(t, steps, on_log=lambda record: rows.append({"step": record.step, **record.values}))
    for row in rows:
        del row["time"]  # seconds since the loop started: no two runs share it
    return rows


def test_running_means_weigh_each_value():
    w = LogWindow()
    w.add({"a": 1.0, "b": 4.0})
    w.add({"a": 3.0}, weight=3.0)
    assert w.means == pytest.approx({"a": 2.5, "b": 4.0})
    assert w.take() == pytest.approx({"a": 2.5, "b": 4.0}) and not w and w.take() == {}
    # one value, or equal values: logged exactly
    w.add({"x": 0.1 + 0.2}, weight=9.0)
    w.add({"x": 0.1 + 0.2}, weight=16.0)
    assert w.take()["x"] == 0.1 + 0.2


def at_backward(t: Trainer, metric: str) -> list[tuple[float, int]]:
    """Records, at each backward call of ``t``, the metric's value as the training forward sees it
    (train mode, before the step: recomputed from the forward's values) and the batch's rows."""
    g, node, seen = t.g, t.c.metrics[metric], []
    backward = g.backward_nodes_ex

    def recording(targets, loss, retain_graph=False):
        assert g.is_train_mode() and g.is_grad_enabled()
        seen.append((float(g.forward_node(node)), t._drawn))
        return backward(targets, loss, retain_graph)

    g.backward_nodes_ex = recording  # type: ignore[method-assign]
    return seen


def test_a_train_row_is_the_mean_of_its_window_and_a_remainder_batch_weighs_its_samples():
    steps, k = 15, 5
    rows = logged(trainer(), steps)
    # the same run, one iteration at a time, each iteration's loss and, at its backward, its batch's
    # metric in train mode before the step (the reference logs last: it computes no metric itself)
    ref = trainer("train.log_train=last")
    seen = at_backward(ref, "accuracy")
    per_step = []
    for _ in range(steps):
        values = ref.run_iteration()
        per_step.append((values["fit/loss"], *seen[-1]))
    assert len(seen) == steps
    sizes = [n for _, _, n in per_step]
    assert sizes[:5] == [16, 16, 16, 16, 9]  # a remainder batch in every window
    assert [r["step"] for r in rows] == [5, 10, 15]
    for row, start in zip(rows, range(0, steps, k)):
        window = per_step[start : start + k]
        losses = [loss for loss, _, _ in window]
        acc = np.array([a for _, a, _ in window])
        n = np.array([n for _, _, n in window], dtype=float)
        assert row["fit/loss"] == pytest.approx(np.mean(losses), rel=1e-12, abs=0)
        assert row["train/accuracy"] == pytest.approx(float((acc * n).sum() / n.sum()), rel=1e-12, abs=0)
    # the weighting matters here: the unweighted mean of the first window differs
    acc = np.array([a for _, a, _ in per_step[:k]])
    assert abs(acc.mean() - rows[0]["train/accuracy"]) > 1e-6


def test_log_train_last_logs_the_last_iteration():
    rows = logged(trainer("train.log_train=last"), 10)
    ref = trainer()
    for step in range(1, 11):
        values = ref.run_iteration()
        if step % 5 == 0:
            row = next(r for r in rows if r["step"] == step)
            assert row["fit/loss"] == values["fit/loss"]
            assert row["train/accuracy"] == ref.train_metrics()["train/accuracy"]


def test_the_weights_are_the_same_whatever_is_logged():
    mean, last = trainer(), trainer("train.log_train=last")
    logged(mean, 12)
    logged(last, 12)
    a, b = mean.state(), last.state()
    assert sorted(a) == sorted(b)  # the last step is always logged: no window is left open
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_the_open_window_is_in_the_checkpoint_and_a_resume_logs_the_same_rows():
    full = logged(trainer(), 15)
    first = trainer()
    with pytest.raises(KeyboardInterrupt):  # stopped after step 7: the window holds steps 6 and 7
        train_loop(first, 15, on_log=lambda r: None, should_stop=lambda: first.step == 7)
    state = first.state()
    assert list(state["logwin/names"]) == ["fit/loss", "train/accuracy"]
    assert state["logwin/weights"].tolist() == [2.0, 16.0 + 16.0]
    second = trainer()
    second.restore(state)
    rest = logged(second, 15)
    assert rest == [r for r in full if r["step"] > 7]
    # an older checkpoint (no window): resumes with an empty window, the next row covers less
    older = trainer()
    older.restore({k: v for k, v in state.items() if not k.startswith("logwin/")})
    assert logged(older, 10)[0]["fit/loss"] != full[1]["fit/loss"]


@pytest.fixture
def mid_window_state() -> dict[str, np.ndarray]:
    t = trainer()
    with pytest.raises(KeyboardInterrupt):
        train_loop(t, 12, on_log=lambda r: None, should_stop=lambda: t.step == 3)
    return t.state()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s.update({"logwin/names": np.array(["fit/loss", "gen/loss"])}), "names 'gen/loss'"),
        (lambda s: s.update({"logwin/means": np.array([np.nan, 1.0])}), "NaN"),
        (lambda s: s.update({"logwin/weights": np.array([0.0, 1.0])}), "not positive"),
        (lambda s: s.update({"logwin/weights": np.array([1.0])}), "logwin/weights"),
        (lambda s: s.pop("logwin/means"), "'logwin/means' is missing"),
        (lambda s: s.update({"logwin/extra": np.array(1.0)}), "logwin/extra"),
        (lambda s: s.update({"logwin/names": np.array(["fit/loss", "fit/loss"])}), "twice"),
    ],
)
def test_a_bad_window_in_a_checkpoint_is_refused(mid_window_state, edit, message):
    state = dict(mid_window_state)
    edit(state)
    t = trainer()
    with pytest.raises(ckpt.CheckpointError, match=message):
        t.restore(state)
    assert t.step == 0 and not t.log_window  # nothing applied


def test_log_train_last_resumes_from_a_mean_checkpoint_with_no_window(mid_window_state):
    t = trainer("train.log_train=last")
    t.restore(mid_window_state)
    assert not t.log_window and "logwin/names" not in t.state()
