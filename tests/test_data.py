"""onlytorch.data: sources (fields match loads, seeded, validated, right geometry), files, split, batchers."""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from onlytorch.data import (
    SOURCES,
    Batches,
    DataError,
    LoadContext,
    Noise,
    check_arrays,
    get_source,
    grid_centres,
    load_source,
    ring_centres,
    rng_from_array,
    rng_to_array,
    source_fields,
    split,
)

GENERATED = sorted(name for name in SOURCES if name.startswith("synthetic."))
BUNDLED = sorted(name for name in SOURCES if name.startswith("sklearn."))


def generate(name: str, seed: int = 0, **params: object) -> dict[str, np.ndarray]:
    return load_source({"source": name, **params}, LoadContext(seed=seed))


def save_roundtrip(tmp_path: Path, state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    np.savez(tmp_path / "state.npz", **state)
    with np.load(tmp_path / "state.npz", allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


# ---------------------------------------------------------------- the registry


def test_registry_lists_the_promised_sources():
    expected = {
        *(f"synthetic.{g}" for g in ("xor", "moons", "spirals", "ring", "grid", "sine", "regression", "reverse")),
        *(f"sklearn.{s}" for s in ("digits", "iris", "breast_cancer", "wine")),
        "file.npz",
        "file.csv",
        "gym.rollout",
        "gym.replay",
    }
    assert set(SOURCES) == expected
    for s in SOURCES.values():
        assert s.doc and s.params.model_config.get("extra") == "forbid"
        assert s.extra == {"sklearn": "datasets", "gym": "gym"}.get(s.name.split(".")[0])
        assert s.live == s.name.startswith("gym.")
        for name, info in s.params.model_fields.items():
            assert info.description, f"{s.name}.{name} has no description"


def test_unknown_source_suggests_the_closest_name():
    with pytest.raises(DataError, match=r"unknown data source 'synthetic\.rign'; did you mean 'synthetic\.ring'\?"):
        get_source("synthetic.rign")
    with pytest.raises(DataError, match=r"known: .*synthetic\.xor"):
        get_source("mnist")
    with pytest.raises(DataError, match="needs 'source: NAME'"):
        load_source({"n": 3}, LoadContext())


@pytest.mark.parametrize("name", GENERATED)
def test_generator_fields_match_its_arrays_and_seed_reproduces_them(name):
    fields = source_fields({"source": name, "n": 37})
    a, b, c = generate(name, seed=5, n=37), generate(name, seed=5, n=37), generate(name, seed=6, n=37)
    assert check_arrays(name, fields, a) == 37
    for k in fields:
        assert a[k].shape == (37, *fields[k].shape)
        np.testing.assert_array_equal(a[k], b[k])
    assert any(not np.array_equal(a[k], c[k]) for k in fields)


@pytest.mark.parametrize("name", GENERATED)
def test_generators_are_fast(name):
    start = time.perf_counter()
    generate(name, n=10_000, **({"length": 20} if name == "synthetic.sine" else {}))
    assert time.perf_counter() - start < 1.0  # milliseconds when quiet; generous for a loaded machine


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"source": "synthetic.ring", "n": 0}, r"synthetic\.ring: n: Input should be greater than 0"),
        ({"source": "synthetic.ring", "n": -5}, r"n: Input should be greater than 0"),
        ({"source": "synthetic.moons", "noise": -0.1}, r"noise: Input should be greater than or equal to 0"),
        ({"source": "synthetic.ring", "modez": 3}, r"unknown parameter 'modez'; did you mean 'modes'\?"),
        ({"source": "synthetic.spirals", "classes": 1}, r"classes: Input should be greater than or equal to 2"),
        ({"source": "synthetic.grid", "side": "five"}, r"side: Value error, must be an integer, not str 'five'"),
        ({"source": "synthetic.ring", "n": True}, r"n: Value error, must be an integer, not true"),
        ({"source": "synthetic.sine", "freq_range": [0.3, 0.1]}, r"freq_range: Value error, needs 0 < low <= high"),
        ({"source": "synthetic.sine", "length": 0}, r"length: Input should be greater than 0"),
        ({"source": "synthetic.regression", "features": 0}, r"features: Input should be greater than 0"),
        ({"source": "sklearn.digits", "standardize": True}, r"unknown parameter 'standardize' \(parameters: none\)"),
        ({"source": "sklearn.iris", "standardise": True}, r"did you mean 'standardize'\?"),
    ],
)
def test_parameters_are_validated_with_the_parameter_named(entry, message):
    with pytest.raises(DataError, match=message) as e:
        source_fields(entry)
    assert e.value.param == next(k for k in entry if k != "source")
    assert "\n" not in str(e.value)


def test_defaults_and_params_change_the_fields():
    assert source_fields({"source": "synthetic.sine", "length": 7})["x"].shape == (7, 1)
    assert source_fields({"source": "synthetic.regression", "features": 5})["x"].shape == (5,)
    assert source_fields({"source": "synthetic.spirals", "classes": 4})["y"].classes == 4
    assert source_fields({"source": "synthetic.grid"})["mode"].classes == 25
    assert len(generate("synthetic.ring")["x"]) == 1000


# ---------------------------------------------------------------- geometry of the generators


def test_ring_centres_lie_on_the_radius_at_equal_angles_and_samples_near_their_centre():
    centres = ring_centres(8, 2.0)
    np.testing.assert_allclose(np.hypot(*centres.T), 2.0)
    np.testing.assert_allclose(np.arctan2(centres[:, 1], centres[:, 0]) % (2 * np.pi), np.arange(8) * np.pi / 4)
    d = generate("synthetic.ring", seed=3, n=4000)
    dist = np.linalg.norm(d["x"] - centres[d["mode"]], axis=1)
    assert dist.max() < 5 * 0.02
    assert set(np.unique(d["mode"])) == set(range(8))
    d = generate("synthetic.ring", n=2000, modes=3, radius=1.0, std=0.1)
    assert np.linalg.norm(d["x"] - ring_centres(3, 1.0)[d["mode"]], axis=1).max() < 5 * 0.1


def test_grid_centres_are_wgan_gp_5x5_and_samples_near_their_centre():
    centres = grid_centres(5, 2.0)
    assert centres.shape == (25, 2)
    assert sorted(set(centres[:, 0])) == sorted(set(centres[:, 1])) == [-4.0, -2.0, 0.0, 2.0, 4.0]
    assert len({tuple(c) for c in centres}) == 25
    np.testing.assert_array_equal(centres[7], [-2.0, 0.0])  # mode m = (coord[m // 5], coord[m % 5])
    d = generate("synthetic.grid", seed=1, n=5000)
    assert np.linalg.norm(d["x"] - centres[d["mode"]], axis=1).max() < 5 * 0.02
    assert set(np.unique(d["mode"])) == set(range(25))
    np.testing.assert_allclose(grid_centres(2, 1.0), [[-0.5, -0.5], [-0.5, 0.5], [0.5, -0.5], [0.5, 0.5]])


def test_xor_labels_are_the_xor_of_the_corners():
    d = generate("synthetic.xor", n=400, noise=0.1)
    corner = np.rint(d["x"]).astype(int)
    np.testing.assert_array_equal(d["y"][:, 0], corner[:, 0] ^ corner[:, 1])
    assert d["y"].dtype == np.float64 and set(np.unique(d["y"])) == {0.0, 1.0}
    exact = generate("synthetic.xor", n=8, noise=0.0)["x"]
    assert sorted(map(tuple, exact)) == [(0, 0), (0, 0), (0, 1), (0, 1), (1, 0), (1, 0), (1, 1), (1, 1)]


def test_moons_are_balanced_and_on_their_half_circles():
    d = generate("synthetic.moons", n=1001, noise=0.0)
    assert np.abs(np.bincount(d["y"]) - 1001 / 2).max() <= 0.5
    upper, lower = d["x"][d["y"] == 0], d["x"][d["y"] == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0)
    assert (upper[:, 1] >= 0).all()
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0)
    assert (lower[:, 1] <= 0.5).all()


def test_spirals_are_balanced_and_their_arms_rotated_copies():
    d = generate("synthetic.spirals", n=3001, classes=3, noise=0.0, turns=1.0)
    counts = np.bincount(d["y"])
    assert len(counts) == 3 and counts.max() - counts.min() <= 1
    r = np.hypot(*d["x"].T)
    assert (r <= 1.0).all()
    # Each arm: angle = 2 pi (turns * r + k / classes).
    angle = np.arctan2(d["x"][:, 1], d["x"][:, 0])
    expected = 2 * np.pi * (r + d["y"] / 3)
    np.testing.assert_allclose(np.cos(angle - expected), 1.0, atol=1e-9)


def test_sine_target_is_the_input_shifted_by_one_step():
    d = generate("synthetic.sine", n=20, length=30, noise=0.05)
    assert d["x"].shape == d["y"].shape == (20, 30, 1)
    np.testing.assert_array_equal(d["y"][:, :-1], d["x"][:, 1:])
    clean = generate("synthetic.sine", n=50, length=40, noise=0.0, amplitude_jitter=0.1)
    assert np.abs(clean["x"]).max() <= 1.1
    assert np.abs(clean["x"]).max() > 0.8


def test_regression_is_linear_up_to_the_noise():
    d = generate("synthetic.regression", n=5000, features=4, noise=0.1)
    w, *_ = np.linalg.lstsq(d["x"], d["y"], rcond=None)
    assert abs(np.std(d["y"] - d["x"] @ w) - 0.1) < 0.01


# ---------------------------------------------------------------- .npz files


def test_npz_roundtrip_with_dtypes_shapes_and_relative_path(tmp_path):
    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    y = np.array([0, 1, 2, 0, 1, 2], dtype=np.uint8)
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    ctx = LoadContext(base_dir=tmp_path, seed=0)
    fields = source_fields({"source": "file.npz", "path": "d.npz"}, base_dir=tmp_path)
    assert {k: (f.shape, f.dtype) for k, f in fields.items()} == {"images": ((2, 2), "float"), "labels": ((), "int64")}
    d = load_source({"source": "file.npz", "path": "d.npz"}, ctx)
    np.testing.assert_array_equal(d["images"], x)
    assert d["labels"].dtype == np.int64 and d["labels"].tolist() == y.tolist()


def test_npz_keys_select_and_rename(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", a=np.zeros((4, 3)), b=np.ones(4, dtype=np.int32), c=np.zeros(9))
    ctx = LoadContext(base_dir=tmp_path)
    entry = {"source": "file.npz", "path": "d.npz", "keys": {"x": "a", "y": "b"}}
    assert set(load_source(entry, ctx)) == {"x", "y"}  # c has another length, but is not selected
    assert set(load_source({**entry, "keys": ["a"]}, ctx)) == {"a"}
    with pytest.raises(DataError, match=r"no array 'bb'; did you mean 'b'\?") as e:
        load_source({**entry, "keys": {"y": "bb"}}, ctx)
    assert e.value.param == "keys"


def test_npz_errors_are_data_errors_naming_the_problem(tmp_path):
    ctx = LoadContext(base_dir=tmp_path)
    with pytest.raises(DataError, match=re.escape(f"no such file: {tmp_path / 'missing.npz'}")):
        load_source({"source": "file.npz", "path": "missing.npz"}, ctx)
    with pytest.raises(DataError, match="no such file"):
        source_fields({"source": "file.npz", "path": "missing.npz"}, base_dir=tmp_path)

    np.savez(tmp_path / "uneven.npz", x=np.zeros((5, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"arrays differ in length \(first dimension\): x: 5, y: 4"):
        load_source({"source": "file.npz", "path": "uneven.npz"}, ctx)

    np.savez(tmp_path / "objects.npz", x=np.zeros(3), o=np.array([{"a": 1}, None, 3], dtype=object))
    with pytest.raises(DataError, match=r"array 'o' holds Python objects.*allow_pickle=False"):
        load_source({"source": "file.npz", "path": "objects.npz"}, ctx)

    np.savez(tmp_path / "strings.npz", s=np.array(["a", "b"]))
    with pytest.raises(DataError, match="dtype <U1; fields must be integer or float"):
        load_source({"source": "file.npz", "path": "strings.npz"}, ctx)

    np.savez(tmp_path / "scalar.npz", s=np.float64(3.0))
    with pytest.raises(DataError, match="'s' is a scalar"):
        load_source({"source": "file.npz", "path": "scalar.npz"}, ctx)

    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 2)))
    with pytest.raises(DataError, match="no samples"):
        load_source({"source": "file.npz", "path": "empty.npz"}, ctx)

    (tmp_path / "text.npz").write_text("not a zip")
    with pytest.raises(DataError, match=r"cannot read .*text\.npz as an \.npz archive"):
        load_source({"source": "file.npz", "path": "text.npz"}, ctx)

    with pytest.raises(DataError, match="cannot read"):
        load_source({"source": "file.npz", "path": "."}, ctx)  # a folder

    with pytest.raises(DataError, match="path: Field required"):
        load_source({"source": "file.npz"}, ctx)


# ---------------------------------------------------------------- .csv files


CSV = "a,b,c,label\n0.5,1,2,0\n1.5,-1,2e3,1\n\n2.5,3,4,2\n"


def test_csv_roundtrip_with_names_indices_and_int_fields(tmp_path):
    (tmp_path / "t.csv").write_text(CSV)
    entry = {"source": "file.csv", "path": "t.csv", "columns": {"x": ["a", 2], "y": "label"}, "int_fields": ["y"]}
    fields = source_fields(entry, base_dir=tmp_path)
    assert {k: (f.shape, f.dtype) for k, f in fields.items()} == {"x": ((2,), "float"), "y": ((), "int64")}
    d = load_source(entry, LoadContext(base_dir=tmp_path))
    np.testing.assert_array_equal(d["x"], [[0.5, 2.0], [1.5, 2000.0], [2.5, 4.0]])
    assert d["y"].dtype == np.int64 and d["y"].tolist() == [0, 1, 2]
    as_float = load_source({**entry, "columns": {"y": ["label"]}, "int_fields": []}, LoadContext(base_dir=tmp_path))
    assert as_float["y"].shape == (3, 1) and as_float["y"].dtype == np.float64


def test_csv_without_header_and_other_delimiter(tmp_path):
    (tmp_path / "t.tsv").write_text("1;2;3\n4;5;6\n")
    entry = {"source": "file.csv", "path": "t.tsv", "header": False, "delimiter": ";", "columns": {"x": [0, 1], "y": 2}}
    d = load_source(entry, LoadContext(base_dir=tmp_path))
    np.testing.assert_array_equal(d["x"], [[1, 2], [4, 5]])
    np.testing.assert_array_equal(d["y"], [3, 6])
    with pytest.raises(DataError, match="column 'a' is a name, but header is false"):
        load_source({**entry, "columns": {"x": "a"}}, LoadContext(base_dir=tmp_path))


@pytest.mark.parametrize(
    ("text", "params", "message"),
    [
        ("a,b\n1,x\n", {}, r"line 2, column 'b': 'x' is not a number"),
        ("a,b\n1,2\n3,\n", {}, r"line 3, column 'b': '' is not a number"),
        ("a,b\n1,2\n3,4.5\n", {"int_fields": ["y"]}, r"line 3, column 'b': '4.5' is not an integer"),
        ("a,b\n1,2\n3\n", {}, r"line 3 has 1 cells; column 'b' is missing"),
        ("a,b\n1,2\n", {"columns": {"x": ["a", "bb"]}}, r"no column 'bb'; did you mean 'b'\?"),
        ("a,b\n1,2\n", {"columns": {"x": ["a", 5]}}, r"has 2 columns; index 5 is out of range"),
        ("a,b\n", {}, r"has a header but no data rows"),
        ("", {}, r"is empty"),
        ("a,b\n1,2\n", {"int_fields": ["z"]}, r"int_fields: 'z' is not a field of columns"),
        ("a,b\n1,2\n", {"columns": {}}, r"columns: name at least one field"),
        ("a,b\n1,2\n", {"columns": {"x": -1}}, r"column index -1 is negative"),
        ("a,b\n1,2\n", {"columns": {"x": []}}, r"columns\.x: lists no column"),
        ("a,b\n1,2\n", {"delimiter": ";;"}, r"delimiter: String should have at most 1 character"),
    ],
)
def test_csv_errors_name_line_and_column(tmp_path, text, params, message):
    (tmp_path / "t.csv").write_text(text)
    entry = {"source": "file.csv", "path": "t.csv", "columns": {"x": "a", "y": "b"}, **params}
    with pytest.raises(DataError, match=message) as e:
        load_source(entry, LoadContext(base_dir=tmp_path))
    assert "\n" not in str(e.value)


def test_csv_missing_and_unreadable_files(tmp_path):
    entry = {"source": "file.csv", "path": "nope.csv", "columns": {"x": 0}}
    with pytest.raises(DataError, match=re.escape(f"no such file: {tmp_path / 'nope.csv'}")):
        load_source(entry, LoadContext(base_dir=tmp_path))
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="cannot read"):
        load_source({**entry, "path": "bin.csv"}, LoadContext(base_dir=tmp_path))


def test_file_paths_resolve_against_the_base_dir_and_absolute_paths_stay(tmp_path):
    (tmp_path / "sub").mkdir()
    np.savez(tmp_path / "sub" / "d.npz", x=np.zeros((2, 1)))
    src = get_source("file.npz")
    params = src.parse({"path": "sub/d.npz"}, base_dir=tmp_path)
    assert params.path == tmp_path / "sub" / "d.npz"
    assert "x" in src.fields(params)
    absolute = {"source": "file.npz", "path": str(tmp_path / "sub" / "d.npz")}
    assert load_source(absolute, LoadContext(base_dir=Path("/elsewhere")))["x"].shape == (2, 1)


# ---------------------------------------------------------------- scikit-learn's bundled sets


@pytest.mark.parametrize(
    ("name", "features", "classes", "samples"),
    [("digits", 64, 10, 1797), ("iris", 4, 3, 150), ("breast_cancer", 30, 2, 569), ("wine", 13, 3, 178)],
)
def test_bundled_fields_are_known_without_scikit_learn(monkeypatch, name, features, classes, samples):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    fields = source_fields({"source": f"sklearn.{name}"})
    assert (fields["x"].shape, fields["x"].dtype) == ((features,), "float")
    assert (fields["y"].shape, fields["y"].dtype, fields["y"].classes) == ((), "int64", classes)
    message = rf"sklearn\.{name} needs scikit-learn: pip install 'onlytorch\[datasets\]'"
    with pytest.raises(DataError, match=message):
        load_source({"source": f"sklearn.{name}"}, LoadContext())


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_load_with_their_declared_fields(name):
    pytest.importorskip("sklearn")
    entry = {"source": name}
    d = load_source(entry, LoadContext())
    fields = source_fields(entry)
    assert set(np.unique(d["y"])) == set(range(fields["y"].classes))
    if name == "sklearn.digits":
        assert d["x"].min() == 0.0 and d["x"].max() == 1.0
    else:
        np.testing.assert_allclose(d["x"].mean(axis=0), 0.0, atol=1e-9)
        np.testing.assert_allclose(d["x"].std(axis=0), 1.0)
        raw = load_source({**entry, "standardize": False}, LoadContext())
        assert np.abs(raw["x"].mean(axis=0)).max() > 1.0  # raw features are not centred


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_sets_declare_their_length(name):
    source = get_source(name)
    n = source.sample_count(source.parse({}))
    assert n is not None and n > 100
    held = source.memory(source.parse({}), "train", source_fields({"source": name}), 4)
    assert [(h.param, h.transient) for h in held] == [("n", False), ("n", True)]
    assert held[0].what == f"data train ({name}, {n:,} samples)"
    pytest.importorskip("sklearn")
    assert len(load_source({"source": name}, LoadContext())["y"]) == n


def test_sources_answer_for_themselves():
    scored = sorted(name for name, s in SOURCES.items() if s.scored)
    assert scored == ["synthetic.grid", "synthetic.ring"]
    ring = get_source("synthetic.ring")
    centres, std = ring.mode_centres(ring.parse({"modes": 5, "radius": 3.0, "std": 0.1}))
    np.testing.assert_array_equal(centres, ring_centres(5, 3.0))
    assert std == 0.1 and get_source("synthetic.xor").mode_centres(get_source("synthetic.xor").parse({})) is None
    assert get_source("synthetic.moons").sample_count(get_source("synthetic.moons").parse({"n": 77})) == 77
    assert get_source("file.csv").sample_count(object()) is None  # a file: unknown until read


# ---------------------------------------------------------------- split


def test_split_partitions_the_samples_seeded():
    arrays = {"x": np.arange(100).reshape(100, 1) * 1.0, "y": np.arange(100)}
    parts = split(arrays, {"val": 0.1, "test": 0.25}, seed=0)
    assert list(parts) == ["train", "val", "test"]
    assert [len(parts[p]["y"]) for p in parts] == [65, 10, 25]
    assert sorted(np.concatenate([parts[p]["y"] for p in parts]).tolist()) == list(range(100))
    for p in parts.values():
        np.testing.assert_array_equal(p["x"][:, 0], p["y"])  # rows stay aligned
    again, other = split(arrays, {"val": 0.1, "test": 0.25}, seed=0), split(arrays, {"val": 0.1, "test": 0.25}, seed=1)
    np.testing.assert_array_equal(again["val"]["y"], parts["val"]["y"])
    assert not np.array_equal(other["val"]["y"], parts["val"]["y"])
    assert len(split(arrays, {"val": 0.5, "test": 0.5}, seed=0)["train"]["y"]) == 0


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ({"val": 0.0}, r"'val' is 0.0; it must lie strictly between 0 and 1"),
        ({"val": 1.0}, r"strictly between 0 and 1"),
        ({"val": 0.6, "test": 0.6}, r"fractions sum to 1.2, more than 1"),
        ({"train": 0.8}, r'"train" gets what the other fractions leave'),
        ({"val": 0.001}, r"'val' \(0.001 of 100 samples\) would hold no sample"),
    ],
)
def test_split_rejects_bad_fractions(fractions, message):
    with pytest.raises(DataError, match=message):
        split({"x": np.zeros(100)}, fractions, seed=0)


def test_split_rejects_arrays_of_different_length():
    with pytest.raises(DataError, match="x: 3, y: 4"):
        split({"x": np.zeros(3), "y": np.zeros(4)}, {"val": 0.5}, seed=0)


# ---------------------------------------------------------------- Batches


def take(b: Batches, k: int) -> list[dict[str, np.ndarray]]:
    return [b.next_batch() for _ in range(k)]


def test_each_epoch_covers_every_sample_once_and_reshuffles():
    data = {"i": np.arange(10), "x": np.arange(20.0).reshape(10, 2)}
    b = Batches(data, batch_size=4, seed=0)
    assert b.batches_per_epoch == 3
    epochs = []
    for e in range(3):
        assert (b.epoch, b.position) == (e, 0)
        batches = take(b, 3)
        assert [len(x["i"]) for x in batches] == [4, 4, 2]
        for x in batches:
            np.testing.assert_array_equal(x["x"][:, 0], 2 * x["i"])
        order = np.concatenate([x["i"] for x in batches])
        assert sorted(order.tolist()) == list(range(10))
        epochs.append(order)
    assert b.epoch == 3
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_batches_deterministic_by_seed_and_in_order_without_shuffle():
    data = {"i": np.arange(50)}
    a, b, c = (Batches(data, 8, seed=s) for s in (1, 1, 2))
    for x, y in zip(take(a, 20), take(b, 20)):
        np.testing.assert_array_equal(x["i"], y["i"])
    assert any(not np.array_equal(x["i"], y["i"]) for x, y in zip(take(a, 7), take(c, 7)))
    plain = Batches(data, 20, shuffle=False)
    assert [x["i"].tolist() for x in take(plain, 4)] == [
        list(range(20)),
        list(range(20, 40)),
        list(range(40, 50)),
        list(range(20)),
    ]


def test_drop_last_and_oversized_batches():
    b = Batches({"i": np.arange(10)}, 4, drop_last=True, seed=3)
    assert b.batches_per_epoch == 2
    for e in range(3):
        batches = take(b, 2)
        assert [len(x["i"]) for x in batches] == [4, 4] and b.epoch == e + 1
        assert len(set(np.concatenate([x["i"] for x in batches]).tolist())) == 8
    whole = Batches({"i": np.arange(5)}, 64)
    assert [sorted(x["i"].tolist()) for x in take(whole, 2)] == [list(range(5))] * 2 and whole.epoch == 2
    with pytest.raises(DataError, match="batch_size 64 exceeds the 5 samples and drop_last would drop them all"):
        Batches({"i": np.arange(5)}, 64, drop_last=True)


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_batch_size_must_be_a_positive_int(bad):
    with pytest.raises(DataError, match="batch_size must be a positive integer"):
        Batches({"i": np.arange(5)}, bad)


def test_batches_reject_misaligned_arrays():
    with pytest.raises(DataError, match="x: 3, y: 4"):
        Batches({"x": np.zeros(3), "y": np.zeros(4)}, 2)


@pytest.mark.parametrize(("consumed", "drop_last"), [(0, False), (2, False), (3, False), (5, False), (4, True)])
def test_restored_batcher_continues_exactly_across_epoch_boundaries(tmp_path, consumed, drop_last):
    data = {"i": np.arange(11), "x": np.random.default_rng(0).normal(size=(11, 3))}
    original = Batches(data, 4, seed=7, drop_last=drop_last)
    take(original, consumed)
    state = save_roundtrip(tmp_path, original.state())
    assert all(isinstance(v, np.ndarray) and v.dtype != object for v in state.values())
    resumed = Batches(data, 4, seed=999, drop_last=drop_last)  # the seed is overridden by the state
    resumed.restore(state)
    assert (resumed.epoch, resumed.position) == (original.epoch, original.position)
    for x, y in zip(take(original, 9), take(resumed, 9)):  # 9 batches cross at least two epoch boundaries
        for k in data:
            np.testing.assert_array_equal(x[k], y[k])
    assert resumed.epoch == original.epoch >= 2


def test_restore_rejects_state_of_other_data():
    state = Batches({"i": np.arange(10)}, 3).state()
    with pytest.raises(DataError, match="covers 10 samples, but the data has 12"):
        Batches({"i": np.arange(12)}, 3).restore(state)
    with pytest.raises(DataError, match="batches state lacks rng"):
        Batches({"i": np.arange(10)}, 3).restore({k: v for k, v in state.items() if k != "rng"})


# ---------------------------------------------------------------- Noise and generator state


def test_noise_kinds_shapes_and_seeds():
    normal = Noise("normal", (16,), seed=0).sample(4000)
    assert normal.shape == (4000, 16) and abs(normal.mean()) < 0.02 and abs(normal.std() - 1) < 0.02
    uniform = Noise("uniform", 3, seed=0, dtype="float32").sample(5000)
    assert uniform.shape == (5000, 3) and uniform.dtype == np.float32
    assert uniform.min() >= -1 and uniform.max() < 1 and uniform.min() < -0.99
    np.testing.assert_array_equal(Noise("normal", 2, seed=4).sample(3), Noise("normal", 2, seed=4).sample(3))
    assert not np.array_equal(Noise("normal", 2, seed=4).sample(3), Noise("normal", 2, seed=5).sample(3))
    with pytest.raises(DataError, match=r"unknown noise kind 'normall'; did you mean 'normal'\?"):
        Noise("normall", 2)
    with pytest.raises(DataError, match="noise shape must be positive integers"):
        Noise("normal", (2, 0))


@pytest.mark.parametrize("kind", ["normal", "uniform"])
def test_noise_state_restores_exactly(tmp_path, kind):
    a = Noise(kind, (2, 3), seed=11)
    a.sample(7)
    state = save_roundtrip(tmp_path, a.state())
    b = Noise(kind, (2, 3), seed=0)
    b.restore(state)
    for _ in range(3):
        np.testing.assert_array_equal(a.sample(5), b.sample(5))


def test_rng_encoding_roundtrips_a_generator_mid_stream():
    rng = np.random.default_rng(2**70 + 5)
    rng.random(3)
    rng.integers(0, 10, 1, dtype=np.uint32)  # leaves a buffered 32-bit half word (has_uint32)
    words = rng_to_array(rng)
    assert words.dtype == np.uint64 and words.shape == (6,)
    copy = rng_from_array(words)
    assert copy.bit_generator.state == rng.bit_generator.state
    np.testing.assert_array_equal(copy.random(5), rng.random(5))
