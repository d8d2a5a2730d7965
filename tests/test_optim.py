"""ot.optim optimizers and gradient clipping, checked against torch.optim in float64."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import onlytorch as ot
from onlytorch import optim
from onlytorch.errors import GraphError, StaleValueError

_rng = np.random.default_rng(1234)
X = _rng.normal(size=(6, 3))
Y = _rng.normal(size=(6, 2))
W1 = _rng.normal(size=(3, 4))
W2 = _rng.normal(size=(4, 2))
W3 = _rng.normal(size=(2,))  # optimized but never reached by the loss: it never has a gradient

TORCH = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW, "rmsprop": torch.optim.RMSprop}

CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("sgd", {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd", {"lr": 0.05, "maximize": True}),
    ("sgd", {"lr": 0.05, "momentum": 0.5, "weight_decay": 0.05, "nesterov": True, "maximize": True}),
    ("adam", {"lr": 0.05}),
    ("adam", {"lr": 0.05, "weight_decay": 0.1}),
    ("adam", {"lr": 0.05, "amsgrad": True}),
    ("adam", {"lr": 0.05, "betas": (0.4, 0.8), "eps": 1e-3, "maximize": True}),
    ("adam", {"lr": 0.05, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    ("adamw", {"lr": 0.05}),
    ("adamw", {"lr": 0.05, "amsgrad": True, "weight_decay": 0.2}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9}),
    ("rmsprop", {"lr": 0.01, "centered": True}),
    ("rmsprop", {"lr": 0.01, "weight_decay": 0.1}),
    ("rmsprop", {"lr": 0.01, "alpha": 0.3, "momentum": 0.5, "centered": True, "maximize": True}),
]
IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items())}" for name, kw in CASES]


def ot_model(dtype: str = "float64"):
    g = ot.Graph(seed=0, dtype=dtype)
    w1 = g.parameter("w1", value=W1)
    w2 = g.parameter("w2", value=W2)
    w3 = g.parameter("w3", value=W3)
    x = g.input("x", shape=(None, 3))
    g.set_value(x, X)
    loss = g.mean((g.matmul(g.tanh(g.matmul(x, w1)), w2) - Y) ** 2)
    return g, [w1, w2, w3], loss


def torch_model(dtype=torch.float64):
    ps = [torch.tensor(w, dtype=dtype, requires_grad=True) for w in (W1, W2, W3)]
    xt, yt = torch.tensor(X, dtype=dtype), torch.tensor(Y, dtype=dtype)

    def loss():
        return ((torch.tanh(xt @ ps[0]) @ ps[1] - yt) ** 2).mean()

    return ps, loss


def ot_steps(g, params, loss, opt, n, skip=False, start=0):
    """n training steps; with skip, every third step w2's gradient is cleared before the step."""
    for t in range(start, start + n):
        g.forward_node(loss)
        g.backward_nodes(params[:2], loss)
        if skip and t % 3 == 1:
            g.clear_jacobi([params[1]])
        opt.step()
        g.clear_jacobi()
        yield [g.get_node_value(p).copy() for p in params]


def torch_steps(ps, loss, opt, n, skip=False, max_norm=None):
    for t in range(n):
        opt.zero_grad()
        loss().backward()
        if skip and t % 3 == 1:
            ps[1].grad = None
        norm = None if max_norm is None else float(torch.nn.utils.clip_grad_norm_(ps, max_norm))
        opt.step()
        yield [p.detach().numpy().copy() for p in ps], norm


# ---------------------------------------------------------------------------- trajectories


@pytest.mark.parametrize("skip", [False, True], ids=["all-grads", "skip-w2"])
@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_trajectory_matches_torch(name, kw, skip):
    g, params, loss = ot_model()
    opt = optim.OPTIMIZERS[name](g, params, **kw)
    ps, tloss = torch_model()
    topt = TORCH[name](ps, foreach=False, **kw)
    ours, theirs = ot_steps(g, params, loss, opt, 25, skip), torch_steps(ps, tloss, topt, 25, skip)
    for step, (mine, (ref, _)) in enumerate(zip(ours, theirs)):
        for p, a, b in zip(params, mine, ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=f"{p.name} at step {step}")
    moved = np.abs(g.get_node_value(params[0]) - W1).max()
    assert moved > 1e-3, "the trajectory must actually move the parameters"
    # the parameter without a gradient: untouched, and (as in torch) no state advanced
    np.testing.assert_array_equal(g.get_node_value(params[2]), W3)
    assert topt.state.get(ps[2], {}) == {}
    sd = opt.state_dict()
    assert int(sd["step/w3"]) == 0
    assert int(sd["step/w1"]) == 25
    assert int(sd["step/w2"]) == (25 - 8 if skip else 25)
    for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "square_avg", "grad_avg", "momentum_buffer"):
        if f"w2/{key}" in sd:
            np.testing.assert_allclose(sd[f"w2/{key}"], topt.state[ps[1]][key].numpy(), rtol=0, atol=1e-10)
            assert not sd[f"w3/{key}"].any()
        if "step" in topt.state[ps[1]]:
            assert int(sd["step/w2"]) == int(topt.state[ps[1]]["step"])


def test_defaults_are_torchs():
    g, params, _ = ot_model()
    t = torch.zeros(1, requires_grad=True)
    for name, cls in optim.OPTIMIZERS.items():
        ours = cls(g, params).hyper
        theirs = TORCH[name]([t]).defaults
        assert ours.pop("max_grad_norm") is None
        for key, value in ours.items():
            assert theirs[key] == value, (name, key)
        assert set(ours) <= set(theirs)
    assert optim.SGD(g, params).lr == 1e-3
    assert optim.RMSprop(g, params).lr == 1e-2
    assert optim.AdamW(g, params).weight_decay == 1e-2


def test_float32_graph_keeps_float32():
    g, params, loss = ot_model("float32")
    opt = optim.Adam(g, params, lr=0.05, amsgrad=True)
    ps, tloss = torch_model(torch.float32)
    topt = torch.optim.Adam(ps, lr=0.05, amsgrad=True, foreach=False)
    for mine, (ref, _) in zip(ot_steps(g, params, loss, opt, 10), torch_steps(ps, tloss, topt, 10)):
        for a, b in zip(mine, ref):
            assert a.dtype == np.float32
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    assert all(v.dtype == np.float32 for k, v in opt.state_dict().items() if k.startswith("w"))


def test_step_changes_values_so_dependents_recompute():
    g, params, loss = ot_model()
    opt = optim.SGD(g, params, lr=0.1)
    g.forward_node(loss)
    before = float(g.get_node_value(loss))
    g.backward_nodes_ex(params[:2], loss, retain_graph=True)
    opt.step()
    with pytest.raises(StaleValueError):
        g.backward_nodes(params[:2], loss)
    g.forward_node(loss)
    assert float(g.get_node_value(loss)) < before


def test_zero_grad_clears_only_its_parameters():
    g, params, loss = ot_model()
    opt = optim.SGD(g, params[:1])
    g.forward_node(loss)
    g.backward_nodes(params[:2], loss)
    opt.zero_grad()
    assert g.get_node_grad(params[0]) is None
    assert g.get_node_grad(params[1]) is not None


def test_step_does_not_modify_the_gradients():
    g, params, loss = ot_model()
    opt = optim.Adam(g, params, weight_decay=0.1, maximize=True)
    g.forward_node(loss)
    g.backward_nodes(params[:2], loss)
    grads = [g.get_node_grad(p).copy() for p in params[:2]]
    opt.step()
    for p, before in zip(params, grads):
        np.testing.assert_array_equal(g.get_node_grad(p), before)


def test_lr_is_a_mutable_attribute_used_by_the_next_step():
    g, params, loss = ot_model()
    opt = optim.SGD(g, params, lr=0.1)
    ps, tloss = torch_model()
    topt = torch.optim.SGD(ps, lr=0.1, foreach=False)
    ours, theirs = ot_steps(g, params, loss, opt, 6), torch_steps(ps, tloss, topt, 6)
    for step, (mine, (ref, _)) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(mine[0], ref[0], rtol=0, atol=1e-12)
        opt.lr = 0.1 / (step + 2)
        topt.param_groups[0]["lr"] = 0.1 / (step + 2)
    assert opt.hyper["lr"] == opt.lr == 0.1 / 7


# ---------------------------------------------------------------------------- clipping


def _grads_both(skip_w2: bool = False):
    g, params, loss = ot_model()
    g.forward_node(loss)
    g.backward_nodes(params[:2], loss)
    ps, tloss = torch_model()
    tloss().backward()
    if skip_w2:
        g.clear_jacobi([params[1]])
        ps[1].grad = None
    return g, params, ps


@pytest.mark.parametrize("norm_type", [2.0, math.inf, 1.0, 3.0])
@pytest.mark.parametrize("max_norm", [0.05, 100.0])
@pytest.mark.parametrize("skip_w2", [False, True])
def test_clip_grad_norm_matches_torch(norm_type, max_norm, skip_w2):
    g, params, ps = _grads_both(skip_w2)
    total = optim.clip_grad_norm(g, params, max_norm, norm_type)
    ref = torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type, foreach=False)
    assert isinstance(total, float)
    assert total == pytest.approx(float(ref), rel=1e-13)
    for p, tp in zip(params, ps):
        if tp.grad is None:
            assert g.get_node_grad(p) is None
        else:
            np.testing.assert_allclose(g.get_node_grad(p), tp.grad.numpy(), rtol=1e-12, atol=1e-16)
    if max_norm == 100.0:
        assert total < max_norm  # not clipped: the gradients are the unscaled ones (checked above)


def test_clip_grad_norm_without_gradients_returns_zero():
    g, params, _ = ot_model()
    assert optim.clip_grad_norm(g, params, 1.0) == 0.0
    assert optim.clip_grad_norm(g, [], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    g, params, _ = _grads_both()
    g._node(params[1]).grad[0, 0] = np.inf
    with pytest.raises(GraphError, match=r"gradient of 'w2' is not finite"):
        optim.clip_grad_norm(g, params, 1.0, error_if_nonfinite=True)
    assert optim.clip_grad_norm(g, params, 1.0) == math.inf  # as torch: scaled by 0 (inf * 0 is nan)
    assert np.isnan(g.get_node_grad(params[1])[0, 0])
    assert (g.get_node_grad(params[0]) == 0).all()


@pytest.mark.parametrize("skip_w2", [False, True])
def test_clip_grad_value_matches_torch(skip_w2):
    g, params, ps = _grads_both(skip_w2)
    clip = 0.5 * float(np.abs(g.get_node_grad(params[0])).max())
    assert optim.clip_grad_value(g, params, clip) is None
    torch.nn.utils.clip_grad_value_(ps, clip, foreach=False)
    for p, tp in zip(params, ps):
        if tp.grad is not None:
            np.testing.assert_allclose(g.get_node_grad(p), tp.grad.numpy(), rtol=1e-12, atol=1e-16)
    assert np.abs(g.get_node_grad(params[0])).max() == clip
    assert (np.abs(g.get_node_grad(params[0])) == clip).sum() > 1


def test_clip_accepts_a_single_node():
    g, params, ps = _grads_both()
    total = optim.clip_grad_norm(g, params[0], 0.01)
    assert total == pytest.approx(float(torch.nn.utils.clip_grad_norm_(ps[0], 0.01)), rel=1e-13)
    np.testing.assert_allclose(g.get_node_grad(params[0]), ps[0].grad.numpy(), rtol=1e-12, atol=1e-16)


@pytest.mark.parametrize(
    ("name", "kw"), [CASES[1], CASES[7], CASES[13], CASES[16]], ids=["sgd", "adam", "adamw", "rmsprop"]
)
@pytest.mark.parametrize("skip", [False, True])
def test_max_grad_norm_option(name, kw, skip):
    g, params, loss = ot_model()
    opt = optim.OPTIMIZERS[name](g, params, max_grad_norm=0.1, **kw)
    ps, tloss = torch_model()
    topt = TORCH[name](ps, foreach=False, **kw)
    ours = ot_steps(g, params, loss, opt, 25, skip)
    theirs = torch_steps(ps, tloss, topt, 25, skip, max_norm=0.1)
    clipped = 0
    for mine, (ref, norm) in zip(ours, theirs):
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-10)
        clipped += norm > 0.1
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10)
    assert clipped > 0


# ---------------------------------------------------------------------------- state_dict


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_state_dict_round_trip_continues_bit_identically(name, kw, tmp_path):
    kw = {**kw, "max_grad_norm": 1.0} if name == "adam" else kw
    g, params, loss = ot_model()
    opt = optim.OPTIMIZERS[name](g, params, **kw)
    reference = list(ot_steps(g, params, loss, opt, 25, skip=True))

    g1, params1, loss1 = ot_model()
    opt1 = optim.OPTIMIZERS[name](g1, params1, **kw)
    list(ot_steps(g1, params1, loss1, opt1, 10, skip=True))
    np.savez(tmp_path / "opt.npz", **opt1.state_dict())
    np.savez(tmp_path / "params.npz", **{p.name: g1.get_node_value(p) for p in params1})

    g2, params2, loss2 = ot_model()
    opt2 = optim.OPTIMIZERS[name](g2, params2)  # default hyper-parameters: the state brings the saved ones
    with np.load(tmp_path / "params.npz", allow_pickle=False) as f:
        for p in params2:
            g2.set_value(p, f[p.name])
    with np.load(tmp_path / "opt.npz", allow_pickle=False) as f:
        opt2.load_state_dict(f)
    assert opt2.hyper == opt1.hyper
    rest = list(ot_steps(g2, params2, loss2, opt2, 15, skip=True, start=10))
    for mine, ref in zip(rest, reference[10:]):
        for a, b in zip(mine, ref):
            np.testing.assert_array_equal(a, b)
    saved = opt.state_dict()
    for key, value in opt2.state_dict().items():
        np.testing.assert_array_equal(value, saved[key], err_msg=key)


def test_state_dict_layout():
    g, params, _ = ot_model()
    opt = optim.Adam(g, params, amsgrad=True)
    sd = opt.state_dict()
    assert str(sd["optimizer"]) == "adam"
    assert sd["hyper/betas"].shape == (2,)
    assert np.isnan(sd["hyper/max_grad_norm"])
    assert sd["hyper/amsgrad"].dtype == bool and bool(sd["hyper/amsgrad"])
    assert sd["step/w1"].dtype == np.int64 and sd["step/w1"].shape == ()
    assert set(k for k in sd if k.startswith("w1/")) == {"w1/exp_avg", "w1/exp_avg_sq", "w1/max_exp_avg_sq"}
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    sd["w1/exp_avg"][...] = 7.0  # a copy: the optimizer's state is untouched
    assert not opt.state_dict()["w1/exp_avg"].any()
    assert set(optim.SGD(g, params).state_dict()) == {"optimizer", "step/w1", "step/w2", "step/w3"} | {
        f"hyper/{k}" for k in ("lr", "momentum", "dampening", "weight_decay", "nesterov", "maximize", "max_grad_norm")
    }


def test_load_state_dict_changes_the_state_layout():
    g, params, loss = ot_model()
    src = optim.RMSprop(g, params, momentum=0.9, centered=True)
    list(ot_steps(g, params, loss, src, 3))
    dst = optim.RMSprop(g, params)
    dst.load_state_dict(src.state_dict())
    assert dst.momentum == 0.9 and dst.centered
    back = optim.RMSprop(g, params, momentum=0.9, centered=True)
    back.load_state_dict(optim.RMSprop(g, params).state_dict())
    assert set(back.state_dict()) == set(optim.RMSprop(g, params).state_dict())


# ---------------------------------------------------------------------------- errors


def _other_graph_param():
    h = ot.Graph(dtype="float64")
    return h.parameter("w1", value=W1)


def _bad_optimizers(g, params, loss):
    w1, w2, _ = params
    x = g.node("x")
    s = g.state("running", value=np.zeros(2))
    return [
        (lambda: optim.SGD(g, []), r"SGD got an empty parameter list"),
        (lambda: optim.Adam(g, [w1, w2, w1]), r"parameter 'w1' appears more than once"),
        (lambda: optim.SGD(g, [x]), r"input 'x' is not a parameter"),
        (lambda: optim.SGD(g, [s]), r"state 'running' is not a parameter"),
        (lambda: optim.SGD(g, [loss]), r"node .* is not a parameter"),
        (lambda: optim.SGD(g, [w1, _other_graph_param()]), r"parameter 'w1' belongs to another graph"),
        (lambda: optim.SGD(g, w1), r"wrap the single node"),
        (lambda: optim.SGD(g, 3), r"params must be a list of parameter nodes, got int"),
        (lambda: optim.SGD(g, [3]), r"params must hold parameter nodes, got int"),
        (lambda: optim.SGD(g, ["nope"]), r"no node named 'nope'"),
        (lambda: optim.SGD([w1], [w1]), r"first argument must be the Graph"),
        (lambda: optim.SGD(g, [w1], lr=-0.1), r"SGD: invalid learning rate lr=-0.1"),
        (lambda: optim.Adam(g, [w1], lr=float("nan")), r"Adam: invalid learning rate lr=nan"),
        (lambda: optim.Adam(g, [w1], lr="0.1"), r"invalid learning rate lr='0.1'"),
        (lambda: optim.SGD(g, [w1], lr=True), r"invalid learning rate lr=True"),
        (lambda: optim.SGD(g, [w1], momentum=-0.5), r"SGD: invalid momentum value momentum=-0.5"),
        (lambda: optim.SGD(g, [w1], weight_decay=-1), r"SGD: invalid weight_decay value weight_decay=-1"),
        (lambda: optim.SGD(g, [w1], dampening=float("inf")), r"SGD: invalid dampening=inf"),
        (lambda: optim.SGD(g, [w1], nesterov=True), r"Nesterov momentum requires a momentum and zero dampening"),
        (
            lambda: optim.SGD(g, [w1], momentum=0.9, dampening=0.1, nesterov=True),
            r"Nesterov momentum requires a momentum and zero dampening \(got momentum=0.9, dampening=0.1\)",
        ),
        (lambda: optim.SGD(g, [w1], nesterov="yes"), r"SGD: nesterov must be True or False"),
        (lambda: optim.Adam(g, [w1], betas=(1.0, 0.999)), r"beta parameter at index 0: betas\[0\]=1.0"),
        (lambda: optim.Adam(g, [w1], betas=(0.9, -0.1)), r"beta parameter at index 1: betas\[1\]=-0.1"),
        (lambda: optim.AdamW(g, [w1], betas=(0.9,)), r"AdamW: betas must be a pair"),
        (lambda: optim.Adam(g, [w1], eps=-1e-8), r"Adam: invalid epsilon value eps=-1e-08"),
        (lambda: optim.AdamW(g, [w1], weight_decay=-0.01), r"AdamW: invalid weight_decay value"),
        (lambda: optim.Adam(g, [w1], amsgrad=1), r"amsgrad must be True or False"),
        (lambda: optim.RMSprop(g, [w1], alpha=-0.1), r"RMSprop: invalid alpha value alpha=-0.1"),
        (lambda: optim.RMSprop(g, [w1], eps=-1), r"RMSprop: invalid epsilon value eps=-1"),
        (lambda: optim.RMSprop(g, [w1], momentum=-1), r"RMSprop: invalid momentum value momentum=-1"),
        (lambda: optim.RMSprop(g, [w1], weight_decay=-1), r"RMSprop: invalid weight_decay value"),
        (lambda: optim.RMSprop(g, [w1], centered=None), r"centered must be True or False"),
        (lambda: optim.SGD(g, [w1], max_grad_norm=0), r"SGD: invalid max_grad_norm=0"),
        (lambda: optim.Adam(g, [w1], max_grad_norm=-1.0), r"invalid max_grad_norm=-1.0"),
        (lambda: optim.Adam(g, [w1], max_grad_norm=float("nan")), r"invalid max_grad_norm=nan"),
    ]


def test_construction_errors():
    g, params, loss = ot_model()
    for make, pattern in _bad_optimizers(g, params, loss):
        with pytest.raises(GraphError, match=pattern):
            make()


def test_attribute_errors():
    g, params, _ = ot_model()
    opt = optim.SGD(g, params, lr=0.1, momentum=0.9)
    with pytest.raises(GraphError, match=r"SGD: invalid learning rate lr=-1"):
        opt.lr = -1
    assert opt.lr == 0.1
    with pytest.raises(GraphError, match=r"SGD: momentum is fixed when the optimizer is built.*only lr can change"):
        opt.momentum = 0.5
    assert opt.momentum == 0.9
    with pytest.raises(AttributeError, match="betas"):
        opt.betas


def test_ambiguous_state_keys():
    g = ot.Graph(dtype="float64")
    a = g.parameter("step", value=np.zeros(2))
    b = g.parameter("exp_avg", value=np.zeros(2))
    with pytest.raises(GraphError, match=r"state key 'step/exp_avg' ambiguous"):
        optim.Adam(g, [a, b])
    optim.SGD(g, [a, b])  # plain SGD keeps no buffers: no clash


def test_load_state_dict_errors():
    g, params, loss = ot_model()
    opt = optim.Adam(g, params, lr=0.05)
    list(ot_steps(g, params, loss, opt, 2))
    good = opt.state_dict()

    def edited(**changes):
        d = dict(good)
        for k, v in changes.items():
            k = k.replace("__", "/")
            if v is None:
                d.pop(k)
            else:
                d[k] = v
        return d

    cases = [
        (optim.SGD(g, params).state_dict(), r"saved by optimizer 'sgd', not 'adam'"),
        (edited(optimizer=None), r"saved by optimizer None"),
        (edited(step__w2=None), r"no entry for parameter 'w2' \('step/w2'\)"),
        (edited(step__w2=np.array(-1)), r"'step/w2' must be a non-negative integer"),
        (edited(step__w2=np.array(1.5)), r"'step/w2' must be a non-negative integer"),
        (edited(w1__exp_avg=np.zeros((4, 3))), r"'w1/exp_avg' has shape \(4, 3\).*parameter 'w1' needs"),
        (edited(w1__exp_avg_sq=None), r"no 'w1/exp_avg_sq' for parameter 'w1'"),
        (edited(w9__exp_avg=np.zeros(2)), r"unexpected entries \['w9/exp_avg'\]"),
        (dict(good, **{"w1/max_exp_avg_sq": np.zeros((3, 4))}), r"unexpected entries \['w1/max_exp_avg_sq'\]"),
        (edited(hyper__lr=np.array(-1.0)), r"invalid learning rate lr=-1.0"),
        (edited(hyper__betas=np.array([0.9, 1.5])), r"betas\[1\]=1.5"),
        (edited(hyper__eps=None), r"the state has no 'hyper/eps'"),
        (edited(hyper__eps=np.array("x")), r"'hyper/eps' holds"),
        (edited(hyper__amsgrad=np.array(True)), r"no 'w1/max_exp_avg_sq' for parameter 'w1'"),
        ({"a": object()}, r"saved by optimizer None"),
        (5, r"Adam.load_state_dict needs a mapping"),
    ]
    for state, pattern in cases:
        with pytest.raises(GraphError, match=pattern):
            opt.load_state_dict(state)
    after = opt.state_dict()  # failed loads change nothing
    for key, value in good.items():
        np.testing.assert_array_equal(after[key], value)
    with pytest.raises(GraphError, match=r"AdamW: decoupled_weight_decay is always True"):
        optim.AdamW(g, params).load_state_dict({**good, "optimizer": np.array("adamw")})


def test_clip_errors():
    g, params, _ = ot_model()
    cases = [
        (lambda: optim.clip_grad_norm(g, params, -1.0), r"clip_grad_norm: max_norm must be a number >= 0, got -1.0"),
        (lambda: optim.clip_grad_norm(g, params, "1"), r"max_norm must be a number"),
        (lambda: optim.clip_grad_norm(g, params, 1.0, norm_type=0), r"norm_type must be a number > 0 or inf, got 0"),
        (lambda: optim.clip_grad_norm(g, params, 1.0, norm_type=-math.inf), r"norm_type must be"),
        (lambda: optim.clip_grad_value(g, params, -0.1), r"clip_grad_value: clip_value must be a number >= 0"),
        (lambda: optim.clip_grad_norm(g, [params[0], params[0]], 1.0), r"node 'w1' appears more than once"),
        (lambda: optim.clip_grad_value(g, [_other_graph_param()], 1.0), r"node 'w1' belongs to another graph"),
        (lambda: optim.clip_grad_norm(g, [1.0], 1.0), r"params must hold nodes, got float"),
        (lambda: optim.clip_grad_norm(g, 1.0, 1.0), r"params must be a list of nodes, got float"),
        (lambda: optim.clip_grad_norm(None, params, 1.0), r"first argument must be the Graph"),
    ]
    for make, pattern in cases:
        with pytest.raises(GraphError, match=pattern):
            make()


def test_registry():
    expected = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW, "rmsprop": optim.RMSprop}
    assert expected == optim.OPTIMIZERS
    for name, cls in optim.OPTIMIZERS.items():
        assert cls.name == name


# ---------------------------------------------------------------------------- flat buffers


def flat_run(name, kw, n=20, flat=True, monkeypatch=None, reset_at=None):
    """n steps over w1 and w2 (both always have a gradient: the flat path); with reset_at, w1 is
    set to a new value by set_value before that step."""
    if not flat:
        monkeypatch.setattr(optim.flat.FlatLayout, "fits", staticmethod(lambda nodes: False))
    g, params, loss = ot_model()
    opt = optim.OPTIMIZERS[name](g, params[:2], **kw)
    assert (opt._flat is not None) is flat
    out = []
    for t in range(n):
        if t == reset_at:
            g.set_value(params[0], W1 * 0.5)
        g.forward_node(loss)
        g.backward_nodes(params[:2], loss)
        opt.step()
        g.clear_jacobi()
        out.append([g.get_node_value(p).copy() for p in params[:2]])
    if monkeypatch is not None:
        monkeypatch.undo()
    return out, opt, g


@pytest.mark.parametrize(("name", "kw"), CASES, ids=IDS)
def test_flat_buffers_give_the_per_parameter_update_bit_for_bit_and_torchs(name, kw, monkeypatch):
    flat, opt, g = flat_run(name, kw)
    per_param, _, _ = flat_run(name, kw, flat=False, monkeypatch=monkeypatch)
    for a, b in zip(flat, per_param):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    ps, tloss = torch_model()
    topt = TORCH[name](ps[:2], foreach=False, **kw)
    for step, (mine, (ref, _)) in enumerate(zip(flat, torch_steps(ps, tloss, topt, 20))):
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=f"step {step}")
    # the parameters' values are views of the one flat buffer, and the graph still counts them once
    assert all(g.get_node_value(p).base is opt._flat.params for p in opt.params)
    held = sum(n.value.nbytes for n in g._nodes if n.value is not None)
    assert g.memory_stats()["current_bytes"] == held


def test_a_parameter_replaced_by_set_value_is_gathered_again(monkeypatch):
    flat, opt, g = flat_run("adam", {"lr": 0.05}, reset_at=7)
    per_param, _, _ = flat_run("adam", {"lr": 0.05}, flat=False, monkeypatch=monkeypatch, reset_at=7)
    for a, b in zip(flat, per_param):
        for u, v in zip(a, b):
            np.testing.assert_array_equal(u, v)
    assert not np.array_equal(flat[7][0], flat[6][0])
    assert g.get_node_value(opt.params[0]).base is opt._flat.params


def test_a_partial_step_leaves_the_flat_path_and_stays_exact():
    # after a step without w2's gradient the step counts differ: per-parameter updates from then on
    g, params, loss = ot_model()
    opt = optim.Adam(g, params[:2], lr=0.05)
    ps, tloss = torch_model()
    topt = torch.optim.Adam(ps[:2], lr=0.05, foreach=False)
    ours = ot_steps(g, params[:2], loss, opt, 12, skip=True)
    for step, (mine, (ref, _)) in enumerate(zip(ours, torch_steps(ps, tloss, topt, 12, skip=True))):
        for a, b in zip(mine, ref):
            np.testing.assert_allclose(a, b, rtol=0, atol=1e-10, err_msg=f"step {step}")
    assert opt.state_dict()["step/w1"] == 12 and opt.state_dict()["step/w2"] == 8


def test_flat_state_round_trips_through_state_dict(tmp_path):
    ref, _, _ = flat_run("rmsprop", {"lr": 0.01, "momentum": 0.9, "centered": True}, n=12)
    g, params, loss = ot_model()
    opt = optim.RMSprop(g, params[:2], lr=0.01, momentum=0.9, centered=True)
    list(ot_steps(g, params[:2], loss, opt, 5))
    state = opt.state_dict()
    g2, params2, loss2 = ot_model()
    for p, q in zip(params, params2):
        g2.set_value(q, g.get_node_value(p))
    opt2 = optim.RMSprop(g2, params2[:2])
    opt2.load_state_dict(state)
    # the loaded buffers are views of the new optimizer's flat buffers
    assert all(b.base is fb for row in opt2._bufs for b, fb in zip(row, opt2._flat_bufs))
    for mine, r in zip(ot_steps(g2, params2[:2], loss2, opt2, 7, start=5), ref[5:]):
        for a, b in zip(mine, r):
            np.testing.assert_array_equal(a, b)


def test_a_single_parameter_keeps_its_own_buffers():
    g = ot.Graph(dtype="float64")
    a = g.parameter("a", value=np.ones(3))
    loss = g.sum(a * a)
    opt = optim.Adam(g, [a], lr=0.1)
    assert opt._flat is None
    value = g.get_node_value(a)
    g.forward_node(loss)
    g.backward_nodes([a], loss)
    opt.step()
    assert g.get_node_value(a) is value  # updated in place, as always
    np.testing.assert_allclose(value, np.full(3, 0.9))


def test_keyword_arguments_with_a_value_are_refused():
    g = ot.Graph()
    with pytest.raises(
        GraphError, match=r"parameter 'b': dtype given with a value; keyword arguments are the initialiser"
    ):
        g.parameter("b", value=np.ones(2), dtype="float64")


def test_large_parameters_keep_their_own_buffers():
    # gathering large gradients costs more than the calls a flat update saves
    g = ot.Graph(dtype="float32")
    big = [g.parameter(f"w{i}", (256, 256)) for i in range(2)]
    small = [g.parameter(f"s{i}", (16, 16)) for i in range(2)]
    assert optim.SGD(g, big, lr=0.1)._flat is None
    assert optim.SGD(g, small, lr=0.1)._flat is not None
    assert optim.SGD(g, [*big, *small[:1]], lr=0.1)._flat is None
