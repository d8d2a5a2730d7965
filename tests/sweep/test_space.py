"""The search space through Optuna: ``suggest`` asks a real trial for every kind of ``Param``,
``decode`` turns what the study stores back into the same values (also for choices of lists and
mappings, which Optuna stores as text), ``as_overrides`` writes them as ``--set`` items that the
override parser of ``onlytorch.fit`` reads back exactly, and ``grid_space`` feeds GridSampler."""

from __future__ import annotations

import itertools
import json
import math
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from onlytorch.app import load_spec
from onlytorch.spec.overrides import parse
from onlytorch.sweep.space import Param, as_overrides, decode, flow, grid_size, grid_space, suggest

optuna = pytest.importorskip("optuna")
optuna.logging.set_verbosity(optuna.logging.WARNING)

XOR = pathlib.Path(__file__).resolve().parents[2] / "specs" / "xor.yaml"

PARAMS = [
    Param("optimizers.opt.lr", "loguniform", 1e-4, 1e-1, None, True),
    Param("optimizers.opt.eps", "uniform", 0.0, 0.5),
    Param("train.stepped", "uniform", 0.1, 0.9, 0.2),
    Param("data.batch_size", "int", 8, 64),
    Param("data.batch_size_log", "int", 1, 1000, None, True),
    Param("modules.net.0.linear", "int", 4, 16, 4),
    Param("modules.net.1", "choice", choices=["tanh", "relu", 3, 0.5, True, None]),
    Param("optimizers.opt.betas", "choice", choices=[[0.5, 0.999], [0.0, 0.9]]),
    Param("some.mapping", "choice", choices=[{"type": "adam", "lr": 0.01}, {"type": "sgd"}, 7]),
]


def study(sampler: object | None = None, storage: str | None = None) -> object:
    return optuna.create_study(sampler=sampler or optuna.samplers.RandomSampler(seed=0), storage=storage)


def check_value(p: Param, v: object) -> None:
    if p.kind in ("loguniform", "uniform"):
        assert isinstance(v, float) and p.low <= v <= p.high
        if p.step is not None:
            k = (v - p.low) / p.step
            assert abs(k - round(k)) < 1e-9
    elif p.kind == "int":
        assert isinstance(v, int) and not isinstance(v, bool) and p.low <= v <= p.high
        assert (v - p.low) % (p.step or 1) == 0
    else:
        assert v in (p.choices or [])
        assert type(v) is type(next(c for c in p.choices or [] if c == v and type(c) is type(v)))


def test_suggest_and_decode_round_trip_through_a_stored_study(tmp_path: pathlib.Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"  # what a shared study stores, read back by another process
    s = study(storage=storage)
    suggested = []
    for _ in range(40):
        trial = s.ask()
        values = suggest(trial, PARAMS)
        assert list(values) == [p.path for p in PARAMS]
        for p in PARAMS:
            check_value(p, values[p.path])
        s.tell(trial, 0.0)
        suggested.append(values)
    again = optuna.load_study(study_name=s.study_name, storage=storage)
    for frozen, values in zip(again.trials, suggested):
        assert decode(PARAMS, frozen.params) == values
        # lists and mappings are held by Optuna as their flow-YAML text
        assert frozen.params["optimizers.opt.betas"] in ("[0.5, 0.999]", "[0.0, 0.9]")
    seen = {p.path: {json.dumps(v[p.path]) for v in suggested} for p in PARAMS if p.kind == "choice"}
    for p in PARAMS:
        if p.kind == "choice":
            assert seen[p.path] == {json.dumps(c) for c in p.choices or []}, p.path  # every item drawn in 40 trials
    bools = [v["modules.net.1"] for v in suggested if v["modules.net.1"] is True]
    assert bools and all(b is True for b in bools)


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_the_model_based_samplers_take_the_space(sampler: str) -> None:
    make = {
        "tpe": lambda: optuna.samplers.TPESampler(seed=0, n_startup_trials=2),
        "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=0, n_startup_trials=2, warn_independent_sampling=False),
    }
    s = study(make[sampler]())
    for i in range(6):
        trial = s.ask()
        values = suggest(trial, PARAMS)
        s.tell(trial, float(values["data.batch_size"]) + i)
        assert decode(PARAMS, s.trials[-1].params) == values


def test_a_trial_enqueued_with_stored_params_gets_the_same_values() -> None:
    # a retry re-enqueues a failed trial's stored params: decode must give the same values back
    s = study()
    first = s.ask()
    values = suggest(first, PARAMS)
    s.tell(first, state=optuna.trial.TrialState.FAIL)
    s.enqueue_trial(s.trials[0].params)
    assert suggest(s.ask(), PARAMS) == values


def test_decode_refuses_what_is_not_the_space() -> None:
    with pytest.raises(KeyError, match=r"optimizers\.opt\.lr"):
        decode(PARAMS[:1], {})
    with pytest.raises(ValueError, match="none of the choices"):
        decode([PARAMS[7]], {"optimizers.opt.betas": "[0.1, 0.2]"})
    assert decode([PARAMS[3]], {"data.batch_size": 12.0}) == {"data.batch_size": 12}


def test_overrides_are_read_back_by_fit_s_parser() -> None:
    values = {p.path: v for p, v in zip(PARAMS, [1e-5, 0.25, 0.3, 16, 999, 8, None, [0.5, 0.999], {"type": "sgd"}])}
    values["a.string"] = "1e-3"  # a string that looks like a number stays a string
    values["a.bool_like"] = "yes"
    items = as_overrides(values)
    assert items[0] == "optimizers.opt.lr=1.0e-05"
    assert dict(parse(i) for i in items) == values
    assert [type(parse(i)[1]) for i in items[-2:]] == [str, str]


def test_fit_compiles_a_trial_s_overrides() -> None:
    values = {"optimizers.opt.lr": 0.0123456789012345, "optimizers.opt.betas": [0.5, 0.99], "modules.net.1": "relu"}
    spec = load_spec(XOR, overrides=as_overrides(values)).compiled.spec
    assert spec.optimizers["opt"].lr == 0.0123456789012345  # exact: the same float, not a rounded text
    assert list(spec.optimizers["opt"].betas) == [0.5, 0.99]
    assert spec.modules["net"].layers[1] == "relu"


finite = st.floats(allow_nan=False)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**60), max_value=2**60),
    finite,
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=20),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_flow_text_reads_back_as_the_same_value(value: object) -> None:
    key, back = parse(f"k={flow(value)}")
    assert key == "k"
    assert back == value and type(back) is type(value)
    assert "\n" not in flow(value)  # one line: a trials.csv cell, a --set item


def test_grid_space_enumerates_each_param_as_optuna_stores_it() -> None:
    grid = [PARAMS[2], PARAMS[5], PARAMS[7], Param("x", "int", 1, 3)]
    space = grid_space(grid)
    assert space == {
        "train.stepped": pytest.approx([0.1, 0.3, 0.5, 0.7, 0.9]),
        "modules.net.0.linear": [4, 8, 12, 16],
        "optimizers.opt.betas": ["[0.5, 0.999]", "[0.0, 0.9]"],
        "x": [1, 2, 3],
    }
    assert space["train.stepped"][-1] == 0.9  # the last point is high itself, not high plus rounding
    assert grid_size(grid) == 5 * 4 * 2 * 3
    with pytest.raises(ValueError, match="no grid"):
        grid_space([PARAMS[0]])


def test_the_grid_sampler_visits_every_point_once() -> None:
    grid = [PARAMS[5], PARAMS[7], Param("x", "uniform", 0.0, 1.0, 0.5)]
    s = study(optuna.samplers.GridSampler(grid_space(grid), seed=0))
    seen = []
    n = grid_size(grid)
    for i in range(n):
        trial = s.ask()
        values = suggest(trial, grid)
        if i < n - 1:
            s.tell(trial, 0.0)
        else:  # GridSampler stops the study after its last point, which raises outside study.optimize ...
            with pytest.raises(RuntimeError, match=r"Study\.stop"):
                s.tell(trial, 0.0)
        seen.append(json.dumps(values, sort_keys=True))
    assert [t.state for t in s.trials] == [optuna.trial.TrialState.COMPLETE] * n  # ... after storing the trial
    everything = [
        json.dumps(dict(zip([p.path for p in grid], combo)), sort_keys=True)
        for combo in itertools.product([4, 8, 12, 16], [[0.5, 0.999], [0.0, 0.9]], [0.0, 0.5, 1.0])
    ]
    assert sorted(seen) == sorted(everything)


def test_param_json_is_plain() -> None:
    for p in PARAMS:
        data = p.to_json()
        assert json.loads(json.dumps(data)) == data and data["path"] == p.path
    assert math.isclose(PARAMS[0].to_json()["low"], 1e-4)
