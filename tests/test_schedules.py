"""ot.optim learning-rate schedules, checked against torch.optim.lr_scheduler."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

import onlytorch as ot
from onlytorch import optim
from onlytorch.errors import GraphError

LR = 0.1
STEPS = 30

TORCH_CASES = [
    ("step_lr", {"step_size": 7}),
    ("step_lr", {"step_size": 4, "gamma": 0.5}),
    ("exponential_lr", {"gamma": 0.9}),
    ("cosine_annealing_lr", {"T_max": 30}),
    ("cosine_annealing_lr", {"T_max": 10, "eta_min": 0.01}),  # 30 steps: past T_max, up again and down
    ("linear_lr", {}),
    ("linear_lr", {"start_factor": 0.1, "end_factor": 0.8, "total_iters": 12}),
]
TORCH = {
    "step_lr": torch.optim.lr_scheduler.StepLR,
    "exponential_lr": torch.optim.lr_scheduler.ExponentialLR,
    "cosine_annealing_lr": torch.optim.lr_scheduler.CosineAnnealingLR,
    "linear_lr": torch.optim.lr_scheduler.LinearLR,
}
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in TORCH_CASES]


def make_opt(cls=optim.SGD, **kw):
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", value=np.ones(3))
    return g, w, cls(g, [w], lr=LR, **kw)


def our_lrs(sched, opt, n=STEPS):
    """The lr in effect for each of n optimizer steps (starting with the one set at construction)."""
    out = []
    for _ in range(n):
        out.append(opt.lr)
        assert sched.get_last_lr() == opt.lr
        opt.step()
        sched.step()
    return out


def torch_lrs(name, kw, n=STEPS):
    p = torch.zeros(3, requires_grad=True)
    topt = torch.optim.SGD([p], lr=LR)
    sched = TORCH[name](topt, **kw)
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(n):
            out.append(topt.param_groups[0]["lr"])
            assert sched.get_last_lr() == [topt.param_groups[0]["lr"]]
            topt.step()
            sched.step()
    return out


@pytest.mark.parametrize(("name", "kw"), TORCH_CASES, ids=IDS)
def test_lr_sequence_matches_torch(name, kw):
    _, _, opt = make_opt()
    sched = optim.SCHEDULES[name](opt, **kw)
    ours, theirs = our_lrs(sched, opt), torch_lrs(name, kw)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    assert len(set(np.round(ours, 12))) > 1
    assert [sched.lr_at(t) for t in range(STEPS)] == ours


def test_schedule_drives_training_like_torch():
    """SGD with momentum under StepLR: the schedule's lr is the one each step uses, as in torch."""
    rng = np.random.default_rng(0)
    x_val, w_val = rng.normal(size=(5, 3)), rng.normal(size=(3, 2))
    g = ot.Graph(dtype="float64")
    w = g.parameter("w", value=w_val)
    x = g.input("x", shape=(None, 3))
    g.set_value(x, x_val)
    loss = g.mean(g.tanh(g.matmul(x, w)) ** 2)
    opt = optim.SGD(g, [w], lr=0.5, momentum=0.9)
    sched = optim.StepLR(opt, step_size=3, gamma=0.5)
    tw = torch.tensor(w_val, requires_grad=True)
    topt = torch.optim.SGD([tw], lr=0.5, momentum=0.9, foreach=False)
    tsched = torch.optim.lr_scheduler.StepLR(topt, step_size=3, gamma=0.5)
    for _ in range(20):
        g.forward_node(loss)
        g.backward_nodes([w], loss)
        opt.step()
        g.clear_jacobi()
        sched.step()
        topt.zero_grad()
        (torch.tanh(torch.tensor(x_val) @ tw) ** 2).mean().backward()
        topt.step()
        tsched.step()
        np.testing.assert_allclose(g.get_node_value(w), tw.detach().numpy(), rtol=0, atol=1e-12)
        assert opt.lr == pytest.approx(tsched.get_last_lr()[0], abs=1e-15)


def warmup_cosine(t, base, warmup, total, eta_min):
    if t < warmup:
        return base * t / warmup
    if t >= total:
        return eta_min
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * (t - warmup) / (total - warmup)))


@pytest.mark.parametrize(
    ("warmup", "total", "eta_min"), [(5, 25, 0.0), (5, 25, 0.01), (0, 20, 0.0), (1, 2, 0.0), (10, 11, 0.02)]
)
def test_warmup_cosine(warmup, total, eta_min):
    _, _, opt = make_opt()
    sched = optim.WarmupCosine(opt, warmup_steps=warmup, total_steps=total, eta_min=eta_min)
    ours = our_lrs(sched, opt)
    expected = [warmup_cosine(t, LR, warmup, total, eta_min) for t in range(STEPS)]
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-15)
    assert ours[0] == (0.0 if warmup else LR)
    assert max(ours) == pytest.approx(LR)
    assert ours[-1] == eta_min
    assert ours[warmup] == LR  # the warmup ends at the base lr, where the cosine starts
    # the same as torch's LambdaLR with that multiplier
    p = torch.zeros(1, requires_grad=True)
    topt = torch.optim.SGD([p], lr=LR)
    tsched = torch.optim.lr_scheduler.LambdaLR(topt, lambda t: warmup_cosine(t, LR, warmup, total, eta_min) / LR)
    theirs = []
    for _ in range(STEPS):
        theirs.append(topt.param_groups[0]["lr"])
        topt.step()
        tsched.step()
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-15)


def test_construction_sets_the_first_lr_and_keeps_the_base():
    _, _, opt = make_opt()
    sched = optim.LinearLR(opt, start_factor=0.25, total_iters=4)
    assert opt.lr == pytest.approx(0.025) and sched.base_lr == LR
    _, _, opt = make_opt(optim.Adam)
    optim.WarmupCosine(opt, 3, 10)
    assert opt.lr == 0.0


ALL_CASES = [*TORCH_CASES, ("warmup_cosine", {"warmup_steps": 4, "total_steps": 20, "eta_min": 0.001})]


@pytest.mark.parametrize(("name", "kw"), ALL_CASES, ids=[*IDS, "warmup_cosine"])
def test_state_dict_resume(name, kw, tmp_path):
    _, _, opt = make_opt(optim.Adam)
    reference = our_lrs(optim.SCHEDULES[name](opt, **kw), opt)

    _, _, opt1 = make_opt(optim.Adam)
    sched1 = optim.SCHEDULES[name](opt1, **kw)
    first = our_lrs(sched1, opt1, 12)
    np.savez(tmp_path / "opt.npz", **opt1.state_dict())
    np.savez(tmp_path / "sched.npz", **sched1.state_dict())

    _, _, opt2 = make_opt(optim.Adam)
    opt2.lr = 0.5  # a different base: the saved state brings the right one
    sched2 = optim.SCHEDULES[name](opt2, **kw)
    with np.load(tmp_path / "sched.npz", allow_pickle=False) as f:
        sched2.load_state_dict(f)
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        opt2.load_state_dict(f)
    assert sched2.last_epoch == 12 and sched2.base_lr == LR
    rest = our_lrs(sched2, opt2, STEPS - 12)
    assert first + rest == reference


def test_load_state_dict_sets_the_optimizer_lr():
    _, _, opt = make_opt()
    sched = optim.ExponentialLR(opt, gamma=0.5)
    for _ in range(3):
        sched.step()
    state = sched.state_dict()
    assert str(state["schedule"]) == "exponential_lr"
    assert int(state["last_epoch"]) == 3 and float(state["hyper/gamma"]) == 0.5
    _, _, opt2 = make_opt()
    sched2 = optim.ExponentialLR(opt2, gamma=0.9)
    sched2.load_state_dict(state)
    assert opt2.lr == sched2.get_last_lr() == LR * 0.5**3
    assert sched2.gamma == 0.5
    sched2.step()
    assert opt2.lr == LR * 0.5**4


def test_schedule_errors():
    _, _, opt = make_opt()
    cases = [
        (lambda: optim.StepLR(opt, step_size=0), r"StepLR: step_size must be an integer >= 1, got 0"),
        (lambda: optim.StepLR(opt, step_size=2.5), r"StepLR: step_size must be an integer >= 1, got 2.5"),
        (lambda: optim.StepLR(opt, 3, gamma=-0.1), r"StepLR: gamma must be a finite number >= 0.0, got -0.1"),
        (lambda: optim.ExponentialLR(opt, gamma=float("nan")), r"ExponentialLR: gamma must be a finite number"),
        (lambda: optim.CosineAnnealingLR(opt, T_max=0), r"CosineAnnealingLR: T_max must be an integer >= 1"),
        (lambda: optim.CosineAnnealingLR(opt, 10, eta_min=-1), r"CosineAnnealingLR: eta_min must be"),
        (
            lambda: optim.LinearLR(opt, start_factor=0),
            r"LinearLR: start_factor must be a finite number in \(0.0, 1.0\]",
        ),
        (lambda: optim.LinearLR(opt, start_factor=1.5), r"LinearLR: start_factor must be"),
        (lambda: optim.LinearLR(opt, end_factor=-0.1), r"LinearLR: end_factor must be a finite number in \[0.0, 1.0\]"),
        (lambda: optim.LinearLR(opt, end_factor=1.1), r"LinearLR: end_factor must be"),
        (lambda: optim.LinearLR(opt, total_iters=0), r"LinearLR: total_iters must be an integer >= 1"),
        (lambda: optim.WarmupCosine(opt, 10, 10), r"WarmupCosine: warmup_steps=10 must be less than total_steps=10"),
        (lambda: optim.WarmupCosine(opt, -1, 10), r"WarmupCosine: warmup_steps must be an integer >= 0"),
        (lambda: optim.WarmupCosine(opt, 0, 0), r"WarmupCosine: total_steps must be an integer >= 1"),
        (lambda: optim.WarmupCosine(opt, 1, 10, eta_min=-0.1), r"WarmupCosine: eta_min must be"),
        (lambda: optim.StepLR(torch.optim.SGD([torch.zeros(1)]), 3), r"StepLR needs an onlytorch optimizer, got SGD"),
    ]
    for make, pattern in cases:
        with pytest.raises(GraphError, match=pattern):
            make()
    assert opt.lr == LR  # failed constructions leave the optimizer alone


def test_schedule_load_errors():
    _, _, opt = make_opt()
    sched = optim.StepLR(opt, 3)
    good = sched.state_dict()
    cases = [
        (optim.ExponentialLR(opt, 0.9).state_dict(), r"saved by schedule 'exponential_lr', not 'step_lr'"),
        ({k: v for k, v in good.items() if k != "base_lr"}, r"missing entries \['base_lr'\]"),
        ({**good, "extra": np.array(1)}, r"unexpected entries \['extra'\]"),
        ({**good, "last_epoch": np.array(-2)}, r"last_epoch must be an integer >= 0"),
        ({**good, "last_epoch": np.array(2.0)}, r"last_epoch must be an integer >= 0"),
        ({**good, "hyper/step_size": np.array(0)}, r"StepLR: step_size must be an integer >= 1, got 0"),
        ({**good, "last_lr": np.array(-1.0)}, r"invalid learning rate lr=-1.0"),
        (None, r"StepLR.load_state_dict needs a mapping"),
    ]
    for state, pattern in cases:
        with pytest.raises(GraphError, match=pattern):
            sched.load_state_dict(state)


def test_registry():
    expected = {
        "step_lr": optim.StepLR,
        "exponential_lr": optim.ExponentialLR,
        "cosine_annealing_lr": optim.CosineAnnealingLR,
        "linear_lr": optim.LinearLR,
        "warmup_cosine": optim.WarmupCosine,
        "reduce_on_plateau": optim.ReduceLROnPlateau,
    }
    assert expected == optim.SCHEDULES
    for name, cls in optim.SCHEDULES.items():
        assert cls.name == name
