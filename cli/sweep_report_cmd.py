"""``onlytorch report SWEEP_DIR``: what a sweep did (a directory holding sweep.json), as a
terminal summary, PNG pictures and one HTML page. ``onlytorch report`` sends sweep directories
here; a trial's own run directory is still reported as a run."""

from __future__ import annotations

from pathlib import Path

import click

from .report_page import finish_report


def report_sweep(sweep_dir: Path, html_file: Path | None, no_plots: bool, storage: str | None = None) -> None:
    """Print the sweep's summary, write the pictures into SWEEP_DIR/report/ and the HTML page
    (default SWEEP_DIR/report/report.html). ``storage``: the full URL of the study's database.
    Exit 1 when the study cannot be read."""
    from onlytorch.report import PlotsUnavailable, ReportError
    from onlytorch.sweep import report

    try:
        record = report.read_sweep(sweep_dir, storage)
    except ReportError as e:
        raise click.ClickException(str(e)) from None

    click.echo(report.summary_text(record))
    for note in record.notes:
        click.echo(f"note: {note}")

    out_dir = sweep_dir / "report"
    pictures: list[Path] = []
    absent = report.absent_reasons(record)
    if not no_plots:
        try:
            pictures, absent = report.write_plots(record, out_dir)
        except PlotsUnavailable as e:
            click.echo(f"note: {e}")
            record.notes.append(str(e))  # the page says it too
        except OSError as e:
            raise click.ClickException(f"cannot write the pictures into {out_dir}: {e}") from None
    for name in report.PICTURES:
        if name in absent and not no_plots:
            click.echo(f"note: {absent[name]}")

    finish_report(
        pictures, html_file, no_plots, out_dir, lambda path: report.write_html(record, pictures, absent, path)
    )
