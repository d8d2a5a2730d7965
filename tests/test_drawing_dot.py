"""The DOT drawing of every example spec, rendered by the real Graphviz: no warning (colours it
knows, attributes it accepts), and the highlighted nodes (losses, nodes a phase detaches) carry
their colour in the SVG. Graphviz missing fails these tests with how to install it."""

from __future__ import annotations

import pathlib
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from example_init import example_in_place, example_overrides
from graphviz_dot import INSTALL, dot_program, render_svg
from onlytorch_cli.main import cli

from onlytorch.compile import compile_file
from onlytorch.compiler import drawing

SPECS = pathlib.Path(__file__).resolve().parents[1] / "specs"
EXAMPLES = sorted(SPECS.glob("*.yaml"))
SVG = "{http://www.w3.org/2000/svg}"


def dot_of(path: pathlib.Path) -> str:
    spec, flags = example_in_place(path)  # distill_digits: beside a teacher's run
    result = CliRunner().invoke(cli, ["graph", "--format", "dot", str(spec), *flags])
    assert result.exit_code == 0, result.output
    return result.stdout


def expected_colours(path: pathlib.Path) -> dict[str, str]:
    """The DOT id of each highlighted node -> the colour it must be drawn in."""
    compiled, report = compile_file(path, overrides=example_overrides(path))
    assert compiled is not None, report
    out = {}
    for name, (kind, label) in drawing.build(compiled).nodes.items():
        if "detached in" in label:
            out[drawing._id(name)] = drawing.DETACHED_COLOUR
        elif kind == "loss":
            out[drawing._id(name)] = drawing.LOSS_COLOUR
    return out


def stroke_colours(svg: str) -> dict[str, set[str]]:
    """Each SVG node's title (its DOT id) -> the stroke colours of the shapes it is drawn with."""
    root = ET.fromstring(svg)
    out: dict[str, set[str]] = {}
    for g in root.iter(f"{SVG}g"):
        if g.get("class") != "node":
            continue
        title = g.find(f"{SVG}title")
        assert title is not None and title.text
        out[title.text] = {shape.get("stroke", "") for shape in g if shape.tag != f"{SVG}title" and shape.get("stroke")}
    return out


def test_examples_are_there() -> None:
    assert len(EXAMPLES) >= 10


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_graphviz_renders_every_example_without_a_warning(path: pathlib.Path) -> None:
    proc = render_svg(dot_of(path))
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", f"Graphviz warns about the DOT of {path.name}:\n{proc.stderr}"
    drawn = stroke_colours(proc.stdout)
    wanted = expected_colours(path)
    assert any(c == drawing.LOSS_COLOUR for c in wanted.values()), "every example has a loss"
    for node, colour in wanted.items():
        assert node in drawn, f"{node} is not drawn"
        assert drawn[node] == {colour}, f"{node} is drawn in {drawn[node]}, not {colour}"


def test_the_highlight_colours_are_ones_graphviz_knows() -> None:
    for colour in (drawing.LOSS_COLOUR, drawing.DETACHED_COLOUR):
        proc = render_svg(f'digraph g {{ a [color="{colour}"]; }}')
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr
        assert f'stroke="{colour}"' in proc.stdout
    # the form the drawing used before: Graphviz does not know it, and this check sees that
    proc = render_svg('digraph g { a [color="#c60"]; }')
    assert "not a known color" in proc.stderr


def test_a_missing_graphviz_fails_saying_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(pytest.fail.Exception, match="apt-get install graphviz"):
        dot_program()
    assert "install Graphviz" in INSTALL
