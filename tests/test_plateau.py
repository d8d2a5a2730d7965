"""ot.optim.ReduceLROnPlateau, checked against torch.optim.lr_scheduler.ReduceLROnPlateau on the same
sequences of monitored values: the lr after every step, exactly."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import onlytorch as ot
from onlytorch import optim
from onlytorch.errors import GraphError

LR = 0.1


def make_opt(cls=optim.SGD, lr=LR):
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", value=np.ones(3))
    return cls(g, [w], lr=lr)


def sequences() -> dict[str, list[float]]:
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=60)) + 100.0
    noisy_decay = 1.0 / np.arange(1, 61) + 0.02 * rng.normal(size=60)
    return {
        "random_walk": walk.tolist(),
        "noisy_decay": noisy_decay.tolist(),
        "negative": (-np.abs(walk)).tolist(),  # rel thresholds on negative values
        "flat": [0.5] * 40,
        "tiny_steps": [1.0 - 1e-5 * i for i in range(40)],  # improvements below a rel threshold of 1e-4
        "with_nan": [1.0, 0.9, math.nan, 0.95, math.nan, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91, 0.92] * 3,
        "rising": list(np.linspace(0.0, 1.0, 40)),
    }


CASES = [
    {},  # torch's defaults: factor 0.1, patience 10, threshold 1e-4 rel, no cooldown
    {"factor": 0.5, "patience": 2},
    {"factor": 0.5, "patience": 0},
    {"factor": 0.7, "patience": 3, "cooldown": 2},
    {"factor": 0.5, "patience": 1, "threshold": 0.05, "threshold_mode": "abs"},
    {"factor": 0.3, "patience": 2, "threshold": 0.01, "threshold_mode": "rel", "min_lr": 0.004},
    {"factor": 0.5, "patience": 1, "min_lr": 0.0999, "eps": 1e-6},  # a reduction by less than eps is skipped
    {"factor": 0.0, "patience": 2, "cooldown": 1, "min_lr": 1e-3},
    {"factor": 0.9, "patience": 1, "eps": 0.0, "threshold": 0.0},
]


def ours(kw: dict, mode: str, values: list[float]) -> list[float]:
    opt = make_opt()
    sched = optim.ReduceLROnPlateau(opt, **kw)
    sched.mode = mode
    out = []
    for v in values:
        sched.step(v)
        assert sched.get_last_lr() == opt.lr
        out.append(opt.lr)
    return out


def theirs(kw: dict, mode: str, values: list[float]) -> list[float]:
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=LR)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, mode=mode, **kw)
    out = []
    for v in values:
        sched.step(v)
        out.append(topt.param_groups[0]["lr"])
    return out


@pytest.mark.parametrize("mode", ["min", "max"])
@pytest.mark.parametrize("kw", CASES, ids=lambda kw: "-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")
def test_lr_after_every_step_is_torchs(kw, mode):
    reduced = 0
    for name, values in sequences().items():
        a, b = ours(kw, mode, values), theirs(kw, mode, values)
        assert a == b, (name, a, b)
        reduced += a[-1] < LR
    assert reduced, "no sequence lowered the lr: the case tests nothing"


def test_counters_follow_torchs():
    values = sequences()["with_nan"]
    opt = make_opt()
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=2, cooldown=1)
    p = torch.zeros(1, requires_grad=True)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(torch.optim.SGD([p], lr=LR), factor=0.5, patience=2, cooldown=1)
    for v in values:
        sched.step(v)
        tsched.step(v)
        assert (sched.best, sched.num_bad_epochs, sched.cooldown_counter, sched.last_epoch) == (
            tsched.best,
            tsched.num_bad_epochs,
            tsched.cooldown_counter,
            tsched.last_epoch,
        )


def test_state_dict_resumes_bit_for_bit(tmp_path):
    values = sequences()["noisy_decay"]
    kw = {"factor": 0.5, "patience": 2, "cooldown": 1, "threshold_mode": "abs", "threshold": 1e-3}
    reference = ours(kw, "max", values)

    opt1 = make_opt(optim.Adam)
    sched1 = optim.ReduceLROnPlateau(opt1, **kw)
    sched1.mode = "max"
    first = []
    for v in values[:23]:
        sched1.step(v)
        first.append(opt1.lr)
    np.savez(tmp_path / "sched.npz", **sched1.state_dict())

    opt2 = make_opt(optim.Adam, lr=0.5)  # another lr: the saved state brings the current one
    sched2 = optim.ReduceLROnPlateau(opt2, factor=0.1)  # other hyper-parameters: the saved ones win
    with np.load(tmp_path / "sched.npz", allow_pickle=False) as f:
        sched2.load_state_dict(f)
    assert (sched2.mode, sched2.best, sched2.num_bad_epochs, sched2.cooldown_counter) == (
        "max",
        sched1.best,
        sched1.num_bad_epochs,
        sched1.cooldown_counter,
    )
    assert sched2.threshold_mode == "abs" and sched2.factor == 0.5 and opt2.lr == opt1.lr
    rest = []
    for v in values[23:]:
        sched2.step(v)
        rest.append(opt2.lr)
    assert first + rest == reference


def test_steps_without_a_value_change_nothing():
    opt = make_opt()
    sched = optim.ReduceLROnPlateau(opt, patience=0)
    assert opt.lr == LR and sched.lr_at(0) == LR and sched.mode == "min"
    for _ in range(5):
        opt.step()
        sched.step()  # the trainer's call after every optimizer step
    assert opt.lr == LR and sched.last_epoch == 0 and sched.best == math.inf
    sched.step(1.0)
    sched.step(2.0)
    assert opt.lr == pytest.approx(LR * 0.1) and sched.last_epoch == 2
    with pytest.raises(GraphError, match="depends on the monitored values"):
        sched.lr_at(1)


def test_mode():
    sched = optim.ReduceLROnPlateau(make_opt())
    sched.mode = "max"
    assert sched.best == -math.inf
    with pytest.raises(GraphError, match=r"mode must be one of min, max, got 'maxx'; did you mean 'max'\?"):
        sched.mode = "maxx"
    sched.step(1.0)
    with pytest.raises(GraphError, match="set mode before the first step"):
        sched.mode = "min"


def test_errors():
    opt = make_opt()
    cases = [
        (lambda: optim.ReduceLROnPlateau(opt, factor=1.0), r"factor must be a finite number in \[0, 1\), got 1.0"),
        (lambda: optim.ReduceLROnPlateau(opt, factor=-0.1), r"factor must be a finite number in \[0, 1\)"),
        (lambda: optim.ReduceLROnPlateau(opt, patience=-1), r"patience must be an integer >= 0, got -1"),
        (lambda: optim.ReduceLROnPlateau(opt, cooldown=1.5), r"cooldown must be an integer >= 0, got 1.5"),
        (lambda: optim.ReduceLROnPlateau(opt, threshold=-1e-4), r"threshold must be a finite number >= 0.0"),
        (
            lambda: optim.ReduceLROnPlateau(opt, threshold_mode="abss"),
            r"threshold_mode must be one of rel, abs, got 'abss'; did you mean 'abs'\?",
        ),
        (lambda: optim.ReduceLROnPlateau(opt, min_lr=-1.0), r"min_lr must be a finite number >= 0.0"),
        (lambda: optim.ReduceLROnPlateau(opt, eps=math.nan), r"eps must be a finite number"),
    ]
    for make, pattern in cases:
        with pytest.raises(GraphError, match=f"ReduceLROnPlateau: {pattern}"):
            make()
    with pytest.raises(TypeError, match="unexpected keyword argument 'mode'"):
        optim.ReduceLROnPlateau(opt, mode="max")  # the mode is set apart (a spec's is its monitor's)
    assert opt.lr == LR


def test_load_errors():
    sched = optim.ReduceLROnPlateau(make_opt())
    good = sched.state_dict()
    cases = [
        ({**good, "mode": np.array("up")}, r"'mode' holds text 'up', not min or max"),
        ({**good, "best": np.array(math.nan)}, r"'best' holds nan \(float64\), not a finite number"),
        ({**good, "best": np.array(-math.inf)}, r"'best' holds -inf"),  # not the worst of mode min
        ({**good, "num_bad_epochs": np.array(-1)}, r"'num_bad_epochs' must be an integer >= 0"),
        ({**good, "cooldown_counter": np.array(0.5)}, r"'cooldown_counter' must be an integer >= 0"),
        ({**good, "hyper/threshold_mode": np.array(1.0)}, r"'hyper/threshold_mode' holds 1.0 \(float64\), not a name"),
        ({**good, "hyper/threshold_mode": np.array("abz")}, r"threshold_mode must be one of rel, abs"),
        ({k: v for k, v in good.items() if k != "cooldown_counter"}, r"missing entries \['cooldown_counter'\]"),
    ]
    for state, pattern in cases:
        with pytest.raises(GraphError, match=pattern):
            sched.load_state_dict(state)
    sched.load_state_dict(good)


def test_registered_and_not_a_loss_weight_schedule():
    assert optim.SCHEDULES["reduce_on_plateau"] is optim.ReduceLROnPlateau
    assert not optim.ReduceLROnPlateau.closed_form
    assert all(cls.closed_form for name, cls in optim.SCHEDULES.items() if name != "reduce_on_plateau")
