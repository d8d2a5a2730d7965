"""``onlytorch report RUN_DIR``: what a run did, as a terminal summary, PNG curves and HTML."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .paths import CheckedPath
from .report_page import finish_report


@click.command("report")
@click.argument("run_dir", type=CheckedPath(path_type=Path))
@click.option(
    "--html",
    "html_file",
    type=CheckedPath(dir_okay=False, path_type=Path),
    help="Write the self-contained HTML page here (default: RUN_DIR/report/report.html, written whenever plots are on).",
)
@click.option(
    "--no-plots", is_flag=True, help="Only the terminal summary (and the HTML page if --html is given), no pictures."
)
@click.option(
    "--storage",
    metavar="URL",
    help="For a sweep directory whose study is in a database: its full URL (sweep.json records it without the password).",
)
def report_command(run_dir: Path, html_file: Path | None, no_plots: bool, storage: str | None = None) -> None:
    """Summarise the run in RUN_DIR (a directory written by onlytorch train, also one still
    running or one that crashed): final and best value of every loss and metric, the pictures
    (losses, metrics, learning rates, generated samples) in RUN_DIR/report/, and one HTML page.
    A sweep directory (one holding sweep.json, written by onlytorch sweep) gets the sweep's
    report: the best trial, the optimisation history, parameter importances, parallel
    coordinates, slices and the per-seed spread of the best trials."""
    if (run_dir / "sweep.json").is_file():
        from .sweep_report_cmd import report_sweep

        report_sweep(run_dir, html_file, no_plots, storage)
        return
    if storage is not None:
        raise click.BadParameter("--storage is for a sweep directory (one holding sweep.json)", param_hint="--storage")
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

    pictures: list[Path] = []
    if not no_plots:
        try:
            pictures = report.write_plots(run, run_dir / "report")
        except report.PlotsUnavailable as e:
            click.echo(f"note: {e}")
        except OSError as e:
            raise click.ClickException(f"cannot write the pictures into {run_dir / 'report'}: {e}") from None
        else:
            if not pictures:
                click.echo("note: no pictures: nothing logged to draw yet")

    finish_report(
        pictures, html_file, no_plots, run_dir / "report", lambda path: report.write_html(run, pictures, path)
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
