"""Optimizers: SGD, Adam, AdamW and RMSprop with torch.optim's update rules and defaults.

Each is built as ``Cls(graph, params, **hyper)``; its hyper-parameters are declared once, in its
``hypers`` table (see hyper.py), which gives the constructor's signature, the validation
(``check_hyper``), the spec schema and the docs. ``step()`` updates every parameter that has a
gradient, in place, and skips (without advancing its state) every parameter that has none.
``lr`` is a plain attribute that schedules change; the other hyper-parameters are fixed at
construction (they decide which state buffers exist) and read through ``opt.hyper``. Small
parameters of one dtype are updated together, in flat buffers (``flat.py``), bit for bit as one
by one.

State is numpy arrays only. ``state_dict()`` is a flat ``dict[str, np.ndarray]`` that
``np.savez`` writes and ``np.load(..., allow_pickle=False)`` reads back:

- ``"optimizer"``: the registry name (``"adam"``), a 0-d string array;
- ``"hyper/<name>"``: each hyper-parameter, 0-d (``betas`` has shape (2,); a ``max_grad_norm``
  of None is stored as NaN);
- ``"step/<param>"``: how many steps updated that parameter (0-d int64);
- ``"<param>/<buffer>"``: the per-parameter buffers, with torch's names (``exp_avg``, ...).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import numpy as np

from ..checkpoint import describe, invalid_hyper_message, saved_state
from ..errors import GraphError
from ..executor import quiet
from ..graph import Graph
from ..node import Node, NodeId
from . import hyper as H
from .clip import _clip_norm
from .flat import FlatLayout
from .hyper import Hyper, check_lr

_PAIR = "pair"
_OPT_FLOAT = "optional float"


class Optimizer:
    """The shared machinery: parameter checks, the step loop, state and its (de)serialisation.

    A subclass declares ``name`` (its registry name), ``hypers`` (its hyper-parameters: name,
    default, description, range; lr first), ``buffer_names`` (which per-parameter buffers its
    hyper-parameters need), ``_check_together`` (rules between hyper-parameters, if any) and
    ``_update`` (the math). It is built as ``Cls(graph, params, *args, **kwargs)``, the arguments
    bound to ``hypers`` as a signature would."""

    name = "optimizer"
    hypers: ClassVar[tuple[Hyper, ...]] = ()
    # Derived from hypers (name -> "float", "bool", "pair" or "optional float"): how state_dict stores each.
    _kinds: ClassVar[dict[str, str]] = {}
    # Buffers that hold running averages of squared gradients: never negative (a negative one, from
    # a damaged or edited checkpoint, would make the next step's square root NaN).
    _non_negative_buffers: ClassVar[frozenset[str]] = frozenset()

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._kinds = H.kinds(cls.hypers)
        H.declared_init(cls, ("graph", "params"))

    def __init__(self, graph: Graph, params: Iterable[NodeId], *args: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        given = H.bind(owner, self.hypers, args, kwargs)
        if not isinstance(graph, Graph):
            raise GraphError(
                f"{owner}: the first argument must be the Graph that holds the parameters, got {type(graph).__name__}"
            )
        nodes = _parameter_nodes(graph, params, owner)
        checked = self.check_hyper(given)
        object.__setattr__(self, "graph", graph)
        object.__setattr__(self, "params", tuple(NodeId(graph, n.index) for n in nodes))
        object.__setattr__(self, "_nodes", nodes)
        object.__setattr__(self, "last_grad_norm", None)
        self._install(checked)
        self._check_keys()

    # ------------------------------------------------------------ hyper-parameters

    @property
    def hyper(self) -> dict[str, Any]:
        """All hyper-parameters, lr included (a copy)."""
        return {"lr": self.lr, **self._hyper}

    def __getattr__(self, name: str) -> Any:
        hyper = self.__dict__.get("_hyper", {})
        if name in hyper:
            return hyper[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "lr":
            object.__setattr__(self, "lr", check_lr(type(self).__name__, value))
            return
        if name in self._kinds:
            raise GraphError(
                f"{type(self).__name__}: {name} is fixed when the optimizer is built (it decides the state it keeps); "
                "only lr can change. Build a new optimizer to change it"
            )
        object.__setattr__(self, name, value)

    @classmethod
    def check_hyper(cls, values: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and normalise hyper-parameter values (a missing one takes its default) against
        the ``hypers`` table, without building anything: all of them, lr included; GraphError
        naming the value at fault otherwise (the constructor's own check)."""
        checked = H.check_values(cls.__name__, cls.hypers, values)
        cls._check_together(checked)
        return checked

    @classmethod
    def _check_together(cls, h: dict[str, Any]) -> None:
        """Rules between checked hyper-parameters (raise GraphError); none by default."""

    @classmethod
    def buffer_names(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        """The per-parameter buffers that (checked) hyper-parameters h need, in a fixed order."""
        raise NotImplementedError

    def _install(self, checked: dict[str, Any]) -> None:
        """Take validated hyper-parameters and allocate fresh (zero) state for them."""
        hyper = dict(checked)
        object.__setattr__(self, "lr", hyper.pop("lr"))
        object.__setattr__(self, "_hyper", hyper)
        names = self.buffer_names(hyper)
        object.__setattr__(self, "_names", names)
        nodes = self._nodes
        object.__setattr__(self, "_steps", [0] * len(nodes))
        # Small parameters of one dtype share flat buffers (see flat.py); the state buffers are views.
        flat = FlatLayout(nodes) if FlatLayout.fits(nodes) else None
        object.__setattr__(self, "_flat", flat)
        if flat is None:
            object.__setattr__(self, "_flat_bufs", None)
            object.__setattr__(self, "_bufs", [[np.zeros(n.shape, dtype=n.dtype) for _ in names] for n in nodes])
        else:
            flat_bufs = [np.zeros_like(flat.params) for _ in names]
            views = [flat.split(b) for b in flat_bufs]
            object.__setattr__(self, "_flat_bufs", flat_bufs)
            object.__setattr__(self, "_bufs", [[v[i] for v in views] for i in range(len(nodes))])

    # ------------------------------------------------------------ stepping

    def zero_grad(self) -> None:
        """Clear the gradients of this optimizer's parameters (the graph's other gradients stay)."""
        self.graph.clear_jacobi(self.params)

    @quiet
    def step(self) -> None:
        """Update every parameter that has a gradient; parameters without one are skipped, and
        their state (step count, buffers) does not advance. With ``max_grad_norm`` set, the
        gradients are first clipped in place to that global 2-norm (``last_grad_norm`` keeps
        the norm before clipping)."""
        nodes = self._nodes
        # An optimizer whose table has no max_grad_norm never clips.
        max_norm = self._hyper.get("max_grad_norm")
        if max_norm is not None:
            object.__setattr__(self, "last_grad_norm", _clip_norm(nodes, max_norm, 2.0))
        grads = [n.grad for n in nodes]
        every = True
        for grad in grads:
            if grad is None:
                every = False
                break
        steps, flat = self._steps, self._flat
        if every and flat is not None and steps.count(steps[0]) == len(steps):
            # Every parameter steps, all at the same count: one update of the flat buffers.
            step = steps[0] + 1
            steps[:] = [step] * len(steps)
            self._update([(flat.bind(nodes), flat.gather(grads), self._flat_bufs, step)])
            self.graph.runtime.mark_changed(*nodes)
            return
        bufs = self._bufs
        live, changed = [], []
        for i, (node, grad) in enumerate(zip(nodes, grads)):
            if grad is not None:
                steps[i] += 1
                live.append((node.value, grad, bufs[i], steps[i]))
                changed.append(node)
        if live:
            self._update(live)
            self.graph.runtime.mark_changed(*changed)

    def _update(self, live: list[tuple[np.ndarray, np.ndarray, list[np.ndarray], int]]) -> None:
        """Update each (parameter value, grad, buffers, step) in place; step already counts this
        one. The arrays may be one parameter's or the flat buffers of all of them."""
        raise NotImplementedError

    # ------------------------------------------------------------ state

    def _keys(self) -> list[str]:
        keys = ["optimizer"] + [f"hyper/{k}" for k in ("lr", *self._hyper)]
        for n in self._nodes:
            keys.append(f"step/{n.name}")
            keys.extend(f"{n.name}/{b}" for b in self._names)
        return keys

    def _check_keys(self) -> None:
        dups = [k for k, n in Counter(self._keys()).items() if n > 1]
        if dups:
            dup = dups[0]
            raise GraphError(
                f"{type(self).__name__}: parameter names make the state key {dup!r} ambiguous; rename the parameter"
            )

    def state_dict(self) -> dict[str, np.ndarray]:
        """A flat dict of numpy arrays (copies): see the module docstring for the keys."""
        out: dict[str, np.ndarray] = {"optimizer": np.array(self.name)}
        for key, value in self.hyper.items():
            if self._kinds[key] == _OPT_FLOAT:
                value = np.nan if value is None else value
            out[f"hyper/{key}"] = np.array(value, dtype=bool if self._kinds[key] == "bool" else np.float64)
        for node, step, bufs in zip(self._nodes, self._steps, self._bufs):
            out[f"step/{node.name}"] = np.array(step, dtype=np.int64)
            for bname, buf in zip(self._names, bufs):
                out[f"{node.name}/{bname}"] = buf.copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore hyper-parameters, step counts and buffers from ``state_dict()`` output (also
        an ``np.load`` result). Everything is checked before anything changes; continuing
        afterwards gives the same parameters, bit for bit, as the run that saved it."""
        self._apply_state(self._parse_state(state))

    def check_state_dict(self, state: Mapping[str, Any], where: str = "", lead: str | None = None) -> None:
        """Raise GraphError unless load_state_dict(state) would succeed; changes nothing. ``where``
        prefixes the entry names in messages (a checkpoint's "opt/<name>/"), ``lead`` replaces
        the messages' "<Class>.load_state_dict: "."""
        self._parse_state(state, where, lead)

    def _parse_state(self, state: Mapping[str, Any], where: str = "", lead: str | None = None) -> tuple[Any, ...]:
        owner = type(self).__name__
        lead = f"{owner}.load_state_dict: " if lead is None else lead
        d = saved_state(state, "optimizer", self.name, owner, lead, where)
        hyper: dict[str, Any] = {}
        for key, kind in self._kinds.items():
            arr = d.get(f"hyper/{key}")
            if arr is None:
                raise GraphError(f"{lead}the state has no '{where}hyper/{key}'")
            wanted = {_PAIR: ("f", (2,)), "bool": ("b", ())}.get(kind, ("f", ()))
            if (arr.dtype.kind != wanted[0] and not (wanted[0] == "f" and arr.dtype.kind in "iu")) or (
                arr.shape != wanted[1]
            ):
                raise GraphError(f"{lead}'{where}hyper/{key}' holds {describe(arr)}, not a {kind}")
            if kind == _PAIR:
                hyper[key] = tuple(float(v) for v in arr.reshape(-1))
            elif kind == "bool":
                hyper[key] = bool(arr)
            else:
                value = float(arr)
                hyper[key] = None if kind == _OPT_FLOAT and math.isnan(value) else value
        try:
            checked = self.check_hyper(hyper)
        except GraphError as e:
            raise GraphError(f"{lead}{self._invalid_hyper(hyper, where, e)}") from None
        names = self.buffer_names(checked)
        expected = {"optimizer"} | {f"hyper/{k}" for k in self._kinds}
        steps, bufs = [], []
        for n in self._nodes:
            skey = f"step/{n.name}"
            if skey not in d:
                raise GraphError(f"{lead}the state has no entry for parameter {n.name!r} ('{where}{skey}')")
            s = d[skey]
            if s.shape != () or s.dtype.kind not in "iu" or int(s) < 0:
                raise GraphError(f"{lead}'{where}{skey}' must be a non-negative integer, got {describe(s)}")
            steps.append(int(s))
            expected.add(skey)
            row = []
            for b in names:
                key = f"{n.name}/{b}"
                if key not in d:
                    raise GraphError(f"{lead}the state has no '{where}{key}' for parameter {n.name!r}")
                arr = d[key]
                if arr.shape != n.shape or arr.dtype.kind != "f":
                    raise GraphError(
                        f"{lead}'{where}{key}' has shape {arr.shape} and dtype {arr.dtype}; "
                        f"parameter {n.name!r} needs a float array of shape {n.shape}"
                    )
                if not np.isfinite(arr).all():
                    raise GraphError(f"{lead}'{where}{key}' holds NaN or infinite values")
                if b in self._non_negative_buffers and (arr < 0).any():
                    raise GraphError(
                        f"{lead}'{where}{key}' holds {int((arr < 0).sum())} negative value(s): it is a running "
                        "average of squared gradients, never negative (a damaged or edited checkpoint)"
                    )
                row.append(np.array(arr, dtype=n.dtype, copy=True))
                expected.add(key)
            bufs.append(row)
        extra = sorted(set(d) - expected)
        if extra:
            raise GraphError(
                f"{lead}unexpected entries {[where + k for k in extra[:5]]} (saved for other parameters or options?)"
            )
        return checked, steps, bufs

    def _invalid_hyper(self, saved: dict[str, Any], where: str, error: GraphError) -> str:
        return invalid_hyper_message(self.check_hyper, self.hyper, saved, where, error)

    def _apply_state(self, parsed: tuple[Any, ...]) -> None:
        checked, steps, bufs = parsed
        self._install(checked)
        object.__setattr__(self, "_steps", steps)
        for row, dst in zip(bufs, self._bufs):
            for src, buf in zip(row, dst):
                np.copyto(buf, src)

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v!r}" for k, v in self.hyper.items())
        return f"{type(self).__name__}([{', '.join(n.name for n in self._nodes)}], {hyper})"


# ---------------------------------------------------------------------------- checks


def _parameter_nodes(graph: Graph, params: Any, owner: str) -> list[Node]:
    if isinstance(params, (NodeId, str)):
        raise GraphError(f"{owner}: params must be a list of parameters; wrap the single node {params!r} in a list")
    try:
        items = list(params)
    except TypeError:
        raise GraphError(f"{owner}: params must be a list of parameter nodes, got {type(params).__name__}") from None
    if not items:
        raise GraphError(f"{owner} got an empty parameter list")
    nodes: list[Node] = []
    seen: set[int] = set()
    for p in items:
        if isinstance(p, str):
            p = graph.node(p)
        if not isinstance(p, NodeId):
            raise GraphError(f"{owner}: params must hold parameter nodes, got {type(p).__name__} {p!r}")
        if p.graph is not graph:
            raise GraphError(f"{owner}: parameter {p.name!r} belongs to another graph than the one given")
        n = graph.record(p)
        if n.kind != "parameter":
            raise GraphError(f"{owner}: {n.describe()} is not a parameter; only parameters can be optimized")
        if n.index in seen:
            raise GraphError(f"{owner}: parameter {n.name!r} appears more than once in params")
        seen.add(n.index)
        nodes.append(n)
    return nodes


def _lerp_(a: np.ndarray, b: np.ndarray, w: float, tmp: np.ndarray) -> None:
    """a += w * (b - a) in place, with torch's two formulas (for |w| < 0.5 and otherwise)."""
    np.subtract(b, a, out=tmp)
    if abs(w) < 0.5:
        tmp *= w
        a += tmp
    else:
        tmp *= 1.0 - w
        np.subtract(b, tmp, out=a)


def _direction(g: np.ndarray, p: np.ndarray, maximize: bool, weight_decay: float) -> np.ndarray:
    """The gradient with maximize and (coupled) weight decay applied; never the graph's own array
    modified: a new array when anything changes."""
    if maximize:
        g = np.negative(g)
        if weight_decay != 0:
            g += weight_decay * p
    elif weight_decay != 0:
        g = g + weight_decay * p
    return g


# ---------------------------------------------------------------------------- optimizers


# Entries several optimizers share (each class lists them in its own table, in its own order).


def _lr(default: float) -> Hyper:
    return Hyper("lr", default, "the learning rate", H.LearningRate())


_WEIGHT_DECAY = Hyper("weight_decay", 0.0, "L2 penalty (decoupled for adamw)", H.NonNegative())
_EPS = Hyper("eps", 1e-8, "added to the denominator for numerical stability", H.NonNegative("epsilon value"))
_MOMENTUM = Hyper("momentum", 0.0, "momentum factor", H.NonNegative())
_MAXIMIZE = Hyper("maximize", False, "maximize the objective instead of minimizing it", H.Flag(), keyword_only=True)
_MAX_GRAD_NORM = Hyper(
    "max_grad_norm",
    None,
    "clip the global 2-norm of this optimizer's gradients to this value before each step",
    H.PositiveOrNone(),
    keyword_only=True,
)


class SGD(Optimizer):
    """Stochastic gradient descent, torch.optim.SGD's rule: the momentum buffer starts as the
    first gradient (no dampening on that step); nesterov needs momentum > 0 and dampening 0."""

    name = "sgd"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        _lr(1e-3),
        _MOMENTUM,
        Hyper("dampening", 0.0, "dampening of the momentum", H.Finite()),
        _WEIGHT_DECAY,
        Hyper("nesterov", False, "Nesterov momentum (needs momentum > 0 and dampening 0)", H.Flag()),
        _MAXIMIZE,
        _MAX_GRAD_NORM,
    )

    @classmethod
    def _check_together(cls, h: dict[str, Any]) -> None:
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise GraphError(
                f"{cls.__name__}: Nesterov momentum requires a momentum and zero dampening "
                f"(got momentum={h['momentum']}, dampening={h['dampening']})"
            )

    @classmethod
    def buffer_names(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ("momentum_buffer",) if h["momentum"] != 0 else ()

    def _update(self, live: list) -> None:
        h = self._hyper
        lr, momentum, dampening, wd = self.lr, h["momentum"], h["dampening"], h["weight_decay"]
        nesterov, maximize = h["nesterov"], h["maximize"]
        if momentum == 0 and wd == 0 and not maximize:
            # Plain SGD: the same arithmetic as below, without the per-parameter branching.
            for p, g, _, _ in live:
                p -= lr * g
            return
        for p, g, bufs, step in live:
            d = _direction(g, p, maximize, wd)
            if momentum != 0:
                buf = bufs[0]
                if step == 1:
                    np.copyto(buf, d)
                else:
                    buf *= momentum
                    buf += (1.0 - dampening) * d
                d = d + momentum * buf if nesterov else buf
            p -= lr * d


class Adam(Optimizer):
    """Adam (torch.optim.Adam): bias-corrected moments, optional amsgrad, L2 weight decay added
    to the gradient (or, with ``decoupled_weight_decay=True``, AdamW's decay of the weights)."""

    name = "adam"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        _lr(1e-3),
        Hyper(
            "betas", (0.9, 0.999), "coefficients of the running averages of the gradient and its square", H.UnitPair()
        ),
        _EPS,
        _WEIGHT_DECAY,
        Hyper("amsgrad", False, "use the maximum of past squared-gradient averages (AMSGrad)", H.Flag()),
        _MAXIMIZE,
        Hyper("decoupled_weight_decay", False, "apply weight decay as in AdamW", H.Flag(), keyword_only=True),
        _MAX_GRAD_NORM,
    )

    _non_negative_buffers: ClassVar[frozenset[str]] = frozenset({"exp_avg_sq", "max_exp_avg_sq"})

    @classmethod
    def buffer_names(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if h["amsgrad"] else ("exp_avg", "exp_avg_sq")

    def _update(self, live: list) -> None:
        h = self._hyper
        lr, (beta1, beta2), eps, wd = self.lr, h["betas"], h["eps"], h["weight_decay"]
        amsgrad, maximize, decoupled = h["amsgrad"], h["maximize"], h["decoupled_weight_decay"]
        w1, w2 = 1.0 - beta1, 1.0 - beta2
        for p, g, bufs, step in live:
            if decoupled:
                if wd != 0:
                    p *= 1.0 - lr * wd
                d = np.negative(g) if maximize else g
            else:
                d = _direction(g, p, maximize, wd)
            exp_avg, exp_avg_sq = bufs[0], bufs[1]
            tmp = np.empty_like(p)
            _lerp_(exp_avg, d, w1, tmp)
            exp_avg_sq *= beta2
            np.multiply(d, d, out=tmp)
            tmp *= w2
            exp_avg_sq += tmp
            step_size = lr / (1.0 - beta1**step)
            bias_correction2_sqrt = (1.0 - beta2**step) ** 0.5
            if amsgrad:
                np.maximum(bufs[2], exp_avg_sq, out=bufs[2])
                np.sqrt(bufs[2], out=tmp)
            else:
                np.sqrt(exp_avg_sq, out=tmp)
            tmp /= bias_correction2_sqrt
            tmp += eps
            np.divide(exp_avg, tmp, out=tmp)
            tmp *= -step_size
            p += tmp


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, weight_decay 1e-2 by default."""

    name = "adamw"
    hypers: ClassVar[tuple[Hyper, ...]] = H.changed(
        H.changed(Adam.hypers, "weight_decay", default=1e-2),
        "decoupled_weight_decay",
        default=True,
        fixed="use Adam for L2 weight decay",
    )


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop): optional centering (subtracts the squared mean gradient)
    and momentum (a zero-initialised buffer of gradient / root-mean-square)."""

    name = "rmsprop"
    hypers: ClassVar[tuple[Hyper, ...]] = (
        _lr(1e-2),
        Hyper("alpha", 0.99, "smoothing constant of the squared-gradient average", H.NonNegative()),
        _EPS,
        _WEIGHT_DECAY,
        _MOMENTUM,
        Hyper("centered", False, "normalise by the variance of the gradient, not its second moment", H.Flag()),
        _MAXIMIZE,
        _MAX_GRAD_NORM,
    )

    _non_negative_buffers: ClassVar[frozenset[str]] = frozenset({"square_avg"})

    @classmethod
    def buffer_names(cls, h: Mapping[str, Any]) -> tuple[str, ...]:
        names: tuple[str, ...] = ("square_avg",)
        if h["momentum"] > 0:
            names += ("momentum_buffer",)
        if h["centered"]:
            names += ("grad_avg",)
        return names

    def _update(self, live: list) -> None:
        h = self._hyper
        lr, alpha, eps, wd, momentum = self.lr, h["alpha"], h["eps"], h["weight_decay"], h["momentum"]
        centered, maximize = h["centered"], h["maximize"]
        w = 1.0 - alpha
        for p, g, bufs, _ in live:
            d = _direction(g, p, maximize, wd)
            square_avg = bufs[0]
            tmp = np.empty_like(p)
            square_avg *= alpha
            np.multiply(d, d, out=tmp)
            tmp *= w
            square_avg += tmp
            if centered:
                grad_avg = bufs[-1]
                _lerp_(grad_avg, d, w, tmp)
                np.multiply(grad_avg, grad_avg, out=tmp)
                np.subtract(square_avg, tmp, out=tmp)
                np.sqrt(tmp, out=tmp)
            else:
                np.sqrt(square_avg, out=tmp)
            tmp += eps
            if momentum > 0:
                buf = bufs[1]
                buf *= momentum
                np.divide(d, tmp, out=tmp)
                buf += tmp
                np.multiply(buf, -lr, out=tmp)
            else:
                np.divide(d, tmp, out=tmp)
                tmp *= -lr
            p += tmp
