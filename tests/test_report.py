"""``onlytorch report``: reading run directories (also running, crashed and broken ones), the
terminal summary's numbers, the pictures, the self-contained HTML page and the CLI's exit codes."""

from __future__ import annotations

import json
import math
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner, Result
from onlytorch_cli.report_cmd import report_command

from onlytorch import report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- fixture run directories


def _info(**overrides: Any) -> dict[str, Any]:
    info = {
        "name": "gan-ring",
        "spec_file": "specs/gan_ring.yaml",
        "spec_hash": "0123456789abcdef",
        "seed": 0,
        "status": "completed",
        "message": None,
        "steps_done": 200,
        "total_steps": 200,
        "started": "2025-01-01T10:00:00",
        "finished": "2025-01-01T10:00:12",
        "wall_time": 12.5,
        "versions": {"python": "3.11", "numpy": "2.0", "onlytorch": "0.1.0"},
        "overrides": ["train.steps=200"],
        "final": {"eval/modes_covered": 7.0},
        "best": {
            "checkpoint": "checkpoints/best.npz",
            "step": 150,
            "metric": "modes_covered",
            "split": "samples",
            "mode": "max",
            "value": 8.0,
        },
        "eval_split": "val",
        "monitor": {"metric": "modes_covered", "split": "samples", "mode": "max"},
        "directions": {"d_loss": "min", "g_loss": "min", "modes_covered": "max", "high_quality": "max"},
    }
    info.update(overrides)
    return info


def gan_rows(steps: int = 200) -> list[dict[str, Any]]:
    rng = np.random.default_rng(1)
    rows: list[dict[str, Any]] = []
    for s in range(0, steps + 1, 10):
        rows.append(
            {
                "step": s,
                "kind": "train",
                "discriminator/d_loss": float(1.4 * math.exp(-s / 80) + 0.5 + 0.05 * rng.normal()),
                "generator/g_loss": float(0.9 + 0.2 * rng.normal()),
                "train/d_real_mean": float(0.5 + 0.001 * s + 0.01 * rng.normal()),
                "lr/d_opt": 2e-4 * 0.5 ** (s // 100),
                "lr/g_opt": 2e-4,
                "grad_norm/d_opt": 1.0,
                "time": s * 0.05,
            }
        )
        if s % 50 == 0:
            rows.append(
                {
                    "step": s,
                    "kind": "eval",
                    "eval/modes_covered": [2, 5, 6, 8, 7][s // 50],
                    "eval/high_quality": s / 250,
                }
            )
    return rows


def make_run(
    root: Path,
    name: str = "run",
    *,
    info: dict[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
    metrics_text: str | None = None,
    samples: bool = False,
    spec: str = "name: gan-ring\nseed: 0\n",
) -> Path:
    run = root / name
    (run / "checkpoints").mkdir(parents=True)
    (run / "run.json").write_text(json.dumps(info if info is not None else _info()))
    if metrics_text is None:
        metrics_text = "".join(json.dumps(r) + "\n" for r in (rows if rows is not None else gan_rows()))
    (run / "metrics.jsonl").write_text(metrics_text)
    (run / "spec.yaml").write_text(spec)
    (run / "checkpoints" / "last.npz").write_bytes(b"\0" * 2048)
    (run / "checkpoints" / "best.npz").write_bytes(b"\0" * 2048)
    if samples:
        rng = np.random.default_rng(0)
        angles = np.arange(8) * 2 * np.pi / 8
        centres = np.stack([2 * np.cos(angles), 2 * np.sin(angles)], axis=1)
        real = centres[rng.integers(0, 8, 400)] + 0.05 * rng.normal(size=(400, 2))
        fake = centres[rng.integers(0, 6, 200)] + 0.1 * rng.normal(size=(200, 2))
        np.savez(run / "samples.npz", fake=fake, real=real, centres=centres)
    return run


def invoke(*args: str | Path) -> Result:
    result = CliRunner().invoke(report_command, [str(a) for a in args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def table_line(output: str, name: str) -> list[str]:
    """The cells of the summary table's line for one quantity."""
    (line,) = [ln for ln in output.splitlines() if ln.strip().startswith(name + " ")]
    return line.split()


def fmt(x: float) -> str:
    return f"{x:.5g}"


# ---------------------------------------------------------------- summary numbers


def test_summary_final_and_best_values_are_computed_per_quantity(tmp_path: Path) -> None:
    rows = gan_rows()
    run_dir = make_run(tmp_path, rows=rows)
    result = invoke(run_dir, "--no-plots")
    assert result.exit_code == 0
    out = result.output

    for name in ("discriminator/d_loss", "generator/g_loss"):
        pairs = [(r["step"], r[name]) for r in rows if name in r]
        final_step, final = pairs[-1]
        best_step, best = min(pairs, key=lambda p: p[1])  # a loss: always minimised
        assert table_line(out, name) == [name, fmt(final), str(final_step), fmt(best), str(best_step)]
    # a metric of the spec with no declared direction: final only, no "best" is claimed
    final_step, final = [(r["step"], r["train/d_real_mean"]) for r in rows if "train/d_real_mean" in r][-1]
    assert table_line(out, "train/d_real_mean") == ["train/d_real_mean", fmt(final), str(final_step), "-", "-"]
    # eval metrics: maximised; modes_covered peaks (8) at step 150, then drops to 7
    assert table_line(out, "eval/modes_covered") == ["eval/modes_covered", "7", "200", "8", "150"]
    assert table_line(out, "eval/high_quality") == ["eval/high_quality", "0.8", "200", "0.8", "200"]
    # learning rates, gradient norms and time are not in the quantity table
    assert "lr/d_opt" not in out and "grad_norm/" not in out
    assert not [ln for ln in out.splitlines() if ln.strip().startswith("time ")]

    for text in (
        "gan-ring",
        "completed",
        "200 / 200 (100%)",
        "12.5 s",
        "checkpoints/best.npz (step 150, highest modes_covered on samples = 8)",
    ):
        assert text in out
    assert "checkpoints/last.npz (2.0 kB)" in out
    assert out.index("losses") < out.index("train metrics") < out.index("eval metrics")


def test_quantities_api_and_grouping(tmp_path: Path) -> None:
    run = report.read_run(make_run(tmp_path))
    qs = {q.name: q for q in report.quantities(run)}
    assert [q.group for q in report.quantities(run)] == ["loss", "loss", "train", "eval", "eval"]
    assert qs["eval/modes_covered"].best == 8 and qs["eval/modes_covered"].best_step == 150
    assert report.group_of("lr/d_opt") == "lr" and report.group_of("discriminator/d_loss") == "loss"
    assert report.group_of("time") is None
    assert report.direction_of(run, "discriminator/d_loss") == "min"  # a phase's loss
    assert report.direction_of(run, "eval/modes_covered") == "max"
    assert report.direction_of(run, "eval/accuracy") is None  # never guessed from the name
    assert report.direction_of(run, "eval/d_loss") == "min"  # a loss of the spec, evaluated
    assert qs["train/d_real_mean"].best is None and qs["train/d_real_mean"].mode is None


def test_table_is_aligned(tmp_path: Path) -> None:
    text = report.summary_table(report.read_run(make_run(tmp_path)))
    table = text[text.index("quantity") :].splitlines()
    value_lines = [ln for ln in table if ln.startswith("  ") or ln.startswith("quantity")]
    ends = {len(ln) for ln in value_lines}
    assert len(ends) == 1  # right-aligned numbers: every row ends in the same column


def test_diverged_run_shows_the_message_and_ignores_nan_for_best(tmp_path: Path) -> None:
    rows = [
        {"step": s, "kind": "train", "phase/loss": v} for s, v in [(0, 2.0), (1, 0.5), (2, 40.0), (3, float("nan"))]
    ]
    message = "loss went NaN at step 3 in phase 'phase' (first bad node: logits)"
    info = _info(status="diverged", message=message, steps_done=3, finished="2025-01-01T10:00:01", final={}, best=None)
    result = invoke(make_run(tmp_path, info=info, rows=rows), "--no-plots")
    assert result.exit_code == 0
    assert f"diverged: {message}" in result.output
    assert table_line(result.output, "phase/loss") == ["phase/loss", "nan", "3", "0.5", "1"]
    assert "best checkpoint  none" in result.output


def test_running_run_skips_a_truncated_last_line(tmp_path: Path) -> None:
    rows = gan_rows(100)
    text = "".join(json.dumps(r) + "\n" for r in rows) + '{"step": 110, "kind": "train", "discrim'
    info = _info(status="running", steps_done=100, finished=None, final={}, best=None)
    run_dir = make_run(tmp_path, info=info, metrics_text=text)
    run = report.read_run(run_dir)
    assert len(run.rows) == len(rows)
    assert any("incomplete last line" in n for n in run.notes)
    from onlytorch.rundir import RunLock

    lock = RunLock(run_dir).acquire()  # "running" is believed only while a process holds the run's lock
    try:
        result = invoke(run_dir, "--no-plots")
    finally:
        lock.release()
    assert result.exit_code == 0
    assert "running (still going" in result.output and "finished         not yet" in result.output
    assert f"incomplete last line {len(rows) + 1} of metrics.jsonl" in result.output


def test_crashed_run_without_finished_final_or_best(tmp_path: Path) -> None:
    info = {
        "name": "crashed",
        "status": "failed",
        "message": "out of memory",
        "steps_done": 40,
        "started": "2025-01-01",
    }
    result = invoke(make_run(tmp_path, info=info, rows=gan_rows(50)), "--no-plots")
    assert result.exit_code == 0
    assert "failed: out of memory" in result.output
    assert "40 / ?" in result.output and "last logged step 50" in result.output


def test_rows_logged_again_after_a_resume_use_the_later_values(tmp_path: Path) -> None:
    rows = [{"step": s, "kind": "train", "p/loss": 1.0} for s in range(4)]
    rows += [{"step": s, "kind": "train", "p/loss": 0.5} for s in range(2, 6)]
    run = report.read_run(make_run(tmp_path, rows=rows))
    steps, values = report.series(run, "p/loss")
    assert steps.tolist() == [0, 1, 2, 3, 4, 5] and values.tolist() == [1, 1, 0.5, 0.5, 0.5, 0.5]
    assert any("logged twice" in n for n in run.notes)


def test_empty_metrics_file(tmp_path: Path) -> None:
    info = _info(status="running", steps_done=0, finished=None, final={}, best=None)
    result = invoke(make_run(tmp_path, info=info, metrics_text=""), "--no-plots")
    assert result.exit_code == 0
    assert "no quantities logged yet" in result.output and "metrics.jsonl is empty" in result.output


# ---------------------------------------------------------------- user errors and exit codes


def test_a_broken_middle_line_is_an_error_naming_the_line(tmp_path: Path) -> None:
    lines = [json.dumps(r) for r in gan_rows(30)]
    lines[2] = lines[2][:20]
    run_dir = make_run(tmp_path, metrics_text="\n".join(lines) + "\n")
    result = invoke(run_dir)
    assert result.exit_code == 1
    assert "line 3 is not valid JSON" in result.output
    with pytest.raises(report.ReportError, match="line 3"):
        report.read_run(run_dir)


def test_a_row_without_a_step_is_an_error(tmp_path: Path) -> None:
    result = invoke(make_run(tmp_path, metrics_text='{"kind": "train"}\n{"step": 1}\n'))
    assert result.exit_code == 1 and "line 1 has no integer 'step'" in result.output


def test_a_broken_run_json_is_an_error(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    (run_dir / "run.json").write_text('{"name": ')
    result = invoke(run_dir)
    assert result.exit_code == 1 and "run.json is not valid JSON" in result.output


def test_not_a_run_directory_is_bad_usage(tmp_path: Path) -> None:
    make_run(tmp_path / "runs", "gan")
    result = invoke(tmp_path / "runs")
    assert result.exit_code == 2
    assert "not a run directory" in result.output and "it holds run directories: gan" in result.output
    assert invoke(tmp_path / "missing").exit_code == 2
    (tmp_path / "file.txt").write_text("x")
    result = invoke(tmp_path / "file.txt")
    assert result.exit_code == 2 and "is not a directory" in result.output
    with pytest.raises(report.NotARunDir):
        report.read_run(tmp_path)


def test_unwritable_html_target_is_an_error(tmp_path: Path) -> None:
    result = invoke(make_run(tmp_path), "--no-plots", "--html", tmp_path / "no" / "such" / "dir" / "r.html")
    assert result.exit_code == 1 and "cannot write" in result.output


# ---------------------------------------------------------------- pictures and HTML


class Tags(HTMLParser):
    """Collects the tags of a page with their attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))


def test_pictures_are_valid_pngs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    run_dir = make_run(tmp_path, samples=True)
    result = invoke(run_dir)
    assert result.exit_code == 0
    out_dir = run_dir / "report"
    for name in ("losses.png", "metrics.png", "lr.png", "samples.png"):
        data = (out_dir / name).read_bytes()
        assert data.startswith(PNG_MAGIC), name
        assert str(out_dir / name) in result.output
    assert str(out_dir / "report.html") in result.output
    assert result.output.rstrip().endswith(str(out_dir / "report.html"))  # the paths come last


def test_only_what_was_logged_is_drawn(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    rows = [{"step": s, "kind": "train", "p/loss": 10.0**-s} for s in range(5)]
    run = report.read_run(make_run(tmp_path, rows=rows))
    written = report.write_plots(run, tmp_path / "out")
    assert [p.name for p in written] == ["losses.png"]


def test_log_scale_rule() -> None:
    assert report.use_log_scale(np.array([1.0, 0.5, 0.001]))
    assert not report.use_log_scale(np.array([1.0, 0.5, 0.02]))  # less than 2 decades
    assert not report.use_log_scale(np.array([1.0, -0.5, 0.0001]))  # not all positive
    assert report.use_log_scale(np.array([1.0, np.nan, 1e-4, np.inf]))  # non-finite values ignored


def test_bad_samples_file_is_a_note_not_an_error(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    np.savez(run_dir / "samples.npz", fake=np.zeros((5, 3)))
    run = report.read_run(run_dir)
    assert run.samples is None and any("not (n, 2)" in n for n in run.notes)


def test_html_is_self_contained_and_escapes_the_run_dir_strings(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    evil = "<script>alert(1)</script>"
    run_dir = make_run(
        tmp_path,
        info=_info(name=evil, status="failed", message=f'bad "{evil}"'),
        samples=True,
        spec=f"name: '{evil}'\n# </pre><img src=http://example.com/x.png>\n",
    )
    result = invoke(run_dir)
    assert result.exit_code == 0
    page = (run_dir / "report" / "report.html").read_text()
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert page.count('<img src="data:image/png;base64,') == 4
    tags = Tags()
    tags.feed(page)
    assert [t for t, _ in tags.seen if t == "img"] == ["img"] * 4  # the escaped spec made no tag
    links = [v for _, attrs in tags.seen for k, v in attrs if k in ("src", "href")]
    assert links and all(v is not None and v.startswith("data:image/png;base64,") for v in links)
    assert not {"script", "link", "iframe", "object"} & {t for t, _ in tags.seen}
    assert not re.search(r"https?://", page.replace("http://example.com", ""))  # no URL but the escaped one
    assert "&lt;/pre&gt;&lt;img src=http://example.com/x.png&gt;" in page  # the spec, escaped, in a <pre>
    assert "0123456789abcdef" in page and "train.steps=200" in page  # run.json facts


def test_html_without_plots_when_asked_for(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    target = tmp_path / "page.html"
    result = invoke(run_dir, "--no-plots", "--html", target)
    assert result.exit_code == 0
    assert not (run_dir / "report").exists()
    page = target.read_text()
    assert "data:image/png" not in page and "discriminator/d_loss" in page
    assert str(target) in result.output


def test_no_plots_writes_nothing(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path)
    result = invoke(run_dir, "--no-plots")
    assert result.exit_code == 0 and "wrote:" not in result.output
    assert not (run_dir / "report").exists()


def test_missing_matplotlib_is_a_note_and_the_summary_still_prints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    run_dir = make_run(tmp_path, samples=True)
    result = invoke(run_dir)
    assert result.exit_code == 0
    assert "matplotlib is not installed" in result.output and "pip install 'onlytorch[plot]'" in result.output
    assert table_line(result.output, "generator/g_loss")[0] == "generator/g_loss"
    assert not list((run_dir / "report").glob("*.png"))
    assert "data:image/png" not in (run_dir / "report" / "report.html").read_text()
    with pytest.raises(report.PlotsUnavailable):
        report.write_plots(report.read_run(run_dir), tmp_path / "out")


def test_report_module_does_not_import_matplotlib() -> None:
    source = Path(report.__file__).read_text()
    top_level = [ln for ln in source.splitlines() if ln.startswith(("import ", "from "))]
    assert not [ln for ln in top_level if "matplotlib" in ln]


def test_nothing_to_draw_yet_is_a_note_and_the_page_is_still_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    info = _info(status="running", steps_done=0, finished=None, final={}, best=None)
    run_dir = make_run(tmp_path, info=info, metrics_text="")
    result = invoke(run_dir)
    assert result.exit_code == 0
    assert "no pictures: nothing logged to draw yet" in result.output
    assert (run_dir / "report" / "report.html").is_file() and not list((run_dir / "report").glob("*.png"))
