"""load_sweep on valid sweep files: the contract's ``Sweep`` fields, their defaults, ``identity()``,
the base spec's path (relative to the sweep file, allowed outside its folder, a regular file), and
that what a Sweep hands the runner (``fixed`` with a trial's overrides) compiles as a spec."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import time

import pytest

from onlytorch.app import load_spec
from onlytorch.sweep.load import SpecDiagnostic, Sweep, load_sweep
from onlytorch.sweep.space import Param, as_overrides, grid_size

ROOT = pathlib.Path(__file__).resolve().parents[2]
VALID = pathlib.Path(__file__).resolve().parent / "valid"
XOR = ROOT / "specs" / "xor.yaml"

FIELDS = [
    "file",
    "sha256",
    "name",
    "spec",
    "fixed",
    "params",
    "trials",
    "seeds",
    "sampler",
    "pruner",
    "metric",
    "split",
    "mode",
    "direction",
    "objective",
    "max_failures",
]


def write(folder: pathlib.Path, text: str, name: str = "s.yaml") -> pathlib.Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def ok(path: pathlib.Path) -> Sweep:
    sweep, report = load_sweep(path)
    assert sweep is not None, report.render()
    assert not report.errors
    return sweep


def errors(path: pathlib.Path) -> list[tuple[str, int | None, int | None]]:
    sweep, report = load_sweep(path)
    assert sweep is None
    return [(d.code, d.line, d.column) for d in report.sorted()]


def test_the_sweep_has_exactly_the_contract_s_fields_and_is_frozen() -> None:
    assert [f.name for f in dataclasses.fields(Sweep)] == FIELDS
    sweep = ok(VALID / "xor_seeds.yaml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        sweep.trials = 3  # type: ignore[misc]


def test_a_full_sweep_file_resolves_every_field() -> None:
    path = VALID / "xor_search.yaml"
    sweep = ok(path)
    assert sweep.file == path.resolve() and sweep.file.is_absolute()
    assert sweep.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert sweep.name == "xor-search"
    assert sweep.spec == XOR.resolve()
    assert sweep.fixed == [
        "train.steps=60",
        "train.eval_every=20",
        "train.monitor={metric: accuracy, split: test, mode: max}",
    ]
    assert sweep.params == [
        Param("optimizers.opt.lr", "loguniform", 1e-3, 1e-1, None, True),
        Param("optimizers.opt.eps", "uniform", 1e-9, 1e-7, None, False),
        Param("optimizers.opt.betas", "choice", choices=[[0.9, 0.999], [0.5, 0.99]]),
        Param("data.batch_size", "int", 8, 64, None, True),
        Param("modules.net.0.linear", "int", 4, 12, 4, False),
        Param("modules.net.1", "choice", choices=["tanh", "relu", "sigmoid"]),
    ]
    assert all(isinstance(v, int) for p in sweep.params if p.kind == "int" for v in (p.low, p.high))
    assert (sweep.trials, sweep.seeds, sweep.max_failures) == (6, [0, 2], 2)
    assert sweep.sampler == {"type": "random", "seed": 3}
    assert sweep.pruner == {"type": "successive_halving", "min_resource": 20, "reduction_factor": 3}
    assert (sweep.metric, sweep.split, sweep.mode, sweep.direction) == ("accuracy", "test", "max", "maximize")
    assert sweep.objective == "final"


def test_defaults_come_from_the_base_spec_and_the_file_name(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, XOR.read_text().replace("seed: 0", "seed: 7"), "base.yaml")
    assert "seed: 7" in spec.read_text()
    path = write(
        tmp_path,
        "version: 1\nspec: base.yaml\ntrials: 5\nspace:\n  optimizers.opt.lr: {uniform: [0.01, 0.1]}\n",
        "my-sweep.yaml",
    )
    sweep = ok(path)
    assert sweep.name == "my-sweep"
    assert sweep.seeds == [7]  # the base spec's seed
    assert sweep.fixed == []  # no set, no monitor: nothing fixed
    # xor's monitor: its first loss, on its eval split, minimised
    assert (sweep.metric, sweep.split, sweep.mode, sweep.direction) == ("loss", "test", "min", "minimize")
    assert sweep.objective == "best" and sweep.max_failures == 5
    assert sweep.sampler == {"type": "tpe", "seed": 0, "n_startup_trials": 10}
    assert sweep.pruner == {"type": "none"}


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("{type: cmaes, seed: 4}", {"type": "cmaes", "seed": 4, "n_startup_trials": 1}),
        ("{type: tpe, n_startup_trials: 3}", {"type": "tpe", "seed": 0, "n_startup_trials": 3}),
        ("{type: grid}", {"type": "grid", "seed": 0}),
    ],
)
def test_sampler_options(tmp_path: pathlib.Path, text: str, want: dict[str, object]) -> None:
    path = write(
        tmp_path, f"version: 1\nspec: {XOR}\ntrials: 2\nsampler: {text}\nspace:\n  train.steps: {{choice: [10, 20]}}\n"
    )
    assert ok(path).sampler == want


def test_pruner_defaults(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path,
        f"version: 1\nspec: {XOR}\ntrials: 2\nset: {{train.eval_every: 5}}\npruner: {{type: median}}\n"
        "space:\n  train.steps: {choice: [10, 20]}\n",
    )
    assert ok(path).pruner == {"type": "median", "startup_trials": 5, "warmup_steps": 0}
    path.write_text(path.read_text().replace("{type: median}", "{type: successive_halving}"))
    assert ok(path).pruner == {"type": "successive_halving", "min_resource": "auto", "reduction_factor": 4}


def test_a_seed_study_is_one_trial_over_its_seeds(tmp_path: pathlib.Path) -> None:
    sweep = ok(VALID / "xor_seeds.yaml")
    assert (sweep.params, sweep.trials, sweep.seeds) == ([], 1, [0, 1, 2])
    path = write(tmp_path, f"version: 1\nspec: {XOR}\nseeds: [3, 7]\nspace: {{}}\ntrials: 1\n")
    assert ok(path).seeds == [3, 7]


def test_a_grid_sweep_runs_its_grid_once_by_default() -> None:
    sweep = ok(VALID / "xor_grid.yaml")
    assert sweep.trials == grid_size(sweep.params) == 2 * 3 * 2
    assert sweep.max_failures == 12


def test_identity_is_json_and_ignores_only_trials(tmp_path: pathlib.Path) -> None:
    text = (VALID / "xor_search.yaml").read_text().replace("../../../specs/xor.yaml", str(XOR))
    a = ok(write(tmp_path / "a", text))
    ident = a.identity()
    assert set(ident) == {
        "spec",
        "fixed",
        "params",
        "seeds",
        "sampler",
        "pruner",
        "metric",
        "split",
        "mode",
        "objective",
    }
    assert json.loads(json.dumps(ident)) == ident  # plain data: equal to what sweep.json reads back
    assert ident["spec"] == str(XOR.resolve())
    assert ident["params"][2]["choices"] == [[0.9, 0.999], [0.5, 0.99]]
    more = ok(write(tmp_path / "b", text.replace("trials: 6", "trials: 60")))
    assert more.trials == 60 and more.identity() == ident  # more trials continue the same study
    for old, new in [
        ("seeds: [0, 2]", "seeds: [0, 1]"),
        ("[1.0e-3, 1.0e-1]", "[1.0e-3, 2.0e-1]"),
        ("seed: 3", "seed: 4"),
        ("objective: final", "objective: best"),
        ("train.steps: 60", "train.steps: 61"),
        ("reduction_factor: 3", "reduction_factor: 2"),
    ]:
        assert old in text
        other = ok(write(tmp_path / "c", text.replace(old, new)))
        assert other.identity() != ident, old


def test_the_spec_path_is_relative_to_the_sweep_file_and_may_leave_its_folder(tmp_path: pathlib.Path) -> None:
    write(tmp_path / "specs", XOR.read_text(), "x.yaml")
    body = "version: 1\nspec: {}\nseeds: 2\n"
    deep = write(tmp_path / "sweeps" / "deep", body.format("../../specs/x.yaml"))
    other_cwd = tmp_path / "elsewhere"
    other_cwd.mkdir()
    old = os.getcwd()
    os.chdir(other_cwd)  # relative to the sweep file, not to the current directory
    try:
        assert ok(deep).spec == (tmp_path / "specs" / "x.yaml").resolve()
    finally:
        os.chdir(old)
    absolute = write(tmp_path / "z", body.format(tmp_path / "specs" / "x.yaml"))
    assert ok(absolute).spec == (tmp_path / "specs" / "x.yaml").resolve()


def test_the_base_spec_must_be_a_regular_file(tmp_path: pathlib.Path) -> None:
    (tmp_path / "adir.yaml").mkdir()
    path = write(tmp_path, "version: 1\nspec: adir.yaml\nseeds: 2\n")
    sweep, report = load_sweep(path)
    assert sweep is None and [(d.code, d.line) for d in report.items] == [("E-SWEEP-SPEC", 2)]
    assert "a directory" in report.items[0].message
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.yaml")
        path.write_text("version: 1\nspec: fifo.yaml\nseeds: 2\n")
        start = time.monotonic()
        sweep, report = load_sweep(path)  # refused without waiting for a writer
        assert time.monotonic() - start < 5
        assert sweep is None and "FIFO" in report.items[0].message


def test_the_sweep_file_itself_is_checked_like_a_spec(tmp_path: pathlib.Path) -> None:
    sweep, report = load_sweep(tmp_path / "missing.yaml")
    assert (
        sweep is None and report.items[0].code == "E-YAML" and "cannot read the sweep file" in report.items[0].message
    )
    assert errors(write(tmp_path, "- a list\n")) == [("E-TYPE", 1, 1)]
    (tmp_path / "bin.yaml").write_bytes(b"version: 1\nspec: \xff\n")
    assert errors(tmp_path / "bin.yaml") == [("E-YAML", 2, 7)]
    (tmp_path / "big.yaml").write_bytes(b"#" * (2 * 1024 * 1024))
    sweep, report = load_sweep(tmp_path / "big.yaml")
    assert sweep is None and "limit" in report.items[0].message


def test_a_name_from_a_file_name_that_is_not_a_name_is_refused(tmp_path: pathlib.Path) -> None:
    path = write(tmp_path, f"version: 1\nspec: {XOR}\nseeds: 2\n", "my sweep.yaml")
    sweep, report = load_sweep(path)
    assert sweep is None and report.items[0].code == "E-TYPE" and "add name:" in (report.items[0].hint or "")
    path.write_text(path.read_text() + "name: fine\n")
    assert ok(path).name == "fine"


def test_the_base_spec_s_own_problems_are_located_in_it(tmp_path: pathlib.Path) -> None:
    spec = write(tmp_path, XOR.read_text().replace("seed: 0", "seed: !!python/name:os.system"), "base.yaml")
    path = write(tmp_path, "version: 1\nspec: base.yaml\nseeds: 2\n")
    sweep, report = load_sweep(path)
    assert sweep is None
    inside = [d for d in report.items if isinstance(d, SpecDiagnostic)]
    assert [(d.code, d.line, d.column, d.file) for d in inside] == [("E-SWEEP-SPEC", 6, 7, str(spec))]
    assert "(E-YAML-TAG)" in inside[0].message
    assert [(d.code, d.line) for d in report.items if not isinstance(d, SpecDiagnostic)] == [("E-SWEEP-SPEC", 2)]


def test_a_value_written_by_set_that_breaks_the_spec_is_reported_at_set(tmp_path: pathlib.Path) -> None:
    # schema-valid, but the data has 2 features: only compiling tells, and it is set's fault
    path = write(tmp_path, f"version: 1\nspec: {XOR}\nseeds: 2\nset:\n  inputs.x.shape: [3]\n")
    sweep, report = load_sweep(path)
    assert sweep is None
    assert [(d.line, d.column) for d in report.errors] == [(5, 19)], report.render()
    assert report.errors[0].message.startswith("set inputs.x.shape: ")
    assert "--set" not in report.errors[0].message


def test_what_a_sweep_hands_the_runner_compiles(tmp_path: pathlib.Path) -> None:
    sweep = ok(VALID / "xor_search.yaml")
    values = {
        "optimizers.opt.lr": 0.0123,
        "optimizers.opt.eps": 3.0e-8,
        "optimizers.opt.betas": [0.5, 0.99],
        "data.batch_size": 16,
        "modules.net.0.linear": 12,
        "modules.net.1": "relu",
    }
    loaded = load_spec(sweep.spec, seed=2, overrides=[*sweep.fixed, *as_overrides(values)])
    spec = loaded.compiled.spec
    opt = spec.optimizers["opt"]
    assert (opt.lr, opt.eps, list(opt.betas)) == (0.0123, 3.0e-8, [0.5, 0.99])
    assert spec.data.batch_size == 16 and spec.train.steps == 60 and spec.train.eval_every == 20
    assert spec.train.monitor.metric == "accuracy" and spec.train.monitor.mode == "max"
    assert spec.seed == 2


def test_plain_exponents_in_a_choice_are_numbers_and_quoted_ones_strings(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path, f"version: 1\nspec: {XOR}\ntrials: 2\nspace:\n  optimizers.opt.lr: {{choice: [1e-3, '1e-2', 0.5]}}\n"
    )
    (param,) = ok(path).params
    assert param.choices == [0.001, "1e-2", 0.5]


def test_loading_is_fast() -> None:
    start = time.monotonic()
    for _ in range(3):
        ok(VALID / "xor_search.yaml")
    assert (time.monotonic() - start) / 3 < 2.0


def test_a_base_spec_that_is_not_yaml_gives_no_cascade_of_path_errors(tmp_path: pathlib.Path) -> None:
    write(tmp_path, "version: 1\nname: [unclosed\n", "base.yaml")
    path = write(
        tmp_path,
        "version: 1\nspec: base.yaml\ntrials: 2\nset:\n  train.steps: 5\nspace:\n  optimizers.opt.lr: {uniform: [0.1, 0.2]}\n",
    )
    sweep, report = load_sweep(path)
    assert sweep is None
    assert [(d.code, isinstance(d, SpecDiagnostic)) for d in report.sorted()] == [
        ("E-SWEEP-SPEC", False),
        ("E-SWEEP-SPEC", True),
    ]
    assert "(E-YAML)" in report.sorted()[1].message
