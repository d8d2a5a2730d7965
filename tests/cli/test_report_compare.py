"""``onlytorch report RUN RUN ...``: several real runs compared. The table's values against each
run's metrics.jsonl, the spec differences, the pictures by content (the plotted data of every
curve, the saved file being that figure, each run's colour in its pixels), the HTML page, where
things are written, and bad input (exit 2 naming the directory)."""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from onlytorch import compare, report

from . import fails, ok, rows, spec

# (directory, overrides): two runs of xor that share its name (so they are labelled by directory)
# with different learning rates and seeds, and a shorter one renamed.
RUNS = {
    "fast": ["optimizers.opt.lr=0.05", "seed=0"],
    "slow": ["optimizers.opt.lr=0.01", "seed=1"],
    "short": ["optimizers.opt.lr=0.05", "seed=0", "name=xor_short", "train.steps=60"],
}
COMMON = ["train.steps=120", "train.log_every=10", "train.eval_every=40", "data.train.n=64"]
LABELS = ["fast", "slow", "xor_short"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("runs")
    out = []
    for name, overrides in RUNS.items():
        sets = [a for o in COMMON + [o for o in overrides if not o.startswith("seed=")] for a in ("--set", o)]
        seed = next(o.partition("=")[2] for o in overrides if o.startswith("seed="))
        ok("train", spec("xor"), "--out", root / name, "--seed", seed, "--quiet", *sets)
        out.append(root / name)
    return out


def logged(run_dir: Path, name: str) -> tuple[list[int], list[float]]:
    """The steps and values of one quantity, read straight from metrics.jsonl."""
    pairs = [(r["step"], r[name]) for r in rows(run_dir) if name in r]
    return [s for s, _ in pairs], [v for _, v in pairs]


def report_of(tmp_path: Path, *args: Any) -> str:
    return ok("report", *args).output


def table_cells(output: str, name: str) -> list[str]:
    (line,) = [ln for ln in output.splitlines() if ln.strip().startswith(name + " ")]
    return line.split()[1:]


# ---------------------------------------------------------------- the table


def test_the_table_holds_each_runs_final_and_best_value_from_its_log(runs: list[Path], tmp_path: Path) -> None:
    output = report_of(tmp_path, *runs, "--out", tmp_path / "out", "--no-plots")
    for name in ("fit/loss", "eval/loss"):
        cells = table_cells(output, name)
        finals, bests = [], []
        for run_dir in runs:
            steps, values = logged(run_dir, name)
            i = int(np.argmin(values))
            finals.append(values[-1])
            bests.append((values[i], steps[i]))
        assert len(cells) == 3 * len(runs)  # final, best, @step per run
        for k, (final, (best, step)) in enumerate(zip(finals, bests)):
            final_cell, best_cell, step_cell = cells[3 * k : 3 * k + 3]
            assert final_cell.rstrip("*") == f"{final:.5g}"
            assert best_cell == f"{best:.5g}"
            assert step_cell.rstrip("*") == f"@{step}"
            # the lowest final (best) loss of the runs is the one marked, and only it
            assert final_cell.endswith("*") == (final == min(finals))
            assert step_cell.endswith("*") == (best == min(b for b, _ in bests))
    assert sum("*" in c for c in table_cells(output, "eval/loss")) == 2  # one final, one best
    # accuracy declares no direction in xor: nothing is called best (nor marked)
    assert "*" not in "".join(table_cells(output, "eval/accuracy"))
    (labels_line,) = [ln for ln in output.splitlines() if ln.strip().startswith("fast --")]
    assert [w for w in labels_line.split() if not w.startswith("-")] == LABELS


def test_the_table_rows_are_the_runs_own_report_numbers(runs: list[Path]) -> None:
    c = compare.read_runs(runs)
    table = {row.name: row for row in compare.rows(c)}
    assert list(table) == ["fit/loss", "train/accuracy", "eval/accuracy", "eval/loss"]
    for i, run_dir in enumerate(runs):
        own = {q.name: q for q in report.quantities(report.read_run(run_dir))}
        for name, row in table.items():
            cell = row.cells[i]
            assert cell is not None and cell == own[name]
            steps, values = logged(run_dir, name)
            assert (cell.final, cell.final_step) == (values[-1], steps[-1])


# ---------------------------------------------------------------- spec differences


def test_the_spec_differences_are_the_keys_that_differ_and_the_seed(runs: list[Path], tmp_path: Path) -> None:
    output = report_of(tmp_path, *runs, "--no-plots")
    part = output.split("spec differences", 1)[1].split("\nnote:", 1)[0]
    lines = [ln.strip() for ln in part.splitlines()[1:] if ln.strip()]
    assert lines == [
        "name: xor | xor | xor_short",
        "seed: 0 | 1 | 0",
        "optimizers.opt.lr: 0.05 | 0.01 | 0.05",
        "train.steps: 120 | 120 | 60",
    ]
    # the seed comes from run.json: a spec.yaml saying otherwise does not hide it
    flat = compare.flat_spec(report.read_run(runs[1]))
    assert flat is not None and flat["seed"] == "1" and flat["data.batch_size"] == "32"
    assert flat["train.schedule.0.backward.0.loss"] == "loss" and flat["optimizers.opt.params.0"] == "net"


def test_runs_of_different_specs_show_every_difference_and_a_run_without_a_spec_is_noted(
    runs: list[Path], tmp_path: Path
) -> None:
    other = tmp_path / "other"
    shutil.copytree(runs[0], other)
    spec_file = other / "spec.yaml"
    resolved = yaml.safe_load(spec_file.read_text())
    resolved["modules"]["net"]["layers"][0] = {"linear": 16}
    resolved["train"]["schedule"][0]["backward"].append({"loss": "loss", "weight": 0.5})
    spec_file.write_text(yaml.safe_dump(resolved, sort_keys=False))
    c = compare.read_runs([runs[0], other])
    diffs = dict(compare.spec_differences(c))
    assert diffs == {
        "modules.net.layers.0.linear": ["8", "16"],
        "train.schedule.0.backward.1.loss": ["(absent)", "loss"],
        "train.schedule.0.backward.1.weight": ["(absent)", "0.5"],
    }
    spec_file.unlink()
    c = compare.read_runs([runs[0], runs[1], other])
    assert dict(compare.spec_differences(c))["optimizers.opt.lr"] == ["0.05", "0.01", "?"]
    assert any(n.startswith("other: no readable spec.yaml") for n in c.notes)
    assert compare.differences_text([(f"k{i}", ["1", "2"]) for i in range(45)], limit=40).endswith(
        "... and 5 more (the HTML page lists them all)"
    )


# ---------------------------------------------------------------- the pictures, by content


def curves(fig: Any) -> dict[str, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Panel title's first word -> legend label -> the plotted (x, y) of that curve."""
    out: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
    for ax in fig.axes:
        panel = out.setdefault(ax.get_title().split()[0], {})
        for line in ax.get_lines():
            if not line.get_label().startswith("_"):
                panel[line.get_label()] = (np.asarray(line.get_xdata()), np.asarray(line.get_ydata()))
    return out


def test_each_panel_has_one_curve_per_run_with_that_runs_values(runs: list[Path]) -> None:
    pytest.importorskip("matplotlib")
    c = compare.read_runs(runs)
    figures = dict(compare.figures(c))
    assert list(figures) == ["compare-losses.png", "compare-metrics.png", "compare-optimizers.png"]
    drawn = {name: curves(fig) for name, fig in figures.items()}
    expected = {
        "compare-losses.png": ["fit/loss"],
        "compare-metrics.png": ["train/accuracy", "eval/accuracy", "eval/loss"],
        "compare-optimizers.png": ["grad_norm/opt"],  # the learning rates are constant: no panel
    }
    for picture, quantities in expected.items():
        assert list(drawn[picture]) == quantities
        for quantity in quantities:
            assert list(drawn[picture][quantity]) == LABELS  # one curve per run, labelled by the run
            for run_dir, label in zip(runs, LABELS):
                steps, values = logged(run_dir, quantity)
                x, y = drawn[picture][quantity][label]
                np.testing.assert_array_equal(x, steps)
                np.testing.assert_array_equal(y, values)
    # a run keeps its colour in every panel of every picture, and no two runs share one
    for fig in figures.values():
        for ax in fig.axes:
            colours = [line.get_color() for line in ax.get_lines()]
            assert colours == [compare.run_style(i)["color"] for i in range(len(runs))]
        legend = fig.legends[0]
        assert [t.get_text() for t in legend.get_texts()] == LABELS
    loss_ax = figures["compare-losses.png"].axes[0]
    assert loss_ax.get_title() == "fit/loss (lower is better)"


def test_the_saved_pictures_are_these_figures(runs: list[Path], tmp_path: Path) -> None:
    mpl_image = pytest.importorskip("matplotlib.image")
    from matplotlib.colors import to_rgb

    c = compare.read_runs(runs)
    written = compare.write_plots(c, tmp_path / "pictures")
    assert [p.name for p in written] == list(compare.PICTURES)
    fig = dict(compare.figures(c))["compare-losses.png"]
    again = io.BytesIO()
    fig.savefig(again, dpi=report.DPI, format="png")
    assert (tmp_path / "pictures" / "compare-losses.png").read_bytes() == again.getvalue()  # exactly that figure
    # and each run's curve is in the file's pixels: its colour covers a line's worth of them
    pixels = mpl_image.imread(str(tmp_path / "pictures" / "compare-losses.png"))[..., :3]
    for i in range(len(runs)):
        rgb = np.array(to_rgb(compare.run_style(i)["color"]))
        assert (np.abs(pixels - rgb).max(axis=2) < 0.02).sum() > 200, f"run {i}'s colour is missing"


def test_long_noisy_curves_are_smoothed_over_the_raw_line_and_a_dominating_start_is_cut(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(0)
    steps = np.arange(1, 201)
    dirs = []
    for k, level in enumerate((0.5, 0.3)):
        loss = level + 0.02 * rng.normal(size=steps.size)
        loss[:5] = 5.0  # a start far above the rest
        loss[100] = float("nan")
        dirs.append(
            fake_run(
                tmp_path / f"r{k}",
                [{"step": int(s), "kind": "train", "fit/loss": float(v)} for s, v in zip(steps, loss)],
            )
        )
    c = compare.read_runs(dirs)
    ((_, fig),) = compare.figures(c)
    ax = fig.axes[0]
    assert "y axis cut: the first steps reach up to 5" in ax.get_title()
    lo, hi = ax.get_ylim()
    assert hi < 1.0 and lo > 0.1
    lines = {line.get_gid(): line for line in ax.get_lines()}
    assert set(lines) == {"raw:r0", "smoothed:r0", "raw:r1", "smoothed:r1"}
    for k, d in enumerate(dirs):
        _, values = report.series(report.read_run(d), "fit/loss")
        raw = np.asarray(lines[f"raw:r{k}"].get_ydata())
        np.testing.assert_array_equal(raw, values)  # the NaN stays a gap
        smooth = np.asarray(lines[f"smoothed:r{k}"].get_ydata())
        assert lines[f"smoothed:r{k}"].get_label() == f"r{k}" and np.nanstd(smooth[20:]) < np.nanstd(values[20:])


def test_a_changing_learning_rate_is_drawn_and_single_points_get_no_panel(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    a = fake_run(
        tmp_path / "a", [{"step": s, "kind": "train", "fit/loss": 1.0 / s, "lr/opt": 0.1 / s} for s in (1, 2, 3)]
    )
    b = fake_run(tmp_path / "b", [{"step": s, "kind": "train", "fit/loss": 2.0 / s, "lr/opt": 0.1} for s in (1, 2, 3)])
    same = fake_run(
        tmp_path / "same", [{"step": s, "kind": "train", "fit/loss": 3.0 / s, "lr/opt": 0.1 / s} for s in (1, 2, 3)]
    )
    for d in (a, b, same):
        with (d / "metrics.jsonl").open("a") as f:
            f.write(json.dumps({"step": 3, "kind": "eval", "eval/loss": 0.5}) + "\n")
    c = compare.read_runs([a, b, same])
    assert compare.panels(c) == {"compare-losses.png": ["fit/loss"], "compare-optimizers.png": ["lr/opt"]}
    lr_ax = dict(compare.figures(c))["compare-optimizers.png"].axes[0]
    # a's learning rates hide under same's, exactly: the title says so
    assert lr_ax.get_title() == "lr/opt\nthe same values: a = same"
    assert dict(compare.figures(c))["compare-losses.png"].axes[0].get_title() == "fit/loss (lower is better)"
    assert [r.name for r in compare.rows(c)] == ["fit/loss", "eval/loss"]  # the single point stays in the table
    # both evaluations tie: nothing to choose, nothing marked
    (row,) = [r for r in compare.rows(c) if r.name == "eval/loss"]
    assert row.best_final == row.best_best == frozenset()
    stale = tmp_path / "out" / "compare-metrics.png"
    stale.parent.mkdir()
    stale.write_bytes(b"old")
    written = compare.write_plots(c, tmp_path / "out")
    assert sorted(p.name for p in written) == ["compare-losses.png", "compare-optimizers.png"]
    assert not stale.exists()  # a picture of an earlier comparison is not left beside these


# ---------------------------------------------------------------- the command: output, HTML, where


def test_the_comparison_goes_to_compare_in_the_current_directory_and_nothing_into_the_runs(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    before = {d: sorted(p.relative_to(d) for p in d.rglob("*")) for d in runs}
    output = report_of(tmp_path, *runs)
    folder = tmp_path / "compare"
    assert sorted(p.name for p in folder.iterdir()) == sorted([*compare.PICTURES, "compare.html"])
    assert f"  {Path('compare') / 'compare.html'}" in output or f"  {folder / 'compare.html'}" in output
    assert {d: sorted(p.relative_to(d) for p in d.rglob("*")) for d in runs} == before
    page = (folder / "compare.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page)  # self-contained
    embedded = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    assert [base64.b64decode(e) for e in embedded] == [(folder / p).read_bytes() for p in compare.PICTURES]
    for text in (*LABELS, "optimizers.opt.lr", "<code>0.01</code>", "train.steps"):
        assert text in page
    (eval_loss_row,) = re.findall(r"<tr><td>eval/loss</td>(.*?)</tr>", page)
    assert eval_loss_row.count('class="n best"') == 2


def test_the_default_folder_is_refused_inside_a_run_directory(
    runs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(runs[0] / "checkpoints")
    result = fails(2, "report", *runs)
    assert "--out" in result.output and str(runs[0]) in result.output
    assert not (runs[0] / "checkpoints" / "compare").exists()


def test_html_escapes_what_the_run_directories_say(runs: list[Path], tmp_path: Path) -> None:
    evil = tmp_path / "evil"
    shutil.copytree(runs[0], evil)
    info = json.loads((evil / "run.json").read_text())
    info["name"] = "<script>alert(1)</script>"
    (evil / "run.json").write_text(json.dumps(info))
    ok("report", runs[1], evil, "--no-plots", "--html", tmp_path / "page.html")
    page = (tmp_path / "page.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_one_run_directory_is_still_its_own_report(runs: list[Path], tmp_path: Path) -> None:
    output = report_of(tmp_path, runs[0], "--no-plots")
    assert "comparing" not in output and "spec differences" not in output
    assert output.splitlines()[0].split() == ["run", "xor"]
    # --out puts one run's report elsewhere (a run directory one may not write into)
    pytest.importorskip("matplotlib")
    ok("report", runs[0], "--out", tmp_path / "elsewhere")
    assert (tmp_path / "elsewhere" / "report.html").is_file() and (tmp_path / "elsewhere" / "losses.png").is_file()
    assert not (runs[0] / "report").exists()
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    assert "SWEEP_DIR/report" in fails(2, "report", sweep, "--out", tmp_path / "x").output


def test_without_matplotlib_the_tables_print_and_the_page_has_no_pictures(
    runs: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    output = report_of(tmp_path, *runs[:2], "--out", tmp_path / "out")
    assert "matplotlib is not installed" in output and len(table_cells(output, "fit/loss")) == 6
    assert not list((tmp_path / "out").glob("*.png"))
    assert "data:image/png" not in (tmp_path / "out" / "compare.html").read_text()


def test_no_plots_writes_nothing_even_from_inside_a_run_directory(
    runs: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(runs[0])
    before = sorted(runs[0].rglob("*"))
    output = ok("report", *runs, "--no-plots").output
    assert "wrote:" not in output and sorted(runs[0].rglob("*")) == before


def test_a_killed_run_is_compared_as_it_stands(runs: list[Path], tmp_path: Path) -> None:
    killed = tmp_path / "killed"
    shutil.copytree(runs[1], killed)
    info = json.loads((killed / "run.json").read_text())
    info.update(status="running", finished=None)
    (killed / "run.json").write_text(json.dumps(info))
    output = report_of(tmp_path, runs[0], killed, "--no-plots")
    (line,) = [ln for ln in output.splitlines() if ln.strip().startswith("killed ")]
    assert "interrupted: killed" in line
    assert f"note: killed: continue it with: onlytorch train SPEC --out {killed} --resume" in output


# ---------------------------------------------------------------- bad input: exit 2, naming it


def test_a_directory_that_is_no_run_is_named(runs: list[Path], tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = fails(2, "report", runs[0], empty, runs[1], "--out", tmp_path / "out")
    assert f"{empty} is not a run directory" in result.output
    assert not (tmp_path / "out").exists()


def test_the_same_directory_twice_is_named(runs: list[Path], tmp_path: Path) -> None:
    link = tmp_path / "link"
    link.symlink_to(runs[1])
    result = fails(2, "report", runs[0], runs[1], link, "--out", tmp_path / "out")
    assert f"{link} is given twice (as {runs[1]})" in result.output
    result = fails(2, "report", runs[0], runs[0], "--out", tmp_path / "out")
    assert f"{runs[0]} is given twice" in result.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_directory_among_runs_is_named_and_every_problem_is_said_at_once(
    runs: list[Path], tmp_path: Path
) -> None:
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    (sweep / "sweep.json").write_text("{}")
    missing = tmp_path / "missing"
    result = fails(2, "report", sweep, runs[0], missing, "--out", tmp_path / "out")
    assert f"{sweep} is a sweep directory" in result.output
    assert f"{missing} does not exist" in result.output
    assert "Traceback" not in result.output and not (tmp_path / "out").exists()


def test_storage_is_not_for_a_comparison(runs: list[Path]) -> None:
    result = fails(2, "report", *runs[:2], "--storage", "sqlite:///x.db")
    assert "--storage" in result.output


def test_labels_tell_runs_of_the_same_name_apart(tmp_path: Path) -> None:
    a = fake_run(tmp_path / "one" / "run", [{"step": 1, "kind": "train", "fit/loss": 1.0}])
    b = fake_run(tmp_path / "two" / "run", [{"step": 1, "kind": "train", "fit/loss": 1.0}])
    c = fake_run(tmp_path / "three", [{"step": 1, "kind": "train", "fit/loss": 1.0}], name="other")
    assert compare.run_labels([report.read_run(d) for d in (a, b, c)]) == ["one/run", "two/run", "other"]
    # a run named like another run's directory label: every run is labelled by its directory
    d = fake_run(tmp_path / "four", [{"step": 1, "kind": "train", "fit/loss": 1.0}], name="one/run")
    assert compare.run_labels([report.read_run(x) for x in (a, b, d)]) == ["one/run", "two/run", "four"]


# ---------------------------------------------------------------- helpers


def fake_run(path: Path, metrics: list[dict[str, Any]], name: str = "fake") -> Path:
    """A small run directory written by hand (run.json, metrics.jsonl, spec.yaml)."""
    path.mkdir(parents=True)
    info = {"name": name, "seed": 0, "status": "completed", "steps_done": metrics[-1]["step"], "directions": {}}
    (path / "run.json").write_text(json.dumps(info))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in metrics))
    (path / "spec.yaml").write_text(f"name: {name}\nseed: 0\n")
    return path
