"""Graphviz's ``dot``, which the drawing tests run on `onlytorch graph --format dot`: a missing one
fails those tests (it is installed by .ci/run), never skips them, so that a DOT Graphviz warns
about cannot pass unseen."""

from __future__ import annotations

import shutil
import subprocess

import pytest

INSTALL = (
    "Graphviz's `dot` is not installed, and the drawing tests run it: install Graphviz "
    "(`apt-get install graphviz` on Debian/Ubuntu, `brew install graphviz` on macOS) and run them again"
)


def dot_program() -> str:
    """The path of Graphviz's dot; the test fails, saying how to install it, when there is none."""
    found = shutil.which("dot")
    if found is None:
        pytest.fail(INSTALL, pytrace=False)
    return found


def render_svg(text: str) -> subprocess.CompletedProcess[str]:
    """``dot -Tsvg`` run on a DOT text: its SVG on stdout, its warnings on stderr."""
    return subprocess.run([dot_program(), "-Tsvg"], input=text, capture_output=True, text=True, timeout=60)
