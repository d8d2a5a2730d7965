"""``onlytorch schema``: the JSON Schema of the spec language, generated from the pydantic models,
which are built from the registries (optimizers, schedules, data sources), so that the schema
cannot drift from what the engine accepts."""

from __future__ import annotations

import copy
import inspect
import json
import pathlib
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from onlytorch_cli.main import cli

from onlytorch.data import SOURCES
from onlytorch.optim import OPTIMIZERS, SCHEDULES
from onlytorch.spec.schema import json_schema

SPECS = pathlib.Path(__file__).resolve().parents[2] / "specs"
EXAMPLES = sorted(SPECS.glob("*.yaml"))
TOP_LEVEL = (
    "version",
    "name",
    "inputs",
    "modules",
    "nodes",
    "losses",
    "metrics",
    "optimizers",
    "train",
    "eval",
    "data",
)


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    result = CliRunner().invoke(cli, ["schema"])
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return json.loads(result.stdout)


def ref(schema: dict[str, Any], r: str) -> dict[str, Any]:
    assert r.startswith("#/$defs/"), r
    return schema["$defs"][r.removeprefix("#/$defs/")]


def union_members(schema: dict[str, Any], node: dict[str, Any]) -> list[dict[str, Any]]:
    """The object schemas of a (possibly nullable) tagged union."""
    if "anyOf" in node:
        node = next(n for n in node["anyOf"] if n.get("type") != "null")
    members = node.get("oneOf") or node.get("anyOf") or [node]
    return [ref(schema, m["$ref"]) if "$ref" in m else m for m in members]


def const(member: dict[str, Any], key: str) -> Any:
    prop = member["properties"][key]
    return prop["const"] if "const" in prop else prop["enum"][0]


def kw_defaults(cls: type, skip: int) -> dict[str, Any]:
    """Keyword parameters of cls.__init__ after self and `skip` positional ones, with their defaults."""
    params = list(inspect.signature(cls.__init__).parameters.values())[1 + skip :]  # type: ignore[misc]
    return {p.name: p.default for p in params}


def as_json(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# ------------------------------------------------------------------ the document


def test_schema_is_json_and_a_json_schema(schema: dict[str, Any]) -> None:
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["type"] == "object"
    assert schema["title"]
    for key in TOP_LEVEL:
        assert key in schema["properties"], key
    assert set(schema["required"]) == {"version", "name", "inputs", "losses"}
    assert schema["properties"]["version"].get("const", (schema["properties"]["version"].get("enum") or [None])[0]) == 1
    assert schema == json.loads(json.dumps(json_schema()))  # the command prints the library's schema


def test_schema_is_valid_under_its_meta_schema(schema: dict[str, Any]) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validators.validator_for(schema).check_schema(schema)


def test_every_section_is_documented(schema: dict[str, Any]) -> None:
    for key in TOP_LEVEL:
        assert schema["properties"][key].get("description"), key
    for name, d in schema["$defs"].items():
        for prop, p in d.get("properties", {}).items():
            assert p.get("description"), f"{name}.{prop} has no description"


def test_strict_models_forbid_unknown_keys(schema: dict[str, Any]) -> None:
    """Unknown keys are never silently ignored: every object of the language says so."""
    assert schema["additionalProperties"] is False
    objects = {name: d for name, d in schema["$defs"].items() if d.get("type") == "object" and "properties" in d}
    for name in (
        "InputSpec",
        "ModuleSpec",
        "PhaseSpec",
        "BackwardSpec",
        "TrainSpec",
        "EvalSpec",
        "DataSpec",
        "SyncSpec",
    ):
        assert name in objects, name
    for name, d in objects.items():
        assert d.get("additionalProperties") is False, f"{name} accepts unknown keys"


def test_input_uses_the_yaml_key_from(schema: dict[str, Any]) -> None:
    props = schema["$defs"]["InputSpec"]["properties"]
    assert "from" in props and "from_" not in props
    assert {"shape", "dtype", "window", "carry"} <= set(props)


def test_phase_and_backward_keys(schema: dict[str, Any]) -> None:
    phase = schema["$defs"]["PhaseSpec"]["properties"]
    assert {"name", "repeat", "detach", "backward", "step"} <= set(phase)
    assert phase["repeat"]["default"] == 1
    backward = schema["$defs"]["BackwardSpec"]["properties"]
    assert {"loss", "wrt", "retain_graph", "weight"} <= set(backward)
    assert backward["retain_graph"]["default"] is False


# ------------------------------------------------------------------ registries


def test_optimizer_union_matches_the_registry(schema: dict[str, Any]) -> None:
    members = union_members(schema, schema["properties"]["optimizers"]["additionalProperties"])
    by_type = {const(m, "type"): m for m in members}
    assert set(by_type) == set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop"}
    for name, cls in OPTIMIZERS.items():
        props = by_type[name]["properties"]
        assert "params" in props and props["params"]["type"] == "array"
        assert "params" in by_type[name]["required"]
        hyper = kw_defaults(cls, skip=2)  # after graph and params
        for key, default in hyper.items():
            assert key in props, f"{name}: hyper-parameter {key} missing from the schema"
            assert props[key].get("default") == as_json(default), (name, key)
        extra = set(props) - set(hyper) - {"type", "params", "schedule"}
        assert not extra, f"{name}: the schema has keys the optimizer does not take: {extra}"


def test_optimizer_defaults_are_torch_defaults(schema: dict[str, Any]) -> None:
    """Design §1: the same defaults as torch.optim (checked where both have the hyper-parameter)."""
    torch = pytest.importorskip("torch")
    members = union_members(schema, schema["properties"]["optimizers"]["additionalProperties"])
    by_type = {const(m, "type"): m["properties"] for m in members}
    for name, tname in {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}.items():
        theirs = kw_defaults(getattr(torch.optim, tname), skip=1)
        shared = set(theirs) & set(by_type[name])
        assert {"lr", "weight_decay"} <= shared
        for key in shared:
            assert by_type[name][key]["default"] == as_json(theirs[key]), (name, key)


def test_schedules_match_the_registry(schema: dict[str, Any]) -> None:
    adam = next(
        m
        for m in union_members(schema, schema["properties"]["optimizers"]["additionalProperties"])
        if const(m, "type") == "adam"
    )
    members = union_members(schema, adam["properties"]["schedule"])
    by_type = {const(m, "type"): m for m in members}
    assert set(by_type) == set(SCHEDULES)
    for name, cls in SCHEDULES.items():
        props = by_type[name]["properties"]
        for key, default in kw_defaults(cls, skip=1).items():  # after the optimizer
            assert key in props, (name, key)
            if default is inspect.Parameter.empty:
                assert key in by_type[name].get("required", []), (name, key)
            else:
                assert props[key]["default"] == as_json(default), (name, key)


def test_data_sources_match_the_registry(schema: dict[str, Any]) -> None:
    data = schema["$defs"]["DataSpec"]["properties"]
    train = {const(m, "source"): m for m in union_members(schema, data["train"])}
    assert set(train) == set(SOURCES)
    for split in ("val", "test"):
        members = union_members(schema, data[split])
        sources = {const(m, "source") for m in members if "source" in m["properties"]}
        assert sources == set(SOURCES)
        assert any("from_split" in m["properties"] for m in members), split
    for name, member in train.items():
        fields = SOURCES[name].params.model_fields
        assert set(member["properties"]) == {*fields, "source"}, name
        for key, f in fields.items():
            if not f.is_required():
                assert member["properties"][key].get("default") == as_json(f.default), (name, key)
        assert member.get("description"), name


# ------------------------------------------------------------------ the examples against the schema


def _validator(schema: dict[str, Any]) -> Any:
    jsonschema = pytest.importorskip("jsonschema")
    return jsonschema.validators.validator_for(schema)(schema)


def _errors(validator: Any, data: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(data)]


def _long_form(data: dict[str, Any]) -> dict[str, Any]:
    """Modules written in the short form (a bare layer list) rewritten as {layers: [...]}."""
    out = copy.deepcopy(data)
    for name, m in (out.get("modules") or {}).items():
        if isinstance(m, list):
            out["modules"][name] = {"layers": m}
    return out


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema_in_the_long_module_form(
    schema: dict[str, Any], path: pathlib.Path
) -> None:
    validator = _validator(schema)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _errors(validator, _long_form(data)) == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_against_the_schema(schema: dict[str, Any], path: pathlib.Path) -> None:
    validator = _validator(schema)
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _errors(validator, data) == []


def test_schema_rejects_what_validate_rejects(schema: dict[str, Any]) -> None:
    validator = _validator(schema)
    base = _long_form(yaml.safe_load((SPECS / "gan_ring.yaml").read_text(encoding="utf-8")))
    assert _errors(validator, base) == []

    def broken(edit: Any) -> list[str]:
        data = copy.deepcopy(base)
        edit(data)
        return _errors(validator, data)

    assert broken(lambda d: d.update(trian={"steps": 1}))  # an unknown top-level key
    assert broken(lambda d: d["optimizers"]["d_opt"].update(betas2=[0.5, 0.9]))  # an unknown optimizer key
    assert broken(lambda d: d["optimizers"]["d_opt"].update(type="adamax"))  # an unknown optimizer
    assert broken(lambda d: d["data"]["train"].update(source="synthetic.rign"))  # an unknown data source
    assert broken(lambda d: d["data"]["train"].update(modes=0))  # out of range
    assert broken(lambda d: d["train"]["schedule"][0].update(retain_graph=True))  # belongs on a backward
    assert broken(lambda d: d["train"]["schedule"][0]["backward"][0].update(retian_graph=True))
    assert broken(lambda d: d["inputs"]["real"].update(dtype="int32"))
    assert broken(lambda d: d.pop("losses"))
    assert broken(lambda d: d.update(version=2))
