"""Each data source's declared field table (name, dtype, per-sample shape, classes; the table
docs/spec.md prints) equals what the source yields, for several settings of its parameters: the
arrays `load` returns, and for the gym sources the batches the trainer draws."""

from __future__ import annotations

import pathlib
from typing import Any

import numpy as np
import pytest

from onlytorch.compile import compile_file
from onlytorch.data import SOURCES, FieldRow, FieldTable, LoadContext, Params, Source
from onlytorch.data.gym.base import OBS_SHAPE
from onlytorch.data.gym.envs import env_spaces
from onlytorch.data.sources import make_live, size_of
from onlytorch.spec.docs import field_table, render_reference

SPECS = pathlib.Path(__file__).resolve().parent.parent / "specs"

# source -> parameter settings that change its fields' shapes or classes (and the defaults)
SETTINGS: dict[str, list[dict[str, Any]]] = {
    "synthetic.xor": [{}, {"n": 9, "noise": 0.0}],
    "synthetic.moons": [{"n": 10}],
    "synthetic.spirals": [{"n": 12}, {"n": 12, "classes": 5}],
    "synthetic.ring": [{"n": 200}, {"n": 200, "modes": 3}],
    "synthetic.grid": [{"n": 500}, {"n": 500, "side": 3}],
    "synthetic.sine": [{"n": 4}, {"n": 3, "length": 7}],
    "synthetic.regression": [{"n": 5}, {"n": 5, "features": 6}],
    "synthetic.reverse": [{"n": 50}, {"n": 50, "length": 3, "vocab": 4}],
    "sklearn.digits": [{}],
    "sklearn.iris": [{}, {"standardize": False}],
    "sklearn.breast_cancer": [{}],
    "sklearn.wine": [{"standardize": False}],
}
FILES = ("file.npz", "file.csv")
# gym sources: an example that trains on it, and overrides that keep its first batch small
LIVE = {
    "gym.rollout": ("ppo_cartpole", [("data.train.steps", 4), ("data.train.envs", 2)]),
    "gym.replay": ("dqn_cartpole", [("data.train.warmup", 8)]),
}


def check_against_rows(source: Source, p: Any, arrays: dict[str, np.ndarray], obs_shape: tuple[int, ...] = ()) -> None:
    """The arrays (first axis: samples) are exactly the declared rows present for p."""
    rows = [row for row in source.field_rows if row.present(p)]
    assert sorted(arrays) == sorted(row.name for row in rows), source.name
    for row in rows:
        a = arrays[row.name]
        where = f"{source.name} field {row.name!r} ({p!r})"
        assert row.dtype in ("float", "int64"), where
        if row.dtype == "int64":
            assert a.dtype == np.int64, f"{where}: declared int64, yields {a.dtype}"
        else:
            assert np.issubdtype(a.dtype, np.floating), f"{where}: declared float, yields {a.dtype}"
        shape = obs_shape if row.shape == OBS_SHAPE else tuple(size_of(d, p) for d in row.shape)
        assert a.shape[1:] == shape, f"{where}: declared {row.shape_text()} = {shape}, yields {a.shape[1:]}"
        if row.classes is not None:
            classes = size_of(row.classes, p)
            assert a.min() >= 0 and a.max() < classes, f"{where}: labels outside [0, {classes})"
            # every class occurs in a sample this large: the declared count is not merely an upper bound
            assert len(np.unique(a)) == classes, f"{where}: {len(np.unique(a))} classes seen, {classes} declared"


def test_every_source_declares_its_fields_and_is_checked_here() -> None:
    for name, source in SOURCES.items():
        assert source.field_rows, f"{name} declares no field table"
        for row in source.field_rows:
            assert row.doc and row.dtype, (name, row)
    assert set(SOURCES) <= set(SETTINGS) | set(FILES) | set(LIVE), "a source this test does not check"


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_declared_fields_are_what_load_yields(name: str) -> None:
    if name.startswith("sklearn."):
        pytest.importorskip("sklearn", reason="the extra `datasets` loads scikit-learn's sets")
    source = SOURCES[name]
    assert isinstance(source.fields, FieldTable)  # the validator reads the same table
    for setting in SETTINGS[name]:
        p = source.parse(setting)
        arrays = source.load(p, LoadContext(seed=0))
        check_against_rows(source, p, arrays)


def test_sizes_follow_the_parameters() -> None:
    p = SOURCES["synthetic.grid"].parse({"side": 4})
    assert SOURCES["synthetic.grid"].fields(p)["mode"].classes == 16
    p = SOURCES["synthetic.sine"].parse({"length": 11})
    assert SOURCES["synthetic.sine"].fields(p)["x"].shape == (11, 1)
    with pytest.raises(ValueError, match="integer parameters"):
        size_of("noise", SOURCES["synthetic.xor"].parse({}))
    with pytest.raises(ValueError, match="integer parameters"):
        size_of("__import__('os')", SOURCES["synthetic.xor"].parse({}))


def test_file_sources_yield_the_fields_their_table_describes(tmp_path: pathlib.Path) -> None:
    npz, csv = SOURCES["file.npz"], SOURCES["file.csv"]
    (row,) = npz.field_rows
    assert row.name == "KEY" and "integer" in row.dtype and "first (sample) axis" in str(row.shape)
    path = tmp_path / "d.npz"
    np.savez(path, img=np.zeros((5, 3, 2)), label=np.arange(5, dtype=np.int32))
    for keys, expected in (
        (None, {"img": ((3, 2), "float"), "label": ((), "int64")}),
        (["label"], {"label": ((), "int64")}),
        ({"x": "img"}, {"x": ((3, 2), "float")}),
    ):
        p = npz.parse({"path": str(path), "keys": keys})
        fields = npz.fields(p)
        arrays = npz.load(p, LoadContext(base_dir=tmp_path))
        assert {k: (f.shape, f.dtype) for k, f in fields.items()} == expected
        assert {k: a.shape[1:] for k, a in arrays.items()} == {k: s for k, (s, _) in expected.items()}
    (row,) = csv.field_rows
    assert row.name == "FIELD" and "int_fields" in row.dtype and "(k,)" in str(row.shape)
    path = tmp_path / "d.csv"
    path.write_text("a,b,c\n1,2,0\n3,4,1\n", encoding="utf-8")
    p = csv.parse({"path": str(path), "columns": {"x": ["a", "b"], "y": "c"}, "int_fields": ["y"]})
    arrays = csv.load(p, LoadContext(base_dir=tmp_path))
    assert {k: (a.shape[1:], a.dtype) for k, a in arrays.items()} == {
        "x": ((2,), np.dtype(np.float64)),
        "y": ((), np.dtype(np.int64)),
    }


@pytest.mark.parametrize("name", sorted(LIVE))
def test_gym_sources_yield_their_declared_fields(name: str) -> None:
    spec, overrides = LIVE[name]
    compiled, report = compile_file(SPECS / f"{spec}.yaml", overrides=overrides)
    assert compiled is not None, report.items
    live = make_live(compiled)
    assert live is not None
    live.begin_iteration()
    batch = live.next_batch()
    source, p = SOURCES[name], compiled.spec.data.train
    obs = env_spaces(p.env, p.env_kwargs).obs_shape
    check_against_rows(source, p, batch, obs_shape=obs)
    # the fields the validator checks inputs against: the same names, dtypes and shapes
    declared = source.fields(p)
    assert {k: (f.shape, f.dtype) for k, f in declared.items()} == {
        k: (a.shape[1:], "int64" if a.dtype == np.int64 else "float") for k, a in batch.items()
    }
    for row in source.field_rows:
        if row.name in declared and row.name != "action":  # its doc states the environment's action count
            assert declared[row.name].doc == row.doc


def test_rollout_fields_follow_its_parameters() -> None:
    source = SOURCES["gym.rollout"]
    base = {"env": "CartPole-v1", "action": "a"}
    assert "log_prob" not in source.fields(source.parse(base))
    with_both = source.fields(source.parse({**base, "log_prob": "lp", "value": "v"}))
    assert {"log_prob", "value"} <= set(with_both)


def test_the_reference_prints_a_field_table_per_source() -> None:
    text = render_reference()
    for name, source in SOURCES.items():
        section = text.split(f"#### `{name}`", 1)[1].split("\n#### ", 1)[0]
        assert field_table(source.field_rows) in section, name
    assert "| `x` | float | `(length, 1)` | the (noisy) sine, one value per time step |" in text
    assert "| `mode` | int64 | `()` | the Gaussian it was drawn from" in text and "classes: `side * side`" in text
    assert "(only when `log_prob` is set)" in text


def test_a_source_without_a_table_says_so() -> None:
    assert "declare a `FieldTable`" in field_table(())
    rows = (FieldRow("x", "float", ("n", 2), "a"),)
    assert "| `x` | float | `(n, 2)` | a |" in field_table(rows)


class _Points(Params):
    n: int = 4
    m: str | None = None


def test_a_declared_table_is_the_fields_function() -> None:
    table = FieldTable((FieldRow("x", "float", ("n", 2), "points"), FieldRow("k", "int64", (), "ids", when="m")))
    fields = table(_Points(n=3))
    assert list(fields) == ["x"] and fields["x"].shape == (3, 2) and fields["x"].doc == "points"
    assert list(table(_Points(n=3, m="node"))) == ["x", "k"]
