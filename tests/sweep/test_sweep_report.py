"""``onlytorch report SWEEP_DIR``: the sweep's summary, its pictures (checked by the data the
figures plot), the HTML page with every trial's state and error, and a trial's run directory
still reported as a run."""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from onlytorch_cli.report_cmd import report_command

optuna = pytest.importorskip("optuna")

from onlytorch.sweep import report as sweep_report  # noqa: E402

from .engine_helpers import write_sweep  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SPACE = {
    "optimizers.d_opt.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    "train.schedule.critic.repeat": optuna.distributions.CategoricalDistribution([1, 3, 5]),
    "optimizers.d_opt.betas": optuna.distributions.CategoricalDistribution(["[0.5, 0.999]", "[0.0, 0.9]"]),
}


# ---------------------------------------------------------------- fixture sweep directories


def _open_study(sweep_dir: Path, name: str, direction: str, create: bool) -> Any:
    from optuna.storages.journal import JournalFileBackend

    storage = optuna.storages.JournalStorage(JournalFileBackend(str(sweep_dir / "study.log")))
    if create:
        return optuna.create_study(study_name=name, storage=storage, direction=direction)
    return optuna.load_study(study_name=name, storage=storage)


def make_sweep(
    root: Path,
    trials: list[dict[str, Any]],
    *,
    seeds: tuple[int, ...] = (0, 1, 2),
    direction: str = "maximize",
    name: str = "gan_ring",
    storage: str | None = None,
) -> Path:
    """A sweep directory as onlytorch sweep leaves it: a journal study whose trials carry the
    contract's user attributes, and sweep.json naming it. Each trial dict: ``state``
    (COMPLETE/PRUNED/FAIL/RUNNING), ``params`` (Optuna's stored values, over SPACE or a subset),
    ``values`` (one per seed, in seed order; a pruned trial may have fewer) and ``error``."""
    sweep_dir = root / name
    sweep_dir.mkdir(parents=True)
    study = (
        _open_study(sweep_dir, name, direction, create=True)
        if storage is None
        else optuna.create_study(study_name=name, storage=storage, direction=direction)
    )
    for number, spec in enumerate(trials):
        values = {str(s): float(v) for s, v in zip(seeds, spec.get("values", []))}
        state = getattr(optuna.trial.TrialState, spec["state"])
        attrs: dict[str, Any] = {
            "seeds": list(seeds),
            "values": values,
            "run_dirs": [f"trials/{number:04d}/seed-{s}" for s in list(seeds)[: len(values)]],
            "duration_s": 1.5 + number,
            "worker": {"host": "h", "pid": 100 + number, "started": 0.0},
        }
        if values and state == optuna.trial.TrialState.COMPLETE:
            attrs["std"] = statistics.stdev(values.values())  # as the engine records it
        if spec.get("error"):
            attrs["error"] = spec["error"]
        if spec.get("retry_of") is not None:
            attrs["retry_of"] = spec["retry_of"]
        params = spec.get("params", {})
        study.add_trial(
            optuna.trial.create_trial(
                state=state,
                value=float(np.mean(list(values.values()))) if state == optuna.trial.TrialState.COMPLETE else None,
                params=params,
                distributions={k: SPACE[k] for k in params},
                user_attrs=attrs,
                intermediate_values={100: 1.0} if state == optuna.trial.TrialState.PRUNED else None,
            )
        )
    info = {
        "name": name,
        "study_name": name,
        "storage": {"kind": "journal", "path": "study.log"} if storage is None else {"kind": "rdb", "url": storage},
        "sweep_file": f"{name}.yaml",
        "spec": "specs/gan_ring.yaml",
        "sha256": "0" * 64,
        "identity": {},
        "metric": "modes_covered",
        "split": "train",
        "mode": "max" if direction == "maximize" else "min",
        "direction": direction,
        "objective": "best",
        "trials_requested": len(trials),
        "counts": {},
        "best": None,
        "status": "completed",
        "updated": "2026-01-01T00:00:00",
    }
    (sweep_dir / "sweep.json").write_text(json.dumps(info), encoding="utf-8")
    return sweep_dir


def searched_trials(n_complete: int = 10) -> list[dict[str, Any]]:
    """``n_complete`` complete trials over the three parameters, then a pruned one, a failed one
    (an invalid trial spec), a retry of a killed worker's trial and a running one."""
    rng = np.random.default_rng(3)
    trials: list[dict[str, Any]] = []
    for i in range(n_complete):
        lr = float(10 ** rng.uniform(-4, -2))
        params = {
            "optimizers.d_opt.lr": lr,
            "train.schedule.critic.repeat": [1, 3, 5][i % 3],
            "optimizers.d_opt.betas": ["[0.5, 0.999]", "[0.0, 0.9]"][i % 2],
        }
        base = 4.0 + 4.0 * (math.log10(lr) + 4) / 2  # higher lr covers more modes here
        trials.append({"state": "COMPLETE", "params": params, "values": np.round(base + rng.normal(0, 0.7, 3), 3)})
        if i == 3:
            trials.append({"state": "PRUNED", "params": params, "values": [2.0]})
        if i == 5:
            trials.append(
                {
                    "state": "FAIL",
                    "params": params,
                    "error": "invalid trial spec: specs/gan_ring.yaml:12:3: E-TYPE <lr> must be positive",
                }
            )
        if i == 6:
            trials.append({"state": "FAIL", "params": params, "error": "worker died (pid 4242 on h)"})
            trials.append({"state": "PRUNED", "params": params, "values": [1.0], "retry_of": len(trials) - 1})
    trials.append({"state": "RUNNING", "params": trials[0]["params"], "values": []})
    return trials


def invoke(*args: Any) -> Result:
    return CliRunner().invoke(report_command, [str(a) for a in args], catch_exceptions=False)


def by_gid(ax: Any, gid: str) -> Any:
    found = [c for c in ax.collections if c.get_gid() == gid]
    assert len(found) == 1, f"{gid}: {len(found)} artists"
    return found[0]


def by_label(ax: Any, label: str) -> Any:
    found = [c for c in [*ax.collections, *ax.lines, *ax.containers] if c.get_label() == label]
    assert len(found) == 1, f"{label}: {len(found)} artists"
    return found[0]


# ---------------------------------------------------------------- reading and the pictures' data


def test_trials_are_read_with_their_states_values_and_best(tmp_path: Path) -> None:
    trials = searched_trials()
    record = sweep_report.read_sweep(make_sweep(tmp_path, trials))
    assert [t.state for t in record.trials] == [
        {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}[t["state"]] for t in trials
    ]
    assert record.counts() == {"complete": 10, "pruned": 2, "failed": 2, "running": 1, "waiting": 0}
    assert record.params == list(SPACE)
    # pruned and failed trials have no value, even with a per-seed value recorded
    assert all(t.value is None for t in record.trials if t.state != "complete")
    complete = [(i, t) for i, t in enumerate(trials) if t["state"] == "COMPLETE"]
    best_i, best = max(complete, key=lambda p: np.mean(p[1]["values"]))
    assert record.best is not None and record.best.number == best_i
    assert record.best.value == pytest.approx(np.mean(best["values"]))
    assert list(record.best.values.values()) == pytest.approx(list(best["values"]))
    assert list(record.best.values) == ["0", "1", "2"]
    retry = next(i for i, t in enumerate(trials) if t.get("retry_of") is not None)
    assert trials[retry - 1]["error"].startswith("worker died")
    assert record.trials[retry].retry_of == retry - 1 and record.trials[retry].state == "pruned"


def test_history_plots_the_complete_values_and_marks_pruned_and_failed(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    trials = searched_trials()
    record = sweep_report.read_sweep(make_sweep(tmp_path, trials))
    pictures = sweep_report.draw(record)
    ax = pictures.figures["history.png"].axes[0]
    points = by_label(ax, "modes_covered (mean over seeds)").get_offsets()
    complete = [(i, float(np.mean(t["values"]))) for i, t in enumerate(trials) if t["state"] == "COMPLETE"]
    np.testing.assert_array_equal(points[:, 0], [i for i, _ in complete])
    np.testing.assert_allclose(points[:, 1], [v for _, v in complete])
    best_line = by_label(ax, "Best Value")
    xs, ys = best_line.get_xdata(), best_line.get_ydata()
    for i, _ in complete:  # the best so far (maximised) at each complete trial
        assert ys[list(xs).index(i)] == pytest.approx(max(v for j, v in complete if j <= i))
    # pruned and failed trials are markers along the bottom, not values
    for state, name in (("PRUNED", "pruned"), ("FAIL", "failed")):
        numbers = [i for i, t in enumerate(trials) if t["state"] == state]
        np.testing.assert_array_equal(by_gid(ax, name).get_offsets()[:, 0], numbers)
    assert ax.get_title().startswith("gan_ring: optimisation history")


def test_seeds_picture_shows_each_seed_of_the_best_trials_with_mean_and_std(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    trials = searched_trials(n_complete=13)
    record = sweep_report.read_sweep(make_sweep(tmp_path, trials))
    ax = sweep_report.draw(record).figures["seeds.png"].axes[0]
    complete = [(i, t["values"]) for i, t in enumerate(trials) if t["state"] == "COMPLETE"]
    best10 = sorted(complete, key=lambda p: -np.mean(p[1]))[:10]
    strips = [c for c in ax.collections if str(c.get_gid()).startswith("trial-")]
    assert [c.get_gid() for c in strips] == [f"trial-{i}" for i, _ in best10]  # best first, 10 of 13
    for k, (c, (_, values)) in enumerate(zip(strips, best10)):
        offsets = c.get_offsets()
        np.testing.assert_allclose(offsets[:, 1], values)
        assert np.all(np.abs(offsets[:, 0] - k) < 0.5)  # each strip around its own position
    means = by_label(ax, "mean ± std over seeds")
    np.testing.assert_allclose(np.asarray(means.lines[0].get_ydata(), dtype=float), [np.mean(v) for _, v in best10])
    segments = means.lines[2][0].get_segments()
    np.testing.assert_allclose([s[1][1] - s[0][1] for s in segments], [2 * statistics.stdev(v) for _, v in best10])
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"trial {i}" for i, _ in best10]


def test_importances_parallel_and_slice_cover_the_parameters(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    record = sweep_report.read_sweep(make_sweep(tmp_path, searched_trials()))
    assert record.importances is not None and set(record.importances) == set(SPACE)
    assert sum(record.importances.values()) == pytest.approx(1.0)
    pictures = sweep_report.draw(record)
    assert set(pictures.figures) == set(sweep_report.PICTURES) and not pictures.absent
    bars = pictures.figures["importances.png"].axes[0].patches
    assert sorted(round(b.get_width(), 2) for b in bars) == sorted(round(v, 2) for v in record.importances.values())
    slice_axes = [a for a in pictures.figures["slice.png"].axes if a.collections and a.get_xlabel()]
    assert sorted(a.get_xlabel() for a in slice_axes) == sorted(SPACE)
    for a in slice_axes:  # one point per complete trial in each panel
        assert len(a.collections[0].get_offsets()) == 10
    labels = [t.get_text() for t in pictures.figures["parallel.png"].axes[0].get_xticklabels()]
    assert labels == ["modes_covered", *sorted(SPACE)]  # the full paths, not Optuna's shortened ones


def test_a_seed_study_draws_the_spread_and_no_importances(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    values = [480.0, 500.0, 455.5, 500.0, 312.0, 498.0, 500.0, 421.0, 500.0, 377.25]
    sweep_dir = make_sweep(
        tmp_path, [{"state": "COMPLETE", "values": values}], seeds=tuple(range(10)), name="ppo_cartpole_seeds"
    )
    record = sweep_report.read_sweep(sweep_dir)
    assert record.params == [] and record.importances is None
    pictures = sweep_report.draw(record)
    assert set(pictures.figures) == {"history.png", "seeds.png"}
    assert "a seed study" in pictures.absent["importances.png"]
    assert "no parameters" in pictures.absent["parallel.png"] and "no parameters" in pictures.absent["slice.png"]
    ax = pictures.figures["seeds.png"].axes[0]
    np.testing.assert_allclose(by_gid(ax, "trial-0").get_offsets(), np.c_[np.arange(10), values])
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"seed {s}" for s in range(10)]
    sd = statistics.stdev(values)
    (mean,) = [line for line in ax.lines if line.get_gid() == "mean"]
    assert list(mean.get_ydata()) == pytest.approx([np.mean(values)] * 2)
    (band,) = [p for p in ax.patches if p.get_gid() == "std"]
    low, high = band.get_y(), band.get_y() + band.get_height()  # a Rectangle, its y in data units
    assert (low, high) == pytest.approx((np.mean(values) - sd, np.mean(values) + sd))
    result = invoke(sweep_dir)
    assert result.exit_code == 0, result.output
    out = sweep_dir / "report"
    assert (out / "seeds.png").read_bytes().startswith(PNG_MAGIC) and (out / "history.png").is_file()
    assert not (out / "importances.png").exists() and not (out / "slice.png").exists()
    assert f"{np.mean(values):.5g} ± {sd:.3g}" in result.output
    assert "a seed study" in (out / "report.html").read_text()


def test_importances_need_two_parameters_and_enough_complete_trials(tmp_path: Path) -> None:
    one_param = [
        {"state": "COMPLETE", "params": {"optimizers.d_opt.lr": 1e-3 * (i + 1)}, "values": [i, i + 1, i]}
        for i in range(6)
    ]
    record = sweep_report.read_sweep(make_sweep(tmp_path / "a", one_param))
    reason = sweep_report.importance_reason(record)
    assert record.importances is None and reason is not None and "a single parameter" in reason
    assert set(sweep_report.absent_reasons(record)) == {"importances.png"}
    few = searched_trials(n_complete=3)
    record = sweep_report.read_sweep(make_sweep(tmp_path / "b", few))
    reason = sweep_report.importance_reason(record)
    assert record.importances is None and reason is not None and "3 complete trial(s)" in reason


# ---------------------------------------------------------------- the command and the HTML page


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []
        self.rows: list[list[str]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))
        if tag == "tr":
            self.rows.append([])
        if tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.rows[-1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def test_report_command_prints_the_summary_and_writes_the_pictures_and_page(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    trials = searched_trials()
    evil = "<script>alert(1)</script>"
    trials[4]["error"] = f"diverged at node {evil} step 30"  # the pruned trial's message, escaped
    sweep_dir = make_sweep(tmp_path, trials)
    result = invoke(sweep_dir)
    assert result.exit_code == 0, result.output
    record = sweep_report.read_sweep(sweep_dir)
    assert record.best is not None
    assert f"best        trial {record.best.number}: modes_covered = {record.best.value:.5g} ± " in result.output
    assert "15 trial(s) of 15 requested: 10 complete, 2 pruned, 2 failed, 1 running" in result.output
    assert "worker died (pid 4242 on h)" in result.output
    out = sweep_dir / "report"
    for name in sweep_report.PICTURES:
        assert (out / name).read_bytes().startswith(PNG_MAGIC), name
        assert str(out / name) in result.output
    assert result.output.rstrip().endswith(str(out / "report.html"))

    page = (out / "report.html").read_text()
    assert "<script" not in page.lower() and "&lt;script&gt;" in page
    tags = Tags()
    tags.feed(page)
    assert [t for t, _ in tags.seen if t == "img"] == ["img"] * 5
    links = [v for _, attrs in tags.seen for k, v in attrs if k in ("src", "href")]
    assert all(v is not None and v.startswith("data:image/png;base64,") for v in links)
    assert not re.search(r"https?://", page)
    table = next(i for i, r in enumerate(tags.rows) if r[:4] == ["trial", "state", "value", "std"])
    header, body = tags.rows[table], tags.rows[table + 1 : table + 1 + len(trials)]
    assert [r[0] for r in body] == [str(i) for i in range(len(trials))]
    for row, t in zip(body, trials):
        cell = dict(zip(header, row))
        assert (
            cell["state"]
            == {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running"}[t["state"]]
        )
        if t["state"] == "COMPLETE":
            assert float(cell["value"]) == pytest.approx(np.mean(t["values"]), rel=1e-4)
        else:
            assert cell["value"] == "-"  # shown as its state, not as a value
        assert cell["error"] == t.get("error", "")
    retry = next(i for i, t in enumerate(trials) if t.get("retry_of") is not None)
    assert [dict(zip(header, r))["retry of"] for r in body].count("-") == len(trials) - 1
    assert dict(zip(header, body[retry]))["retry of"] == str(retry - 1)
    # the best trial's per-seed values and its parameters
    per_seed = next(i for i, r in enumerate(tags.rows) if r == ["seed", "value", "run dir"])
    got = [(r[0], float(r[1]), r[2]) for r in tags.rows[per_seed + 1 : per_seed + 4]]
    assert got == [
        (s, pytest.approx(v, rel=1e-4), d) for (s, v), d in zip(record.best.values.items(), record.best.run_dirs)
    ]
    assert "Parameter importances (PED-ANOVA)" in page


def test_html_elsewhere_and_no_plots(tmp_path: Path) -> None:
    sweep_dir = make_sweep(tmp_path, searched_trials(n_complete=7))
    target = tmp_path / "page.html"
    result = invoke(sweep_dir, "--no-plots", "--html", target)
    assert result.exit_code == 0, result.output
    assert not (sweep_dir / "report").exists()
    page = target.read_text()
    assert "data:image/png" not in page and "invalid trial spec" in page
    assert str(target) in result.output


def test_no_complete_trial_yet(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    sweep_dir = make_sweep(tmp_path, [{"state": "FAIL", "params": {}, "error": "boom"}, {"state": "RUNNING"}])
    result = invoke(sweep_dir)
    assert result.exit_code == 0, result.output
    assert "none yet: no complete trial" in result.output and "boom" in result.output
    assert not list((sweep_dir / "report").glob("*.png"))
    assert "no history picture: no complete trial yet" in (sweep_dir / "report" / "report.html").read_text()


def test_missing_matplotlib_is_a_note_and_the_summary_still_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sweep_dir = make_sweep(tmp_path, searched_trials())
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    result = invoke(sweep_dir)
    assert result.exit_code == 0, result.output
    assert "matplotlib is not installed" in result.output and "pip install 'onlytorch[plot]'" in result.output
    assert "10 complete, 2 pruned, 2 failed, 1 running" in result.output
    assert not list((sweep_dir / "report").glob("*.png"))
    page = (sweep_dir / "report" / "report.html").read_text()
    assert "data:image/png" not in page and "matplotlib is not installed" in page


def test_a_broken_sweep_json_is_an_error(tmp_path: Path) -> None:
    sweep_dir = make_sweep(tmp_path, searched_trials(n_complete=2))
    (sweep_dir / "sweep.json").write_text("{ not json")
    result = invoke(sweep_dir)
    assert result.exit_code == 1 and "sweep.json is not valid JSON" in result.output
    with pytest.raises(sweep_report.NotASweepDir):
        sweep_report.read_sweep(tmp_path)


def test_a_trials_run_directory_is_still_reported_as_a_run(tmp_path: Path) -> None:
    import onlytorch

    spec = Path(__file__).resolve().parents[2] / "specs" / "xor.yaml"
    sweep_dir = make_sweep(tmp_path, [{"state": "COMPLETE", "values": [1.0, 1.0, 1.0]}])
    run_dir = sweep_dir / "trials" / "0000" / "seed-0"
    onlytorch.fit(spec, run_dir, seed=0, overrides=["train.steps=40"], threads=1)
    result = invoke(run_dir, "--no-plots")
    assert result.exit_code == 0, result.output
    assert re.search(r"^run\s+xor", result.output, re.M) and "fit/loss" in result.output
    assert "optimisation" not in result.output and "trial(s)" not in result.output
    result = invoke(run_dir, "--no-plots", "--storage", "sqlite:///x.db")
    assert result.exit_code == 2 and "--storage is for a sweep directory" in result.output
    result = invoke(sweep_dir, "--no-plots")
    assert result.exit_code == 0 and "1 trial(s) of 1 requested: 1 complete" in result.output


def test_the_module_imports_neither_matplotlib_nor_optuna_at_import_time() -> None:
    source = Path(sweep_report.__file__).read_text()
    top_level = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert not [ln for ln in top_level if re.match(r"(from|import) (matplotlib|optuna)\b", ln)]
    assert any("require_matplotlib" in ln for ln in top_level)  # the check is imported, not the package


def test_a_study_in_a_database_and_a_url_recorded_without_its_password(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep_dir = make_sweep(tmp_path, searched_trials(n_complete=3), storage=url)
    result = invoke(sweep_dir, "--no-plots")
    assert result.exit_code == 0 and "3 complete" in result.output
    info = json.loads((sweep_dir / "sweep.json").read_text())
    info["storage"]["url"] = "postgresql://me:***@db.example/sweeps"
    (sweep_dir / "sweep.json").write_text(json.dumps(info))
    result = invoke(sweep_dir, "--no-plots")
    assert result.exit_code == 1 and "without its password" in result.output and "--storage URL" in result.output
    result = invoke(sweep_dir, "--no-plots", "--storage", url)
    assert result.exit_code == 0 and "3 complete" in result.output
    # a missing journal is said, and not created by the report
    other = make_sweep(tmp_path / "j", searched_trials(n_complete=2))
    (other / "study.log").unlink()
    result = invoke(other, "--no-plots")
    assert result.exit_code == 1 and "no study journal study.log" in result.output
    assert not (other / "study.log").exists()


def test_the_report_of_a_real_sweep(tmp_path: Path) -> None:
    """A sweep run by the engine (2 parameters, 2 seeds, 4 xor trials): the report reads what
    the workers recorded, its best trial is sweep.json's, and its run directories exist."""
    pytest.importorskip("matplotlib")
    from onlytorch.sweep import runner as sweeping

    body = """\
    trials: 4
    seeds: [0, 1]
    sampler: {type: random, seed: 0}
    space:
      optimizers.opt.lr: {loguniform: [0.001, 0.1]}
      modules.net.0.linear: {choice: [4, 8]}
    """
    file = write_sweep(tmp_path, body)
    sweeping.run(file, tmp_path / "sw")
    result = invoke(tmp_path / "sw")
    assert result.exit_code == 0, result.output
    record = sweep_report.read_sweep(tmp_path / "sw")
    best = json.loads((tmp_path / "sw" / "sweep.json").read_text())["best"]
    assert record.best is not None and record.best.number == best["number"]
    assert record.best.value == pytest.approx(best["value"]) and record.best.std == pytest.approx(best["std"])
    assert record.counts()["complete"] == 4 and record.params == sorted(record.params, key=record.params.index)
    assert set(record.params) == {"optimizers.opt.lr", "modules.net.0.linear"}
    for d in record.best.run_dirs:
        assert (tmp_path / "sw" / d / "run.json").is_file()
    ax = sweep_report.draw(record).figures["seeds.png"].axes[0]
    np.testing.assert_allclose(
        by_gid(ax, f"trial-{record.best.number}").get_offsets()[:, 1], list(best["values"].values())
    )
    for name in sweep_report.PICTURES:
        assert (tmp_path / "sw" / "report" / name).read_bytes().startswith(PNG_MAGIC), name


def test_drawing_leaves_pyplot_as_it_was_and_a_failing_plot_is_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("matplotlib")
    import matplotlib
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as ovm

    record = sweep_report.read_sweep(make_sweep(tmp_path, searched_trials()))
    style = dict(matplotlib.rcParams)
    open_before = plt.get_fignums()
    with NoWarnings():
        pictures = sweep_report.draw(record)
    assert set(pictures.figures) == set(sweep_report.PICTURES)
    assert plt.get_fignums() == open_before  # every figure released from pyplot
    assert dict(matplotlib.rcParams) == style  # Optuna's plt.style.use("ggplot") undone

    def broken(*args: Any, **kwargs: Any) -> Any:
        plt.subplots()  # a figure half drawn before the failure
        raise ValueError("cannot slice this")

    monkeypatch.setattr(ovm, "plot_slice", broken)
    pictures = sweep_report.draw(record)
    assert "slice.png" not in pictures.figures and "history.png" in pictures.figures
    assert pictures.absent["slice.png"] == "no slice.png: it could not be drawn (ValueError: cannot slice this)"
    assert plt.get_fignums() == open_before


class NoWarnings:
    """Fails the block if it emits any warning (Optuna's ExperimentalWarning is silenced)."""

    def __enter__(self) -> None:
        import warnings

        self._catch = warnings.catch_warnings(record=True)
        self._seen = self._catch.__enter__()
        warnings.simplefilter("always")

    def __exit__(self, *exc: Any) -> None:
        self._catch.__exit__(*exc)
        assert not [str(w.message) for w in self._seen]
