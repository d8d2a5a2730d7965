"""The end of a report command, shared by a run's, a sweep's and a comparison's report: the HTML
page and the list of the files written."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click


def finish_report(
    pictures: list[Path],
    html_file: Path | None,
    no_plots: bool,
    out_dir: Path,
    write_html: Callable[[Path], Path],
    html_name: str = "report.html",
) -> None:
    """The HTML page of a run's, a sweep's or a comparison's report (``write_html(path)``) at
    ``html_file``, by default OUT_DIR/HTML_NAME whenever plots are on, then the list of the files
    written."""
    written = list(pictures)
    default_html = html_file is None and not no_plots
    if default_html:
        html_file = out_dir / html_name
    if html_file is not None:
        try:
            if default_html:
                html_file.parent.mkdir(parents=True, exist_ok=True)
            written.append(write_html(html_file))
        except OSError as e:
            raise click.ClickException(f"cannot write {html_file}: {e}") from None

    if written:
        click.echo("\nwrote:")
        for path in written:
            click.echo(f"  {path}")
