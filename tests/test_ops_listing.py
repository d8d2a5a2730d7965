"""`onlytorch ops`: every public op, every alias (pointing to its op) and every function of the spec
language is listed with a whole one-sentence summary, and `onlytorch ops NAME` shows each."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from onlytorch_cli.main import NO_ONNX, cli

from onlytorch.ops.registry import SUMMARY_WIDTH, first_sentence, public_ops
from onlytorch.spec.expr import SPECIAL_FUNCTIONS

OPS = public_ops()
ALIASES = {name: op.name for name, op in OPS.items() if name != op.name}


def listing() -> list[str]:
    result = CliRunner().invoke(cli, ["ops"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def rows() -> dict[str, str]:
    """name -> the rest of its line, for the lines that list a name (not headings or blanks)."""
    known = set(OPS) | set(SPECIAL_FUNCTIONS)
    out = {}
    for line in listing():
        name, _, rest = line.partition(" ")
        if name in known:
            assert name not in out, f"{name} listed twice"
            out[name] = rest.strip().removesuffix(NO_ONNX.strip()).strip()
    return out


def whole_sentence_problem(text: str) -> str | None:
    """Why text is not one whole sentence, or None."""
    if not text:
        return "empty"
    if not text.endswith((".", "!", "?")):
        return "does not end a sentence"
    if any(text.count(o) != text.count(c) for o, c in ("()", "[]", "{}")):
        return "unbalanced brackets"
    if first_sentence(text) != text:
        return f"holds more than one sentence (the first ends: {first_sentence(text)!r})"
    if len(text) > SUMMARY_WIDTH:
        return f"{len(text)} characters, more than {SUMMARY_WIDTH}"
    return None


def test_every_public_op_alias_and_function_is_listed() -> None:
    listed = rows()
    missing = (set(OPS) | set(SPECIAL_FUNCTIONS)) - set(listed)
    assert not missing, f"not listed: {sorted(missing)}"
    for name in ("detach", "gather", "clamp", "grad", "scan", "param"):
        assert name in listed
    assert "sum_to" not in listed  # internal gradient plumbing stays out


def test_aliases_point_to_their_op() -> None:
    listed = rows()
    assert ALIASES, "the registry declares aliases (detach, gather, clamp, ...)"
    for alias, target in ALIASES.items():
        assert listed[alias] == f"-> {target}", (alias, listed[alias])
    assert listed["detach"] == "-> stop_gradient" and listed["gather"] == "-> take_along"


def test_every_listed_summary_is_one_whole_sentence() -> None:
    listed = rows()
    bad = {}
    for name, text in listed.items():
        if name in ALIASES:
            continue
        expected = OPS[name].short() if name in OPS else first_sentence(SPECIAL_FUNCTIONS[name].partition(": ")[2])
        assert text == expected, f"{name}: the listing shows {text!r}, not its summary {expected!r}"
        problem = whole_sentence_problem(text)
        if problem:
            bad[name] = f"{problem}: {text!r}"
    assert not bad, "summaries that are not one whole sentence:\n" + "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_a_summary_is_the_docs_first_sentence_unless_written() -> None:
    written = {name for name, op in OPS.items() if op.summary}
    assert written, "the long first sentences (conv2d, attention, ...) have a written summary"
    for name in written:
        # a written summary only where the first sentence would not fit on a line
        assert len(first_sentence(OPS[name].doc)) > SUMMARY_WIDTH, f"{name}: its first sentence fits; drop summary="
    for name, op in OPS.items():
        if not op.summary:
            assert op.short() == first_sentence(op.doc), name


@pytest.mark.parametrize(
    "text, first",
    [
        ("Cosine.", "Cosine."),
        ("One thing. Another.", "One thing."),
        ("Softmax over the last axis. target: labels.", "Softmax over the last axis."),
        ("Sizes (e.g. 3. or 4.) and more, e.g. this. Next.", "Sizes (e.g. 3. or 4.) and more, e.g. this."),
        (
            "start, start + step, ... below end, as torch.arange: 0 .. n - 1. More.",
            "start, start + step, ... below end, as torch.arange: 0 .. n - 1.",
        ),
        ("Two lines\n    joined. Then more.", "Two lines joined."),
        ("a + b", "a + b"),
        ("First paragraph.\n\nSecond.", "First paragraph."),
    ],
)
def test_first_sentence(text: str, first: str) -> None:
    assert first_sentence(text) == first


def test_ops_name_works_for_every_listed_name() -> None:
    runner = CliRunner()
    for name in rows():
        result = runner.invoke(cli, ["ops", name])
        assert result.exit_code == 0, (name, result.output)
        if name in SPECIAL_FUNCTIONS:
            assert result.output.startswith(SPECIAL_FUNCTIONS[name].partition(": ")[0])
            assert "a function of spec expressions" in result.output
        else:
            op = OPS[name]
            assert result.output.startswith(f"{op.name}({op.signature()})"), name
            assert op.doc in result.output
            if name in ALIASES:
                assert f"{name} is an alias of {op.name}" in result.output


def test_alias_shows_its_op_in_full() -> None:
    result = CliRunner().invoke(cli, ["ops", "detach"])
    assert result.exit_code == 0
    assert result.output.startswith("stop_gradient(x)\ndetach is an alias of stop_gradient\n")
    assert "derivative: none" in result.output


def test_unknown_name_suggests_functions_too() -> None:
    result = CliRunner().invoke(cli, ["ops", "scna"])
    assert result.exit_code == 2 and "did you mean 'scan'" in result.output
