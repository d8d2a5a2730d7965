"""The spec reference in docs/spec.md is generated from the code and must not drift."""

import pathlib

import pytest

from onlytorch.spec.diagnostics import CODES
from onlytorch.spec.docs import BEGIN, END, render_reference, splice
from onlytorch.spec.schema import OPTIMIZER_MODELS, Spec

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "spec.md"


def test_docs_spec_md_is_up_to_date():
    text = DOCS.read_text(encoding="utf-8")
    assert splice(text, render_reference()) == text, (
        "docs/spec.md is stale: run python -m onlytorch.spec.docs docs/spec.md"
    )


def test_reference_lists_every_key_code_and_optimizer():
    ref = render_reference()
    for key in Spec.model_fields:
        assert f"| `{Spec.model_fields[key].alias or key}` |" in ref
    for code in CODES:
        assert f"| `{code}` |" in ref
    for name in OPTIMIZER_MODELS:
        assert f"#### `type: {name}`" in ref
    assert "| `grad` |" in ref and "| `tanh(x)` |" in ref


def test_markers_are_required():
    import pytest

    with pytest.raises(ValueError, match="markers"):
        splice("no markers here", "x")
    assert splice(f"a{BEGIN}old{END}b", "new\n") == f"a{BEGIN}\nnew\n{END}b"


def test_the_docs_generator_has_a_usage_and_refuses_a_file_without_markers(tmp_path, capsys) -> None:
    from onlytorch.spec import docs

    assert docs.main(["docs", "--stdout"]) == 0
    assert capsys.readouterr().out == docs.render_reference()
    plain = tmp_path / "plain.md"
    plain.write_text("no markers here\n")
    assert docs.main(["docs", str(plain)]) == 2
    assert "needs the markers" in capsys.readouterr().err
    assert plain.read_text() == "no markers here\n"  # nothing written
    assert docs.main(["docs", str(tmp_path / "missing.md")]) == 2
    with pytest.raises(SystemExit) as e:
        docs.main(["docs", "--help"])
    assert e.value.code == 0 and "--stdout" in capsys.readouterr().out
