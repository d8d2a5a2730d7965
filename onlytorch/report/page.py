"""The report as one self-contained HTML page: the facts, the quantity table and the pictures
(embedded as base64 PNG), run.json and the resolved spec; every string from the run escaped."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

from .quantities import quantities
from .reading import Run
from .summary import HEADER, facts, group_title, quantity_rows

_CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; } td, th { padding: 0.25em 0.8em; text-align: left; vertical-align: top; }
table.q td.n { text-align: right; font-variant-numeric: tabular-nums; } table.q th.n { text-align: right; }
tr.group td { font-weight: bold; background: #f3f3f3; }
th { border-bottom: 2px solid #ccc; } tr:nth-child(even) td { background: #fafafa; }
.status { padding: 0.1em 0.5em; border-radius: 4px; color: #fff; background: #777; }
.completed, .early_stopped { background: #2a7d2a; } .running { background: #2060b0; } .diverged, .failed { background: #b02020; }
.interrupted { background: #b07010; }
.notes { background: #fff8e0; border-left: 4px solid #e0b000; padding: 0.5em 1em; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; }
pre { background: #f6f6f6; padding: 1em; overflow-x: auto; font-size: 0.9em; }
"""


def escape(value: Any) -> str:
    """A value as HTML text (quotes escaped too): every string from a run, a spec or a study."""
    return html.escape(str(value), quote=True)


def write_html(run: Run, pictures: list[Path], path: str | Path) -> Path:
    """Write one self-contained HTML page (pictures embedded as base64 PNG, inline CSS, no
    external resources; every string from the run directory escaped). Returns its path."""
    name = run.info.get("name", run.path.name)
    status = str(run.info.get("status", "unknown"))
    body = [
        f'<h1>{escape(name)} <span class="status {escape(status)}">{escape(status)}</span></h1>',
        html_notes(run.notes),
        "<h2>Summary</h2>",
        html_facts(facts(run)),
        _html_quantities(run),
        html_pictures(pictures),
        "<h2>run.json</h2>",
        html_facts([(k, _json_text(v)) for k, v in run.info.items()]),
        "<h2>Resolved spec</h2>",
        f"<pre>{escape(run.spec_text)}</pre>" if run.spec_text is not None else "<p>no spec.yaml</p>",
    ]
    return write_page(path, f"onlytorch report: {name}", _CSS, body)


def write_page(path: str | Path, title: str, css: str, body: list[str]) -> Path:
    """Write one self-contained HTML page (the run's, a comparison's, a sweep's): its title
    (escaped here), inline CSS and the body's parts, one per line, empty ones left out. Returns its
    path."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(title)}</title>",
        f"<style>{css}</style></head><body>",
        *body,
        "</body></html>",
    ]
    out = Path(path)
    out.write_text("\n".join(p for p in parts if p) + "\n", encoding="utf-8")
    return out


def html_notes(notes: list[str]) -> str:
    """A page's notes (each escaped) in a highlighted box; nothing without notes."""
    if not notes:
        return ""
    return '<div class="notes"><ul>' + "".join(f"<li>{escape(n)}</li>" for n in notes) + "</ul></div>"


def html_facts(pairs: list[tuple[str, str]]) -> str:
    """A table of (label, text) pairs, a row each, both escaped."""
    rows = "".join(f"<tr><th>{escape(label)}</th><td>{escape(text)}</td></tr>" for label, text in pairs)
    return f"<table>{rows}</table>"


def _html_quantities(run: Run) -> str:
    qs = quantities(run)
    if not qs:
        return "<p>no quantities logged yet</p>"
    head = "".join(f'<th class="{"n" if i else ""}">{escape(h)}</th>' for i, h in enumerate(HEADER))
    body, group = [], None
    for q, row in zip(qs, quantity_rows(run)):
        if q.group != group:
            group = q.group
            body.append(f'<tr class="group"><td colspan="{len(HEADER)}">{escape(group_title(run, group))}</td></tr>')
        cells = "".join(f'<td class="{"n" if i else ""}">{escape(c)}</td>' for i, c in enumerate(row))
        body.append(f"<tr>{cells}</tr>")
    return f'<table class="q"><tr>{head}</tr>{"".join(body)}</table>'


def html_pictures(pictures: list[Path]) -> str:
    """The pictures embedded in an HTML page (base64 PNGs with captions), under one heading."""
    if not pictures:
        return ""
    figures = []
    for p in pictures:
        data = base64.b64encode(Path(p).read_bytes()).decode("ascii")
        figures.append(
            f'<figure><img src="data:image/png;base64,{data}" alt="{escape(p.stem)}"><figcaption>{escape(p.name)}</figcaption></figure>'
        )
    return "<h2>Pictures</h2>" + "".join(figures)


def _json_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)
