"""``onlytorch report RUN_DIR...``: what a run did, as a terminal summary, PNG curves and HTML; a
sweep directory's report; several runs compared (onlytorch/compare.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from .paths import CheckedPath
from .report_page import finish_report


@click.command("report")
@click.argument("run_dirs", metavar="RUN_DIR...", nargs=-1, required=True, type=CheckedPath(path_type=Path))
@click.option(
    "--html",
    "html_file",
    type=CheckedPath(dir_okay=False, path_type=Path),
    help="Write the self-contained HTML page here (default: RUN_DIR/report/report.html, or OUT/compare.html "
    "for a comparison; written whenever plots are on).",
)
@click.option(
    "--no-plots", is_flag=True, help="Only the terminal summary (and the HTML page if --html is given), no pictures."
)
@click.option(
    "--out",
    "out_dir",
    type=CheckedPath(file_okay=False, path_type=Path),
    help="The folder for the pictures and the page: for a comparison of runs (default: ./compare), or instead "
    "of RUN_DIR/report for one run.",
)
@click.option(
    "--storage",
    metavar="URL",
    help="For a sweep directory whose study is in a database: its full URL (sweep.json records it without the password).",
)
def report_command(
    run_dirs: tuple[Path, ...],
    html_file: Path | None,
    no_plots: bool,
    out_dir: Path | None = None,
    storage: str | None = None,
) -> None:
    """Summarise the run in RUN_DIR (a directory written by onlytorch train, also one still
    running or one that crashed): final and best value of every loss and metric, the pictures
    (losses, metrics, learning rates, generated samples) in RUN_DIR/report/, and one HTML page.
    A sweep directory (one holding sweep.json, written by onlytorch sweep) gets the sweep's
    report: the best trial, the optimisation history, parameter importances, parallel
    coordinates, slices and the per-seed spread of the best trials.

    Two or more run directories are compared: one panel per loss and metric with a curve per
    run, a table of the final and best values per run (the best run marked), and the keys of
    their resolved specs that differ (and the seeds). The pictures and compare.html go into
    --out (default: compare/ in the current directory, refused inside a run directory)."""
    if len(run_dirs) > 1:
        if storage is not None:
            raise click.BadParameter(
                "--storage is for a sweep directory (one holding sweep.json)", param_hint="--storage"
            )
        compare_runs(list(run_dirs), html_file, no_plots, out_dir)
        return
    run_dir = run_dirs[0]
    if (run_dir / "sweep.json").is_file():
        if out_dir is not None:
            raise click.BadParameter("a sweep's report goes into SWEEP_DIR/report", param_hint="--out")
        from .sweep_report_cmd import report_sweep

        report_sweep(run_dir, html_file, no_plots, storage)
        return
    if storage is not None:
        raise click.BadParameter("--storage is for a sweep directory (one holding sweep.json)", param_hint="--storage")
    report_run(run_dir, html_file, no_plots, out_dir)


def report_run(
    run_dir: Path, html_file: Path | None = None, no_plots: bool = False, out_dir: Path | None = None
) -> None:
    """``onlytorch report RUN_DIR``: the summary, the pictures in OUT_DIR (default RUN_DIR/report)
    and the HTML page. Usage errors raise click.BadParameter (exit 2), a broken run
    click.ClickException (exit 1)."""
    from onlytorch import report

    try:
        run = report.read_run(run_dir)
    except report.NotARunDir as e:
        raise click.BadParameter(str(e), param_hint="RUN_DIR") from None
    except report.ReportError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read {run_dir}: {e}") from None
    _settle_running(run)

    click.echo(report.summary_table(run))
    for note in run.notes:
        click.echo(f"note: {note}")

    folder = out_dir if out_dir is not None else run_dir / "report"
    pictures: list[Path] = []
    if not no_plots:
        pictures = _pictures(lambda: report.write_plots(run, folder), folder, "nothing logged to draw yet")

    finish_report(pictures, html_file, no_plots, folder, lambda path: report.write_html(run, pictures, path))


def _pictures(write: Callable[[], list[Path]], folder: Path, why_none: str) -> list[Path]:
    """The pictures ``write`` draws into ``folder``; a note, not an error, without matplotlib."""
    from onlytorch import report

    try:
        pictures = write()
    except report.PlotsUnavailable as e:
        click.echo(f"note: {e}")
        return []
    except OSError as e:
        raise click.ClickException(f"cannot write the pictures into {folder}: {e}") from None
    if not pictures:
        click.echo(f"note: no pictures: {why_none}")
    return pictures


def compare_runs(run_dirs: list[Path], html_file: Path | None, no_plots: bool, out_dir: Path | None) -> None:
    """``onlytorch report RUN_DIR RUN_DIR ...``: the runs, the table of final and best values,
    the spec differences, the pictures and compare.html in OUT_DIR (default ./compare)."""
    from onlytorch import compare, report

    try:
        c = compare.read_runs(run_dirs)
        # with --no-plots nothing goes into the folder (the page only to --html): no default to check
        folder = compare.output_folder(out_dir, Path.cwd()) if not no_plots else Path(compare.DEFAULT_OUT)
    except compare.CompareError as e:
        raise click.BadParameter(str(e), param_hint="RUN_DIR...") from None
    except report.ReportError as e:
        raise click.ClickException(str(e)) from None
    except OSError as e:
        raise click.ClickException(f"cannot read the runs: {e}") from None
    for run, label in zip(c.runs, c.labels):
        known = len(run.notes)
        _settle_running(run)
        c.notes += [f"{label}: {note}" for note in run.notes[known:]]

    click.echo(f"comparing {len(c.runs)} runs\n{compare.runs_text(c)}\n")
    click.echo(compare.table_text(c))
    click.echo("\nspec differences (resolved spec.yaml; seed from run.json)")
    click.echo(compare.differences_text(compare.spec_differences(c)))
    for note in c.notes:
        click.echo(f"note: {note}")

    pictures: list[Path] = []
    if not no_plots:
        pictures = _pictures(
            lambda: compare.write_plots(c, folder), folder, "no quantity was logged at two steps or more"
        )
    finish_report(
        pictures, html_file, no_plots, folder, lambda path: compare.write_html(c, pictures, path), compare.HTML_NAME
    )


def _settle_running(run: Any) -> None:
    """A run.json that says ``running`` is believed only while a process holds the run's lock;
    otherwise its process ended without recording its end, and the report says it was killed.
    (The report only reads: the next ``train --resume`` records it in run.json.)"""
    import json

    from onlytorch import rundir

    if run.info.get("status") != "running":
        return
    pid = rundir.holder(run.path)
    if pid is not None:
        run.notes.append(f"the run is in progress (pid {pid}): the numbers are a snapshot")
        return
    try:  # it may have ended between the two reads: believe its final word
        again = json.loads((run.path / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        again = run.info
    if isinstance(again, dict) and again.get("status") != "running":
        run.info.update(again)
        return
    run.info["status"] = "interrupted"
    run.info["message"] = rundir.killed_message(run.info, rundir.left_pid(run.path))
    run.notes.append(f"continue it with: onlytorch train SPEC --out {run.path} --resume")
