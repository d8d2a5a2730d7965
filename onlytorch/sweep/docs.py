"""The sweep file's key tables in docs/sweeps.md, generated from the pydantic models of
``onlytorch.sweep.schema`` and the diagnostic codes, so that the docs cannot drift from what
``load_sweep`` accepts. ``python -m onlytorch.sweep.docs [FILE]`` rewrites the generated part of
FILE (default docs/sweeps.md); a test fails when the file is out of date."""

from __future__ import annotations

import sys

from ..spec import docs as spec_docs
from ..spec.diagnostics import CODES
from ..spec.docs import _doc, model_table
from ..spec.schema import MonitorSpec
from . import schema as S

BEGIN = "<!-- BEGIN GENERATED: python -m onlytorch.sweep.docs -->"
END = "<!-- END GENERATED -->"


def render_reference() -> str:
    out: list[str] = []
    add = out.append
    for title, model in (
        ("Top level", S.SweepSpec),
        ("`space.PATH` (a distribution)", S.DistributionSpec),
        ("`monitor`", MonitorSpec),
        ("`sampler`", S.SamplerSpec),
        ("`pruner`", S.PrunerSpec),
    ):
        add(f"### {title}\n")
        add(_doc(model) + "\n")
        add(_words(model_table(model)) + "\n")
    add("### Diagnostic codes of sweep files\n")
    add(
        "Besides these, a sweep file gets the spec language's own codes for what is not about sweeps "
        "(`E-YAML`, `E-YAML-TAG`, `E-YAML-DUP`, `E-KEY`, `E-MISSING`, `E-TYPE`; see docs/spec.md).\n"
    )
    add("| code | meaning |\n|---|---|")
    for code, text in CODES.items():
        if "-SWEEP-" in code:
            add(f"| `{code}` | {text} |")
    return "\n".join(out) + "\n"


def _words(table: str) -> str:
    """The generic type names of the spec's table generator in the words of a sweep file."""
    for generic, words in (
        (f"`{S.SamplerSpec.model_validate({})!r}`", "`{type: tpe, seed: 0}`"),
        (f"`{S.PrunerSpec.model_validate({})!r}`", "`{type: none}`"),
        ("| `int` | list of float", "| `int` | list of int"),
        ("mapping name → Any", "mapping path → value"),
        ("mapping name → distribution", "mapping path → distribution"),
    ):
        table = table.replace(generic, words)
    return table


def splice(text: str, generated: str) -> str:
    """``text`` with its generated part (between this reference's markers) replaced."""
    return spec_docs.splice(text, generated, BEGIN, END)


def main(argv: list[str]) -> int:
    """``python -m onlytorch.sweep.docs [FILE] [--stdout]``: regenerate the key tables between FILE's
    markers (default docs/sweeps.md), or print them."""
    return spec_docs.regenerate(
        argv,
        "python -m onlytorch.sweep.docs",
        "Regenerate the sweep file reference.",
        "docs/sweeps.md",
        render_reference,
        BEGIN,
        END,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
