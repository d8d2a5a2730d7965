"""A reusable harness that checks registry ops against PyTorch in float64: forward values, first
derivatives, second derivatives (double backward), finite differences, and float32 dtype keeping.

Case format
===========
Every module ``tests/ops/cases_*.py`` defines a list ``CASES`` of :class:`Case`; :func:`collect_cases`
imports all of them (new modules are picked up automatically, no registration needed)::

    from .harness import Case, F, I

    CASES = [
        Case(
            "add-bcast-row",                # unique, readable test id ("<op>-<variant>")
            "add",                          # registry op name(s) this case covers (str or tuple;
                                            #   aliases count: "clamp", "gather", ...)
            [F((4, 3)), F((3,))],           # inputs, passed to both expressions in this order
            lambda g, a, b: a + b,          # onlytorch expression: (graph, *input nodes) -> NodeId
            lambda a, b: a + b,             # torch expression: (*tensors) -> Tensor
        ),
    ]

Inputs
------
``F(shape, gen="normal", value=None, param=False, grad=True)``
    A float input. ``None`` in ``shape`` is the batch dimension: the node is a ``g.input`` of that
    static shape fed with a value whose batch size is ``Case.batch`` (default 4). ``param=True``
    makes it a ``g.parameter`` instead (no ``None`` then). ``grad=False`` leaves it out of the
    derivative checks (a mask, a condition). ``value`` fixes the value; otherwise ``gen`` draws it
    from the case's seeded RNG: one of :data:`GENERATORS` ("normal", "pos", "nonzero", "unit",
    "distinct", "mask", "small_ints", "large") or a callable ``(rng, shape) -> array``.
``I(shape, high=2, low=0, value=None)``
    An int64 input (labels, gather indices) with values in ``[low, high)``; never differentiated.
Python numbers and constant arrays can simply appear inside the two expressions.

Options (keywords of Case)
--------------------------
``diff=False``
    Forward only (comparisons, argmax, one_hot alone): additionally asserts that no gradient
    reaches any float input.
``grad2=False``
    Skip the double-backward comparison (only where torch's own second derivative is undefined).
``fd=False``
    Skip finite differences (kinks, ties, large inputs). Finite differences run ``ot.gradcheck``
    and ``ot.gradgradcheck`` on ``sum(out * R)`` and cost two forwards per input element, so keep
    ``fd`` cases small (:data:`FD_MAX_ELEMENTS`).
``float32=False``
    Skip the float32 run.
``batch``, ``rtol``, ``atol``, ``f32_rtol``
    Batch size for ``None`` dims and tolerances (forward; derivatives get 10x and 100x of them).
``xfail={"grad": "reason", ...}``
    Known engine bugs: the named checks ("forward", "grad", "grad2", "finite_differences",
    "float32") are marked ``xfail(strict=True)``, so they fail loudly once the bug is fixed.

What is checked, per case (see tests/ops/test_ops.py)
------------------------------------------------------
1. forward equals torch (integer outputs exactly); the static shape agrees with the runtime one;
   every named primitive op appears in the built graph, so a case cannot silently test something
   else (composite ops, ``defcomposite``, build other ops' nodes and are not looked for);
2. ``g.grad(sum(out * R), xs)`` equals torch autograd with ``grad_outputs=R`` (R random, seeded
   by the case id), and so do the values of ``g.grad(..., create_graph=True)``;
3. ``g.grad(sum_i sum(grad_i * V_i), xs)`` from the create_graph gradients equals torch's double
   backward (a gradient that does not exist on either side counts as zeros);
4. ``ot.gradcheck`` / ``ot.gradgradcheck`` (when ``fd``);
5. the same graph in float32 keeps float32 in every value and gradient, no op's numpy forward
   upcasts a float32 input, and the values are close to the float64 reference.

Every public op of :data:`COVERED_MODULES` must be named by some case (``test_every_op_has_a_case``);
add a module there together with its ``cases_*.py``. :func:`check_all` runs every check on a case
built on the fly (the hypothesis tests in test_properties.py).
"""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

import onlytorch as ot
from onlytorch.ops import REGISTRY, get_op

FD_MAX_ELEMENTS = 64
CHECKS = ("forward", "grad", "grad2", "finite_differences", "float32")

# The modules whose every public op must appear in some case (tests/ops/test_ops.py). Add a module
# here together with its cases_*.py file.
COVERED_MODULES = (
    "onlytorch.ops.elementwise",
    "onlytorch.ops.reduce",
    "onlytorch.ops.shape_ops",
    "onlytorch.ops.linalg",
    "onlytorch.ops.distributions",
    "onlytorch.ops.conv",
    "onlytorch.ops.pool",
    "onlytorch.ops.attention",
)


def _distinct(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Values at least 4/n apart (no ties for max/min/argmax, even under finite differences)."""
    n = int(np.prod(shape, dtype=np.int64))
    return (rng.permutation(np.linspace(-2.0, 2.0, max(n, 1)))[:n] + rng.uniform(-0.01, 0.01, n)).reshape(shape)


def _nonzero(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.3, 1.5, size=shape)


GENERATORS: dict[str, Callable[[np.random.Generator, tuple[int, ...]], np.ndarray]] = {
    "normal": lambda rng, shape: rng.standard_normal(shape),
    "pos": lambda rng, shape: rng.uniform(0.5, 2.0, shape),  # log, sqrt, pow bases, divisors
    "nonzero": _nonzero,  # |x| >= 0.3: away from the kinks of relu, abs, sign, ...
    "unit": lambda rng, shape: rng.uniform(-0.9, 0.9, shape),
    "distinct": _distinct,
    "mask": lambda rng, shape: rng.integers(0, 2, shape).astype(np.float64),
    "small_ints": lambda rng, shape: rng.integers(-2, 3, shape).astype(np.float64),  # ties for comparisons
    "large": lambda rng, shape: rng.choice([-1.0, 1.0], size=shape) * rng.uniform(50.0, 1000.0, shape),
}


@dataclass(frozen=True)
class F:
    """A float input (see the module docstring)."""

    shape: tuple[int | None, ...]
    gen: str | Callable[[np.random.Generator, tuple[int, ...]], np.ndarray] = "normal"
    value: Any = None
    param: bool = False
    grad: bool = True


@dataclass(frozen=True)
class I:  # noqa: E742  (short on purpose: it appears in every case table)
    """An int64 input (see the module docstring)."""

    shape: tuple[int | None, ...]
    high: int = 2
    low: int = 0
    value: Any = None


Spec = F | I


@dataclass(eq=False)
class Case:
    """One row of a case table (see the module docstring)."""

    id: str
    ops: str | tuple[str, ...]
    inputs: Sequence[Spec]
    ot: Callable[..., ot.NodeId]
    ref: Callable[..., torch.Tensor]
    diff: bool = True
    grad2: bool = True
    fd: bool = True
    float32: bool = True
    batch: int = 4
    rtol: float = 1e-10
    atol: float = 1e-12
    f32_rtol: float = 1e-4
    xfail: dict[str, str] = field(default_factory=dict)  # check name -> reason (a known engine bug)
    module: str = field(default="", compare=False)

    def __post_init__(self) -> None:
        if isinstance(self.ops, str):
            self.ops = (self.ops,)
        self.inputs = tuple(self.inputs)
        unknown = set(self.xfail) - set(CHECKS)
        if unknown:
            raise ValueError(f"case {self.id}: xfail names unknown checks {sorted(unknown)}; known: {CHECKS}")
        for spec in self.inputs:
            if isinstance(spec, F) and spec.param and None in spec.shape:
                raise ValueError(f"case {self.id}: a parameter cannot have a batch dimension")

    def __repr__(self) -> str:
        return f"Case({self.id!r})"

    @property
    def seed(self) -> int:
        return zlib.crc32(self.id.encode())

    def runtime_shape(self, shape: tuple[int | None, ...]) -> tuple[int, ...]:
        return tuple(self.batch if d is None else d for d in shape)

    def values(self) -> list[np.ndarray]:
        """The inputs' values (float64 / int64), the same on every call."""
        rng = np.random.default_rng(self.seed)
        out = []
        for spec in self.inputs:
            shape = self.runtime_shape(spec.shape)
            if isinstance(spec, I):
                v = rng.integers(spec.low, spec.high, shape) if spec.value is None else spec.value
                out.append(np.array(v, dtype=np.int64))
                continue
            if spec.value is not None:
                v = spec.value
            else:
                gen = GENERATORS[spec.gen] if isinstance(spec.gen, str) else spec.gen
                v = gen(rng, shape)
            v = np.array(v, dtype=np.float64)
            if v.shape != shape:
                raise ValueError(f"case {self.id}: value of shape {v.shape} for an input of shape {spec.shape}")
            out.append(v)
        return out

    def diff_positions(self) -> list[int]:
        """The inputs the derivative checks differentiate with respect to."""
        return [i for i, s in enumerate(self.inputs) if isinstance(s, F) and s.grad]

    def n_float_elements(self) -> int:
        return sum(int(np.prod(self.runtime_shape(self.inputs[i].shape))) for i in self.diff_positions())


# ---------------------------------------------------------------- collection


def collect_cases() -> list[Case]:
    """CASES of every ``cases_*`` module of this package, in module-name order."""
    package = importlib.import_module(__package__)
    cases: list[Case] = []
    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("cases_"):
            continue
        module = importlib.import_module(f"{__package__}.{info.name}")
        for c in module.CASES:
            c.module = info.name
            cases.append(c)
    seen: set[str] = set()
    for c in cases:
        if c.id in seen:
            raise ValueError(f"duplicate case id {c.id!r}")
        seen.add(c.id)
    return cases


def required_ops() -> list[str]:
    """Public op names (aliases included) registered by COVERED_MODULES."""
    names = []
    for name, op in REGISTRY.items():
        fn = op.build if op.build is not None else op.forward
        if op.public and fn.__module__ in COVERED_MODULES:
            names.append(name)
    return sorted(names)


# ---------------------------------------------------------------- the torch reference


@dataclass
class Result:
    out: np.ndarray
    grads: list[np.ndarray | None] = field(default_factory=list)  # first derivatives, per diff input
    grads_cg: list[np.ndarray | None] = field(default_factory=list)  # the same, via create_graph
    grads2: list[np.ndarray | None] = field(default_factory=list)  # second derivatives
    reached: bool = False  # some gradient reached some input (diff=False cases)


@dataclass
class Reference:
    result: Result
    R: np.ndarray
    V: list[np.ndarray]


_REF_CACHE: dict[str, Reference] = {}


def _np(t: torch.Tensor | None) -> np.ndarray | None:
    # force=True also converts the ZeroTensors some double backwards return (abs, relu)
    return None if t is None else t.detach().numpy(force=True).copy()


def reference(case: Case) -> Reference:
    """Torch's forward, first and second derivatives for the case (float64, cached)."""
    cached = _REF_CACHE.get(case.id)
    if cached is not None:
        return cached
    vals = case.values()
    diff = set(case.diff_positions()) if case.diff else set()
    ts = [torch.tensor(v, requires_grad=(i in diff)) for i, v in enumerate(vals)]
    out = case.ref(*ts)
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"case {case.id}: the torch expression returned {type(out).__name__}")
    if out.dtype == torch.bool:
        out = out.to(torch.float64)
    out_np = out.detach().numpy().copy()
    rng = np.random.default_rng(case.seed + 1)
    R = rng.standard_normal(out_np.shape)
    V = [rng.standard_normal(vals[i].shape) for i in sorted(diff)]
    res = Result(out_np)
    if case.diff:
        diff_ts = [ts[i] for i in sorted(diff)]
        if out.requires_grad:
            g1 = torch.autograd.grad(out, diff_ts, torch.tensor(R), create_graph=True, allow_unused=True)
        else:
            g1 = (None,) * len(diff_ts)
        res.grads = [_np(gi) for gi in g1]
        terms = [(gi * torch.tensor(v)).sum() for gi, v in zip(g1, V) if gi is not None]
        live = [t for t in terms if t.requires_grad]
        if live:
            g2 = torch.autograd.grad(sum(live), diff_ts, allow_unused=True)
            res.grads2 = [_np(gi) for gi in g2]
        else:
            res.grads2 = [None] * len(diff_ts)
    ref = Reference(res, R, V)
    _REF_CACHE[case.id] = ref
    return ref


# ---------------------------------------------------------------- the onlytorch side


@dataclass
class Built:
    g: ot.Graph
    inputs: list[ot.NodeId]
    out: ot.NodeId
    xs: list[ot.NodeId]  # the inputs differentiated with respect to
    loss: ot.NodeId | None = None  # sum(out * R)


def build(case: Case, dtype: str = "float64", with_loss: bool = True) -> Built:
    """The case's graph, its input values set; with_loss adds loss = sum(out * R)."""
    g = ot.Graph(dtype=dtype)
    nodes = []
    for i, (spec, v) in enumerate(zip(case.inputs, case.values())):
        name = f"x{i}"
        if isinstance(spec, I):
            n = g.input(name, spec.shape, dtype="int64")
            g.set_value(n, v)
        elif spec.param:
            n = g.parameter(name, value=v.astype(dtype))
        else:
            n = g.input(name, spec.shape)
            g.set_value(n, v.astype(dtype))
        nodes.append(n)
    out = case.ot(g, *nodes)
    if not isinstance(out, ot.NodeId):
        raise TypeError(f"case {case.id}: the onlytorch expression returned {type(out).__name__}, not a NodeId")
    xs = [nodes[i] for i in case.diff_positions()]
    b = Built(g, nodes, out, xs)
    if with_loss and xs:
        ref = reference(case)
        r = g.input("R", out.shape)
        g.set_value(r, ref.R.astype(dtype))
        b.loss = g.sum(out * r)
    return b


def run_onlytorch(case: Case, dtype: str = "float64") -> Result:
    """Forward, first derivatives (plain and create_graph) and second derivatives."""
    ref = reference(case)
    b = build(case, dtype)
    g = b.g
    res = Result(np.array(g.forward_node(b.out), copy=True))
    if b.loss is None:
        return res
    g.forward_node(b.loss)
    grads = g.grad(b.loss, b.xs, allow_unused=True)
    if not case.diff:
        res.reached = any(gi is not None for gi in grads)
        return res
    res.grads = grads
    firsts = g.grad(b.loss, b.xs, create_graph=True, allow_unused=True)
    res.grads_cg = [None if f is None else np.array(g.forward_node(f), copy=True) for f in firsts]
    total = None
    for i, (f, v) in enumerate(zip(firsts, ref.V)):
        if f is None:
            continue
        vn = g.input(f"V{i}", f.shape)
        g.set_value(vn, v.astype(dtype))
        term = g.sum(f * vn)
        total = term if total is None else total + term
    if total is None:
        res.grads2 = [None] * len(b.xs)
    else:
        g.forward_node(total)
        res.grads2 = g.grad(total, b.xs, allow_unused=True)
    return res


# ---------------------------------------------------------------- comparisons


def _zeros_if_none(a: np.ndarray | None, like: np.ndarray) -> np.ndarray:
    return np.zeros_like(like, dtype=np.float64) if a is None else a


def assert_close(actual: np.ndarray, expected: np.ndarray, rtol: float, atol: float, what: str) -> None:
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, torch {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)


def check_forward(case: Case) -> None:
    ref = reference(case).result
    b = build(case, with_loss=False)
    val = b.g.forward_node(b.out)
    # The static shape agrees with the runtime one (None is the batch size).
    static = b.out.shape
    assert len(static) == val.ndim and all(s is None or s == d for s, d in zip(static, val.shape)), (
        f"static shape {static} but runtime shape {val.shape}"
    )
    if ref.out.dtype.kind in "iu":
        assert val.dtype.kind in "iu", f"torch gives integers, onlytorch {val.dtype}"
        np.testing.assert_array_equal(val, ref.out)
    else:
        assert val.dtype == np.float64, f"forward dtype {val.dtype}"
        assert_close(val, ref.out, case.rtol, case.atol, "forward")
    # Every primitive op the case names appears in the graph.
    present = {id(n.op) for n in b.g._nodes if n.op is not None}
    for name in case.ops:
        op = get_op(name)
        if op.build is None:
            assert id(op) in present, f"case names op {name!r} but its graph has no {op.name} node"


def check_grad(case: Case) -> None:
    ref = reference(case).result
    res = run_onlytorch(case)
    if not case.diff:
        assert not res.reached, "a gradient reached an input through a forward-only op"
        return
    vals = case.values()
    rtol, atol = 10 * case.rtol, 10 * case.atol
    for k, i in enumerate(case.diff_positions()):
        expected = _zeros_if_none(ref.grads[k], vals[i])
        assert_close(_zeros_if_none(res.grads[k], vals[i]), expected, rtol, atol, f"d out / d x{i}")
        assert_close(_zeros_if_none(res.grads_cg[k], vals[i]), expected, rtol, atol, f"d out / d x{i} (create_graph)")


def check_grad2(case: Case) -> None:
    ref = reference(case).result
    res = run_onlytorch(case)
    vals = case.values()
    rtol, atol = 100 * case.rtol, 100 * case.atol
    for k, i in enumerate(case.diff_positions()):
        expected = _zeros_if_none(ref.grads2[k], vals[i])
        assert_close(_zeros_if_none(res.grads2[k], vals[i]), expected, rtol, atol, f"second derivative, x{i}")


def check_finite_differences(case: Case) -> None:
    assert case.n_float_elements() <= FD_MAX_ELEMENTS, (
        f"case {case.id} has {case.n_float_elements()} input elements: too many for finite differences "
        "(make it smaller or pass fd=False)"
    )
    b = build(case)
    assert b.loss is not None
    b.g.forward_node(b.loss)
    assert ot.gradcheck(b.g, b.loss, b.xs)
    if case.grad2:
        assert ot.gradgradcheck(b.g, b.loss, b.xs)


@contextlib.contextmanager
def recording_forward_dtypes() -> Iterator[list[tuple[str, set[np.dtype], np.dtype]]]:
    """Record (op, input dtypes, output dtype) of every numpy forward run inside the block."""
    seen: list[tuple[str, set[np.dtype], np.dtype]] = []
    ops = {id(op): op for op in REGISTRY.values() if op.build is None}.values()
    originals = [(op, op.forward) for op in ops]

    def wrap(op_name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def forward(*args: Any, **kwargs: Any) -> Any:
            out = fn(*args, **kwargs)
            in_dtypes = {a.dtype for a in args if isinstance(a, np.ndarray)}
            seen.append((op_name, in_dtypes, np.asarray(out).dtype))
            return out

        return forward

    try:
        for op, fn in originals:
            op.forward = wrap(op.name, fn)
        yield seen
    finally:
        for op, fn in originals:
            op.forward = fn


def check_float32(case: Case) -> None:
    ref = reference(case)
    with recording_forward_dtypes() as seen:
        res = run_onlytorch(case, "float32")
    # An op whose array inputs are all float32 must not compute in float64 (the graph would cast
    # the result back, hiding the cost); mixed int/float inputs are numpy's promotion, not an upcast.
    upcasts = sorted(
        {
            name
            for name, ins, out in seen
            if ins and all(d.kind == "f" for d in ins) and out.kind == "f" and out not in ins
        }
    )
    assert not upcasts, f"numpy forwards that upcast float32 inputs: {upcasts}"

    def close(a: np.ndarray, e: np.ndarray, what: str, scale: float = 1.0) -> None:
        tol = case.f32_rtol * scale
        atol = tol * max(1.0, float(np.max(np.abs(e[np.isfinite(e)]), initial=0.0)))
        assert_close(a.astype(np.float64), e, tol, atol, what)

    if ref.result.out.dtype.kind in "iu":
        assert res.out.dtype.kind in "iu", f"forward dtype {res.out.dtype}"
    else:
        assert res.out.dtype == np.float32, f"forward dtype {res.out.dtype}"
        close(res.out, ref.result.out, "forward (float32)")
    if not case.diff:
        return
    vals = case.values()
    for k, i in enumerate(case.diff_positions()):
        checks = [
            ("gradient", res.grads[k], ref.result.grads[k], 1.0),
            ("create_graph gradient", res.grads_cg[k], ref.result.grads[k], 1.0),
        ]
        if case.grad2:
            checks.append(("second derivative", res.grads2[k], ref.result.grads2[k], 10.0))
        for label, got, expected, scale in checks:
            if got is not None:
                assert got.dtype == np.float32, f"{label} of x{i}: dtype {got.dtype}"
            got = _zeros_if_none(got, vals[i])
            close(got, _zeros_if_none(expected, vals[i]), f"{label} of x{i} (float32)", scale)


def check_all(case: Case, finite_differences: bool = False, float32: bool = False) -> None:
    """Every check for a case built on the fly (property tests); forgets its torch reference after."""
    try:
        check_forward(case)
        check_grad(case)
        if case.diff and case.grad2:
            check_grad2(case)
        if finite_differences and case.diff and case.fd:
            check_finite_differences(case)
        if float32 and case.float32:
            check_float32(case)
    finally:
        _REF_CACHE.pop(case.id, None)
