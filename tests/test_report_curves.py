"""What ``onlytorch report``'s pictures show, read back from the figures and the PNG files (issue 17):
train and evaluations of a loss or metric on the same axes; raw and ``:weighted`` losses told
apart; gradient norms drawn; a panel only where there is a curve, a constant learning rate or
gradient norm said in the summary instead of drawn; short wall times in milliseconds."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from onlytorch import report
from tests.test_report import _info, make_run

pytest.importorskip("matplotlib")

# after the skip: the plot extra is optional
from matplotlib.colors import to_rgb
from matplotlib.image import imread


def overfitting_rows(steps: int = 400, log_every: int = 20, eval_every: int = 100) -> list[dict[str, Any]]:
    """A classifier that over-fits: the train loss keeps falling, the evaluated loss turns up."""
    rows: list[dict[str, Any]] = []
    for s in range(log_every, steps + 1, log_every):
        rows.append(
            {
                "step": s,
                "kind": "train",
                "fit/loss": 2.0 * math.exp(-s / 100),
                "train/accuracy": 1 - 0.5 * math.exp(-s / 80),
                "lr/opt": 0.05,
                "grad_norm/opt": 10.0 * math.exp(-s / 50),
                "time": s * 0.001,
            }
        )
        if s % eval_every == 0:
            rows.append(
                {
                    "step": s,
                    "kind": "eval",
                    "eval/loss": 0.5 + (s / 400 - 0.5) ** 2,
                    "val/loss": 0.6 + (s / 400 - 0.5) ** 2,
                    "eval/accuracy": 0.8 - (s / 400 - 0.5) ** 2,
                }
            )
    return rows


def read(tmp_path: Path, rows: list[dict[str, Any]], **info: Any) -> report.Run:
    return report.read_run(make_run(tmp_path, rows=rows, info=_info(**info)))


def figures(run: report.Run) -> dict[str, Any]:
    return dict(report.figures(run))


def curves(fig: Any) -> dict[str, Any]:
    """Every line of a figure by the logged key it draws (its gid)."""
    return {line.get_gid(): line for ax in fig.axes for line in ax.lines if line.get_gid()}


def axes_of(fig: Any, gid: str) -> Any:
    (ax,) = [ax for ax in fig.axes if any(line.get_gid() == gid for line in ax.lines)]
    return ax


def assert_draws(line: Any, run: report.Run, name: str) -> None:
    steps, values = report.series(run, name)
    x, y = (np.asarray(a, dtype=np.float64) for a in line.get_data())
    np.testing.assert_array_equal(x, steps)
    np.testing.assert_array_equal(y, values)


# ---------------------------------------------------------------- the over-fitting view


def test_train_and_evaluated_loss_share_axes_and_the_metric_too(tmp_path: Path) -> None:
    run = read(tmp_path, overfitting_rows(), eval_split="test")
    figs = figures(run)
    assert list(figs) == ["losses.png", "metrics.png", "grad_norm.png"]  # lr constant: no lr.png

    losses = curves(figs["losses.png"])
    assert set(losses) == {"fit/loss", "eval/loss", "val/loss"}
    for name, line in losses.items():
        assert_draws(line, run, name)
    ax = axes_of(figs["losses.png"], "fit/loss")
    assert {line.get_gid() for line in ax.lines} == {"fit/loss", "eval/loss", "val/loss"}  # the same axes
    assert len(figs["losses.png"].axes) == 1
    labels = {line.get_gid(): line.get_label() for line in ax.lines}
    assert labels["fit/loss"] == "fit/loss (train)"
    assert labels["eval/loss"] == "eval/loss (evaluated on test)"
    assert labels["val/loss"] == "val/loss (evaluated on val, chooses best.npz)"
    # evaluations are dots, in their own colours
    assert ax.lines[1].get_marker() == "o" and len({line.get_color() for line in ax.lines}) == 3

    metrics = curves(figs["metrics.png"])
    assert set(metrics) == {"train/accuracy", "eval/accuracy"}  # eval/loss is on the loss panel only
    assert axes_of(figs["metrics.png"], "train/accuracy") is axes_of(figs["metrics.png"], "eval/accuracy")
    for name, line in metrics.items():
        assert_draws(line, run, name)


def test_a_loss_used_in_two_phases_gets_one_panel_with_a_colour_per_phase(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "warmup/mse": 1.0 / s, "main/mse": 0.5 / s} for s in range(1, 6)]
    rows += [{"step": 5, "kind": "eval", "eval/mse": 0.2}]
    run = read(tmp_path, rows)
    assert report.loss_panels(run) == [report.Panel("mse", ("warmup/mse", "main/mse", "eval/mse"))]
    fig = figures(run)["losses.png"]
    lines = curves(fig)
    assert len(fig.axes) == 1 and lines["warmup/mse"].get_color() != lines["main/mse"].get_color()
    assert_draws(lines["eval/mse"], run, "eval/mse")  # one evaluation: a dot on the train curves' axes


# ---------------------------------------------------------------- raw and weighted losses


def test_weighted_losses_are_dashed_in_their_raw_curves_colour(tmp_path: Path) -> None:
    rows = [
        {
            "step": s,
            "kind": "train",
            "elbo/recon": 30.0 - s,
            "elbo/kl": 10.0 + s,
            "elbo/kl:weighted": (10.0 + s) * s / 10,
        }
        for s in range(1, 11)
    ]
    rows.append({"step": 10, "kind": "eval", "eval/kl": 19.0, "eval/recon": 21.0})
    run = read(tmp_path, rows)
    assert [p.curves for p in report.loss_panels(run)] == [
        ("elbo/recon", "eval/recon"),
        ("elbo/kl", "elbo/kl:weighted", "eval/kl"),
    ]
    fig = figures(run)["losses.png"]
    lines = curves(fig)
    raw, weighted = lines["elbo/kl"], lines["elbo/kl:weighted"]
    assert axes_of(fig, "elbo/kl") is axes_of(fig, "elbo/kl:weighted") is axes_of(fig, "eval/kl")
    assert raw.get_linestyle() == "-" and weighted.get_linestyle() == "--"
    assert raw.get_color() == weighted.get_color()
    assert (
        raw.get_label() == "elbo/kl (train, raw)"
        and weighted.get_label() == "elbo/kl:weighted (train, times the weight)"
    )
    assert lines["elbo/recon"].get_label() == "elbo/recon (train)"  # no weighted sibling: no "raw" either
    assert_draws(raw, run, "elbo/kl")
    assert_draws(weighted, run, "elbo/kl:weighted")
    assert "dashed: times the backward's weight" in fig.get_suptitle()
    table = report.summary_table(run)
    assert "PHASE/LOSS:weighted: times the backward's weight" in table
    assert "  elbo/kl:weighted " in table and "  elbo/kl " in table


# ---------------------------------------------------------------- gradient norms, learning rates


def test_gradient_norms_are_drawn_on_a_log_scale_when_they_span_decades(tmp_path: Path) -> None:
    run = read(tmp_path, overfitting_rows())
    fig = figures(run)["grad_norm.png"]
    (ax,) = fig.axes
    assert_draws(curves(fig)["grad_norm/opt"], run, "grad_norm/opt")
    assert ax.get_yscale() == "log"  # 10 * exp(-s / 50): more than two decades
    assert "before clipping" in ax.get_title()
    steps, values = report.series(run, "grad_norm/opt")
    assert (
        f"opt last {values[-1]:.5g}, max {values.max():.5g} at step {steps[values.argmax()]}"
        in dict(report.facts(run))["gradient norm"]
    )


def test_many_gradient_norms_get_a_moving_average_over_the_raw_values(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [{"step": s, "kind": "train", "p/loss": 1.0, "grad_norm/opt": float(1 + rng.uniform())} for s in range(200)]
    run = read(tmp_path, rows)
    lines = curves(figures(run)["grad_norm.png"])
    assert_draws(lines["grad_norm/opt raw"], run, "grad_norm/opt")
    smooth = np.asarray(lines["grad_norm/opt"].get_ydata())
    assert smooth.std() < report.series(run, "grad_norm/opt")[1].std() / 2
    assert figures(run)["grad_norm.png"].axes[0].get_yscale() == "linear"


def test_a_constant_learning_rate_is_said_not_drawn(tmp_path: Path) -> None:
    rows = [
        {"step": s, "kind": "train", "p/loss": 1.0 / s, "lr/a": 0.01, "lr/b": 0.1 / s, "grad_norm/a": 2.0}
        for s in range(1, 5)
    ]
    run = read(tmp_path, rows)
    figs = figures(run)
    assert list(figs) == ["losses.png", "lr.png"]  # grad_norm/a constant too: no grad_norm.png
    assert set(curves(figs["lr.png"])) == {"lr/b"}
    assert_draws(curves(figs["lr.png"])["lr/b"], run, "lr/b")
    said = dict(report.facts(run))
    assert said["learning rate"] == "a constant at 0.01; b from 0.1 to 0.025"
    assert said["gradient norm"] == "a constant at 2"
    only_constant = read(
        tmp_path / "c", [{"step": s, "kind": "train", "p/loss": 1.0 / s, "lr/a": 0.01} for s in (1, 2)]
    )
    assert [p.name for p in report.write_plots(only_constant, tmp_path / "out")] == ["losses.png"]
    assert "learning rate    a constant at 0.01" in report.summary_table(only_constant)


# ---------------------------------------------------------------- panels only where there is a curve


def test_a_single_evaluation_gets_no_panel_of_its_own(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "fit/loss": 1.0 / s, "train/accuracy": s / 4} for s in range(1, 5)]
    rows.append({"step": 4, "kind": "eval", "eval/accuracy": 0.9, "eval/loss": 0.3, "eval/f1": 0.7})
    run = read(tmp_path, rows)
    assert [p.title for p in report.metric_panels(run)] == ["accuracy"]  # f1: one value, no train curve
    fig = figures(run)["metrics.png"]
    assert len(fig.axes) == 1 and set(curves(fig)) == {"train/accuracy", "eval/accuracy"}
    assert report.undrawn(run) == ["eval/f1"]
    said = dict(report.facts(run))["not in the pictures"]
    assert said == "eval/f1 (a single value each: see the table)"
    assert report.summary_table(run).count("eval/f1") == 2  # said, and in the table


def test_a_run_logged_once_draws_nothing_and_says_so(tmp_path: Path) -> None:
    rows = [{"step": 10, "kind": "train", "fit/loss": 0.5, "train/accuracy": 1.0, "lr/opt": 0.1, "grad_norm/opt": 0.2}]
    rows.append({"step": 10, "kind": "eval", "eval/accuracy": 1.0})
    run = read(tmp_path, rows)
    assert report.figures(run) == [] and report.write_plots(run, tmp_path / "out") == []
    said = dict(report.facts(run))
    assert said["not in the pictures"].startswith("fit/loss, train/accuracy, eval/accuracy")
    assert said["learning rate"] == "opt constant at 0.1"


def test_nan_values_are_no_curve(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "p/loss": v} for s, v in [(1, 1.0), (2, float("nan")), (3, float("inf"))]]
    run = read(tmp_path, rows)
    assert not report.is_curve(run, "p/loss") and report.loss_panels(run) == []


# ---------------------------------------------------------------- the files hold those figures


def pixels_near(image: np.ndarray, colour: str, tolerance: float = 0.08) -> int:
    return int((np.abs(image[..., :3] - np.array(to_rgb(colour))).max(axis=-1) < tolerance).sum())


def test_the_png_files_are_the_figures_read_back(tmp_path: Path) -> None:
    run = read(tmp_path, overfitting_rows(), eval_split="test")
    written = report.write_plots(run, tmp_path / "out")
    assert [p.name for p in written] == ["losses.png", "metrics.png", "grad_norm.png"]
    drawn = report.figures(run)
    assert [name for name, _ in drawn] == [p.name for p in written]
    for path, (_, fig) in zip(written, drawn):
        width, height = fig.get_size_inches() * report.DPI
        assert imread(path).shape[:2] == (round(height), round(width))
    losses = imread(tmp_path / "out" / "losses.png")
    drawn[0][1].savefig(tmp_path / "again.png", dpi=report.DPI)
    np.testing.assert_array_equal(losses, imread(tmp_path / "again.png"))  # the very figure the tests above inspect
    # the train curve (C0), the evaluation on eval.split (C1) and on val (C2) are all in the picture
    assert min(pixels_near(losses, c) for c in ("C0", "C1", "C2")) > 200


def test_a_loss_without_evaluations_has_no_evaluation_colour_in_its_file(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "fit/loss": 1.0 / s} for s in range(1, 20)]
    run = read(tmp_path, rows)
    (path,) = report.write_plots(run, tmp_path / "out")
    image = imread(path)
    assert pixels_near(image, "C0") > 200 and pixels_near(image, "C1") == 0 and pixels_near(image, "C2") == 0


# ---------------------------------------------------------------- wall time


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.047, "47 ms"),
        (0.22341804600000614, "223 ms"),
        (0.0004, "0.4 ms"),
        (0.0, "0 ms"),
        (0.9999, "1.0 s"),
        (12.5, "12.5 s"),
        (59.97, "1 min 00 s"),
        (3725, "1 h 02 min"),
        (float("nan"), "?"),
        (None, "?"),
    ],
)
def test_wall_time_is_shown_in_ms_for_a_short_run(seconds: Any, text: str) -> None:
    assert report.duration(seconds) == text


def test_the_summary_of_a_short_run_says_milliseconds(tmp_path: Path) -> None:
    run = read(tmp_path, overfitting_rows(), wall_time=0.047)
    assert "wall time        47 ms" in report.summary_table(run)


def test_importing_the_report_does_not_import_matplotlib() -> None:
    import subprocess
    import sys

    code = "import sys, onlytorch.report; print(sorted(m for m in sys.modules if m.startswith('matplotlib')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_loss_starting_high_does_not_squash_the_gap_between_train_and_eval(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "fit/loss": 0.35 + 1.5 * math.exp(-s / 20)} for s in range(10, 1001, 10)]
    rows += [{"step": s, "kind": "eval", "eval/loss": 0.37} for s in range(250, 1001, 250)]
    run = read(tmp_path, rows)
    ax = figures(run)["losses.png"].axes[0]
    lo, hi = ax.get_ylim()
    train = report.series(run, "fit/loss")[1]
    assert hi < 0.5 < train[0] and lo < train.min()  # the first steps above the axes, the rest inside
    assert f"y axis cut: the first steps reach up to {train.max():.4g}" in ax.get_title()
    steady = read(tmp_path / "steady", [{"step": s, "kind": "train", "fit/loss": 2 - s / 20} for s in range(1, 20)])
    assert "cut" not in figures(steady)["losses.png"].axes[0].get_title()


def test_pictures_an_earlier_report_left_are_removed_and_nothing_else(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "lr.png").write_bytes(b"an earlier report's")
    (out / "notes.txt").write_text("mine")
    rows = [{"step": s, "kind": "train", "p/loss": 1.0 / s, "lr/opt": 0.1} for s in range(1, 5)]
    written = report.write_plots(read(tmp_path, rows), out)
    assert [p.name for p in written] == ["losses.png"]
    assert sorted(p.name for p in out.iterdir()) == ["losses.png", "notes.txt"]


def test_an_evaluation_without_a_split_is_labelled_an_evaluation(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "rollout/return_mean": 10.0 * s} for s in (1, 2, 3)]
    rows += [{"step": s, "kind": "eval", "eval/return_mean": 12.0 * s} for s in (2, 3)]
    run = read(tmp_path, rows, eval_split=None)
    lines = curves(figures(run)["metrics.png"])
    assert lines["eval/return_mean"].get_label() == "eval/return_mean (evaluation)"
    assert lines["rollout/return_mean"].get_label() == "rollout/return_mean"
