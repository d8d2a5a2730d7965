"""The sweep language's JSON Schema (``onlytorch schema --sweep``) and its generated reference in
docs/sweeps.md: both come from the pydantic models that load_sweep validates with, so the example
sweeps must validate against the schema and the docs must list every key with its meaning."""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from onlytorch_cli.main import cli
from pydantic import BaseModel

from onlytorch.spec.diagnostics import CODES
from onlytorch.sweep import docs
from onlytorch.sweep import schema as S
from onlytorch.sweep.load import load_sweep

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs" / "sweeps.md"
EXAMPLES = sorted((ROOT / "sweeps").glob("*.yaml")) + sorted((pathlib.Path(__file__).parent / "valid").glob("*.yaml"))
MODELS: list[type[BaseModel]] = [S.SweepSpec, S.DistributionSpec, S.SamplerSpec, S.PrunerSpec]


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["schema", "--sweep"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_the_cli_prints_the_sweep_schema_and_still_the_spec_schema(schema: dict[str, Any]) -> None:
    assert schema["title"] == "onlytorch sweep"
    assert set(schema["required"]) == {"version", "spec"}
    assert {"space", "set", "seeds", "trials", "sampler", "pruner", "monitor", "objective"} <= set(schema["properties"])
    spec = json.loads(CliRunner().invoke(cli, ["schema"]).stdout)
    assert spec["title"] == "onlytorch spec"


def test_the_examples_validate_against_the_schema(schema: dict[str, Any]) -> None:
    assert len(EXAMPLES) >= 3
    validator = jsonschema.Draft202012Validator(schema)
    for path in EXAMPLES:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        problems = [e.message for e in validator.iter_errors(data)]
        assert not problems, (path.name, problems)
        sweep, report = load_sweep(path)
        assert sweep is not None, report.render()


@pytest.mark.parametrize(
    "change",
    [
        {"trails": 4},
        {"spec": None},
        {"space": {"a.b": {"int": [1.5, 3]}}},
        {"space": {"a.b": {"loguniform": [1.0, 2.0, 3.0]}}},
        {"space": {"a.b": {"choice": [1], "typo": 2}}},
        {"sampler": {"type": "annealing"}},
        {"pruner": {"type": "median", "warmup_steps": -1}},
        {"seeds": "three"},
        {"objective": "mean"},
    ],
)
def test_the_schema_refuses_what_the_loader_refuses(schema: dict[str, Any], change: dict[str, Any]) -> None:
    data: dict[str, Any] = {"version": 1, "spec": "x.yaml", "trials": 2, "space": {"a.b": {"choice": [1, 2]}}}
    data.update(change)
    data = {k: v for k, v in data.items() if v is not None}
    assert list(jsonschema.Draft202012Validator(schema).iter_errors(data)), change


def test_every_key_has_a_meaning() -> None:
    for model in MODELS:
        for name, field in model.model_fields.items():
            assert field.description and len(field.description) > 10, (model.__name__, name)
        assert model.__doc__


def test_docs_sweeps_md_is_up_to_date() -> None:
    text = DOCS.read_text(encoding="utf-8")
    assert docs.splice(text, docs.render_reference()) == text, (
        "docs/sweeps.md is stale: run python -m onlytorch.sweep.docs docs/sweeps.md"
    )


def test_the_reference_lists_every_key_and_sweep_code() -> None:
    ref = docs.render_reference()
    for model in MODELS:
        for name, field in model.model_fields.items():
            assert f"| `{field.alias or name}` |" in ref, name
    for code in CODES:
        assert (f"| `{code}` |" in ref) == ("-SWEEP-" in code), code
    assert "SamplerSpec(" not in ref and "PrunerSpec(" not in ref  # defaults in the file's words


def test_the_docs_example_is_a_valid_sweep(tmp_path: pathlib.Path) -> None:
    text = DOCS.read_text(encoding="utf-8")
    example = re.search(r"## The sweep file\n\n```yaml\n(.*?)```", text, re.S)
    assert example, "docs/sweeps.md: the sweep file section starts with a yaml example"
    body = example.group(1).replace("../specs/", f"{ROOT / 'specs'}/")
    path = tmp_path / "gan_ring.yaml"
    path.write_text(body, encoding="utf-8")
    sweep, report = load_sweep(path)
    assert sweep is not None, report.render()
    assert len(sweep.params) == 5 and sweep.seeds == [0, 1] and sweep.trials == 16


def test_the_docs_generator_writes_between_its_markers(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "s.md"
    page.write_text(f"# head\n{docs.BEGIN}\nSTALE TEXT\n{docs.END}\n## later sections stay\n")
    assert docs.main(["docs", str(page)]) == 0
    written = page.read_text()
    assert written.startswith("# head\n") and written.endswith(f"{docs.END}\n## later sections stay\n")
    assert "STALE TEXT" not in written and "| `max_failures` |" in written
    plain = tmp_path / "plain.md"
    plain.write_text("no markers\n")
    assert docs.main(["docs", str(plain)]) == 2
    assert "needs the markers" in capsys.readouterr().err
    assert docs.main(["docs", "--stdout"]) == 0
    assert capsys.readouterr().out == docs.render_reference()
