"""Cases for the elementwise ops (arithmetic, comparisons, unary math, activations), the
reductions and softmax, including broadcasting, kinks/ties and diamond-shaped graphs.
See harness.py for the case format."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

from .harness import Case, F, I

T = torch.tensor

# ---------------------------------------------------------------- binary arithmetic with broadcasting

# op -> (onlytorch expression, torch expression, generator of a, generator of b)
BINARY = {
    "add": (lambda g, a, b: a + b, lambda a, b: a + b, "normal", "normal"),
    "sub": (lambda g, a, b: a - b, lambda a, b: a - b, "normal", "normal"),
    "mul": (lambda g, a, b: a * b, lambda a, b: a * b, "normal", "normal"),
    "div": (lambda g, a, b: a / b, lambda a, b: a / b, "normal", "nonzero"),
    # a ** b with both differentiated: the gradient with respect to the exponent too
    "pow": (lambda g, a, b: a**b, lambda a, b: a**b, "pos", "normal"),
    "maximum": (lambda g, a, b: g.maximum(a, b), torch.maximum, "normal", "normal"),
    "minimum": (lambda g, a, b: g.minimum(a, b), torch.minimum, "normal", "normal"),
}

# variant -> (spec of a, spec of b)
BROADCASTS = {
    "same": (F((4, 3)), F((4, 3))),
    "row": (F((4, 3)), F((3,))),  # (4,3) op (3,)
    "col-row": (F((4, 1)), F((1, 3))),  # both operands broadcast
    "0d": (F(()), F((2, 3))),  # a 0-d operand
    "3d": (F((2, 1, 3)), F((4, 1))),  # different ranks, both broadcast
    "batch-param": (F((None, 3)), F((3,), param=True)),  # a (N,3) input and a parameter
    "batch-col": (F((None, 3)), F((None, 1))),  # two batch inputs
}


def _with_gen(spec: F, gen: str) -> F:
    return F(spec.shape, gen=gen, param=spec.param)


# A known engine bug: g.grad / backward_nodes give None to the second of two targets whose gradient
# is the very same node (add of two same-shaped inputs returns gy for both): Graph._run_backward
# (graph.py) releases a gradient node's value right after the first target reads it.

BINARY_CASES = [
    Case(
        f"{op}-{variant}",
        op,
        [_with_gen(sa, ga), _with_gen(sb, gb)],
        ot_fn,
        ref_fn,
    )
    for op, (ot_fn, ref_fn, ga, gb) in BINARY.items()
    for variant, (sa, sb) in BROADCASTS.items()
]

# Python numbers on either side (the reflected operators), and fixed exponents.
SCALAR_CASES = [
    Case("add-pyscalar", "add", [F((4, 3))], lambda g, a: a + 2.5, lambda a: a + 2.5),
    Case("add-pyscalar-reflected", "add", [F((4, 3))], lambda g, a: 2.5 + a, lambda a: 2.5 + a),
    Case("sub-pyscalar-reflected", "sub", [F((None, 3))], lambda g, a: 1.5 - a, lambda a: 1.5 - a),
    Case("mul-pyscalar", "mul", [F((4, 3))], lambda g, a: a * -1.5, lambda a: a * -1.5),
    Case("div-pyscalar-reflected", "div", [F((4, 3), "nonzero")], lambda g, a: 3.0 / a, lambda a: 3.0 / a),
    Case("div-pyscalar", "div", [F((4, 3))], lambda g, a: a / 4.0, lambda a: a / 4.0),
    Case("pow-square-negative-base", "pow", [F((4, 3))], lambda g, a: a**2, lambda a: a**2),
    Case("pow-cube", "pow", [F((None, 3))], lambda g, a: a**3, lambda a: a**3),
    Case("pow-sqrt", "pow", [F((4, 3), "pos")], lambda g, a: a**0.5, lambda a: a**0.5),
    Case("pow-negative-exponent", "pow", [F((4, 3), "pos")], lambda g, a: a**-1.5, lambda a: a**-1.5),
    Case("pow-exponent-only", "pow", [F((4, 3))], lambda g, b: 2.0**b, lambda b: 2.0**b),
    Case(
        "pow-array-base",
        "pow",
        [F((3,))],
        lambda g, b: np.array([0.5, 1.5, 3.0]) ** b,
        lambda b: T([0.5, 1.5, 3.0]) ** b,
    ),
    Case(
        "maximum-pyscalar", "maximum", [F((4, 3))], lambda g, a: g.maximum(a, 0.25), lambda a: torch.clamp(a, min=0.25)
    ),
    Case(
        "minimum-pyscalar", "minimum", [F((4, 3))], lambda g, a: g.minimum(0.25, a), lambda a: torch.clamp(a, max=0.25)
    ),
    Case("neg", "neg", [F((4, 3))], lambda g, a: -a, lambda a: -a),
    Case("neg-batch", "neg", [F((None, 2, 3))], lambda g, a: g.neg(a), lambda a: -a),
]

# Kinks and ties: torch's conventions, exactly.
TIE = np.array([[1.0, -2.0, 0.5], [0.0, 3.0, -1.0]])
TIE_CASES = [
    # maximum/minimum ties split the gradient 0.5/0.5
    Case(
        "maximum-ties",
        "maximum",
        [F((2, 3), value=TIE), F((2, 3), value=[[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]])],
        lambda g, a, b: g.maximum(a, b),
        torch.maximum,
        fd=False,
    ),
    Case(
        "minimum-ties",
        "minimum",
        [F((2, 3), value=TIE), F((2, 3), value=[[1.0, 0.0, 0.5], [0.0, 1.0, -1.0]])],
        lambda g, a, b: g.minimum(a, b),
        torch.minimum,
        fd=False,
    ),
    Case(
        "maximum-same-node",
        "maximum",
        [F((4, 3))],
        lambda g, a: g.maximum(a, a),
        lambda a: torch.maximum(a, a),
        fd=False,
    ),
    Case(
        "minimum-ties-bcast",
        "minimum",
        [F((2, 3), value=TIE), F((3,), value=[1.0, 3.0, 0.0])],
        lambda g, a, b: g.minimum(a, b),
        torch.minimum,
        fd=False,
    ),
    # pow at a zero base (torch: d/da 0**0 = 0, d/db 0**b = 0 for b >= 0)
    # (torch's second derivative there is NaN: d/db of b * a**(b-1) holds log(0))
    Case(
        "pow-zero-base",
        "pow",
        [F((4,), value=[0.0, 0.0, 0.0, 2.0]), F((4,), value=[0.0, 2.0, 3.0, 0.0])],
        lambda g, a, b: a**b,
        lambda a, b: a**b,
        fd=False,
        grad2=False,
    ),
    Case(
        "pow-zero-exponent-constant",
        "pow",
        [F((3,), value=[0.0, 1.0, -2.0])],
        lambda g, a: a**0,
        lambda a: a**0,
        fd=False,
    ),
]

# ---------------------------------------------------------------- clip / where


def _bounds(rng: np.random.Generator, shape: tuple[int, ...], sign: float) -> np.ndarray:
    return sign * rng.uniform(0.2, 1.0, shape)


CLIP_AT = np.array([-0.5, 0.5, 0.0, 1.0, -1.0, 0.49])
CLIP_CASES = [
    Case("clip-pyscalar", "clip", [F((4, 3))], lambda g, x: g.clip(x, -0.5, 0.5), lambda x: torch.clamp(x, -0.5, 0.5)),
    Case("clip-batch", "clip", [F((None, 3))], lambda g, x: g.clip(x, -0.7, 0.3), lambda x: torch.clamp(x, -0.7, 0.3)),
    Case(
        "clip-tensor-bounds-bcast",
        "clip",
        [F((4, 3)), F((3,), gen=lambda r, s: _bounds(r, s, -1.0)), F((4, 1), gen=lambda r, s: _bounds(r, s, 1.0))],
        lambda g, x, lo, hi: g.clip(x, lo, hi),
        lambda x, lo, hi: torch.clamp(x, lo, hi),
    ),
    Case("clamp-alias", "clamp", [F((4, 3))], lambda g, x: g.clamp(x, -0.4, 0.6), lambda x: torch.clamp(x, -0.4, 0.6)),
    # at the bounds the gradient passes to x (as torch.clamp)
    Case(
        "clip-at-bounds",
        "clip",
        [F((6,), value=CLIP_AT)],
        lambda g, x: g.clip(x, -0.5, 0.5),
        lambda x: torch.clamp(x, -0.5, 0.5),
        fd=False,
    ),
    Case(
        "clip-at-tensor-bounds",
        "clip",
        [F((6,), value=CLIP_AT), F((), value=-0.5), F((), value=0.5)],
        lambda g, x, lo, hi: g.clip(x, lo, hi),
        lambda x, lo, hi: torch.clamp(x, lo, hi),
        fd=False,
    ),
    # lo > hi: the result is hi everywhere, so is the gradient's destination (as torch)
    Case(
        "clip-lo-above-hi",
        "clip",
        [F((6,), value=CLIP_AT), F((), value=0.5), F((), value=-0.5)],
        lambda g, x, lo, hi: g.clip(x, lo, hi),
        lambda x, lo, hi: torch.clamp(x, lo, hi),
        fd=False,
    ),
]

WHERE_CASES = [
    Case(
        "where-mask",
        "where",
        [F((4, 3), "mask", grad=False), F((4, 3)), F((4, 3))],
        lambda g, c, a, b: g.where(c, a, b),
        lambda c, a, b: torch.where(c.bool(), a, b),
    ),
    Case(
        "where-bcast",
        "where",
        [F((4, 1), "mask", grad=False), F((4, 3)), F(())],
        lambda g, c, a, b: g.where(c, a, b),
        lambda c, a, b: torch.where(c.bool(), a, b),
    ),
    Case(
        "where-batch-pyscalar",
        "where",
        [F((None, 3), "mask", grad=False), F((None, 3))],
        lambda g, c, a: g.where(c, 0.5, a),
        lambda c, a: torch.where(c.bool(), 0.5, a),
    ),
    Case(
        "where-int-cond",
        "where",
        [I((4, 3)), F((4, 3)), F((3,))],
        lambda g, c, a, b: g.where(c, a, b),
        lambda c, a, b: torch.where(c.bool(), a, b),
    ),
    # the condition computed from the same input (a diamond through a comparison)
    Case(
        "where-cond-from-x",
        ("where", "greater", "mul"),
        [F((4, 3), "nonzero")],
        lambda g, x: g.where(x > 0, x * x, 0.1 * x),
        lambda x: torch.where(x > 0, x * x, 0.1 * x),
    ),
]

# ---------------------------------------------------------------- comparisons (forward only)

COMPARISONS = {
    "greater": (lambda g, a, b: g.greater(a, b), torch.gt),
    "greater_equal": (lambda g, a, b: g.greater_equal(a, b), torch.ge),
    "less": (lambda g, a, b: g.less(a, b), torch.lt),
    "less_equal": (lambda g, a, b: g.less_equal(a, b), torch.le),
    "equal": (lambda g, a, b: g.equal(a, b), torch.eq),
    "not_equal": (lambda g, a, b: g.not_equal(a, b), torch.ne),
}
COMPARISON_CASES = [
    Case(
        f"{op}-{variant}",
        op,
        [F(sa.shape, "small_ints", param=sa.param), F(sb.shape, "small_ints", param=sb.param)],
        ot_fn,
        ref_fn,
        diff=False,
    )
    for op, (ot_fn, ref_fn) in COMPARISONS.items()
    for variant, (sa, sb) in BROADCASTS.items()
    if variant in ("same", "col-row", "batch-param")
] + [
    Case("greater-operator", "greater", [F((4, 3)), F((3,))], lambda g, a, b: a > b, lambda a, b: a > b, diff=False),
    Case(
        "greater_equal-operator",
        "greater_equal",
        [F((4, 3), "small_ints")],
        lambda g, a: a >= 0.0,
        lambda a: a >= 0.0,
        diff=False,
    ),
    Case("less-operator", "less", [F((4, 3)), F((3,))], lambda g, a, b: a < b, lambda a, b: a < b, diff=False),
    Case(
        "less_equal-operator",
        "less_equal",
        [F((None, 3), "small_ints")],
        lambda g, a: a <= 1.0,
        lambda a: a <= 1.0,
        diff=False,
    ),
]

# ---------------------------------------------------------------- unary math and activations

# name -> (ops, onlytorch expression, torch expression, generator)
UNARY = {
    "exp": ("exp", lambda g, x: g.exp(x), torch.exp, "normal"),
    "log": ("log", lambda g, x: g.log(x), torch.log, "pos"),
    "sqrt": ("sqrt", lambda g, x: g.sqrt(x), torch.sqrt, "pos"),
    "abs": ("abs", lambda g, x: g.abs(x), torch.abs, "nonzero"),
    "abs-operator": ("abs", lambda g, x: abs(x), torch.abs, "nonzero"),
    "sign": ("sign", lambda g, x: g.sign(x) * x, lambda x: torch.sign(x) * x, "nonzero"),
    "sin": ("sin", lambda g, x: g.sin(x), torch.sin, "normal"),
    "cos": ("cos", lambda g, x: g.cos(x), torch.cos, "normal"),
    "erf": ("erf", lambda g, x: g.erf(x), torch.erf, "normal"),
    "tanh": ("tanh", lambda g, x: g.tanh(x), torch.tanh, "normal"),
    "sigmoid": ("sigmoid", lambda g, x: g.sigmoid(x), torch.sigmoid, "normal"),
    "relu": ("relu", lambda g, x: g.relu(x), torch.relu, "nonzero"),
    "leaky_relu": ("leaky_relu", lambda g, x: g.leaky_relu(x), TF.leaky_relu, "nonzero"),
    "leaky_relu-slope": (
        "leaky_relu",
        lambda g, x: g.leaky_relu(x, negative_slope=0.2),
        lambda x: TF.leaky_relu(x, 0.2),
        "nonzero",
    ),
    "elu": ("elu", lambda g, x: g.elu(x), TF.elu, "nonzero"),
    "elu-alpha": ("elu", lambda g, x: g.elu(x, alpha=0.5), lambda x: TF.elu(x, alpha=0.5), "nonzero"),
    "gelu": ("gelu", lambda g, x: g.gelu(x), TF.gelu, "normal"),
    "gelu-tanh": (
        "gelu",
        lambda g, x: g.gelu(x, approximate="tanh"),
        lambda x: TF.gelu(x, approximate="tanh"),
        "normal",
    ),
    "softplus": ("softplus", lambda g, x: g.softplus(x), TF.softplus, "normal"),
    "softplus-beta": ("softplus", lambda g, x: g.softplus(x, beta=2.0), lambda x: TF.softplus(x, beta=2.0), "normal"),
    "square": ("square", lambda g, x: g.square(x), torch.square, "normal"),
    "identity": ("identity", lambda g, x: g.identity(x), lambda x: x * 1.0, "normal"),
}
UNARY_CASES = [
    Case(f"{name}{suffix}", ops, [F(shape, gen)], ot_fn, ref_fn)
    for name, (ops, ot_fn, ref_fn, gen) in UNARY.items()
    for suffix, shape in (("", (4, 3)), ("-batch", (None, 3)), ("-0d", ()))
]

ACTIVATION_EDGE_CASES = [
    # kinks, with torch's derivative there: relu'(0) = 0, abs'(0) = 0, leaky_relu'(0) = slope, elu'(0) = alpha
    Case(
        "relu-kink", "relu", [F((5,), value=[-1.0, 0.0, 0.0, 2.0, -0.0])], lambda g, x: g.relu(x), torch.relu, fd=False
    ),
    Case("abs-kink", "abs", [F((4,), value=[-1.0, 0.0, 2.0, -0.0])], lambda g, x: g.abs(x), torch.abs, fd=False),
    Case("sign-at-zero", "sign", [F((4,), value=[-1.0, 0.0, 2.0, -0.0])], lambda g, x: g.sign(x), torch.sign, fd=False),
    Case(
        "leaky_relu-kink",
        "leaky_relu",
        [F((3,), value=[-1.0, 0.0, 2.0])],
        lambda g, x: g.leaky_relu(x, negative_slope=0.1),
        lambda x: TF.leaky_relu(x, 0.1),
        fd=False,
    ),
    # (torch's elu double backward masks x < 0 while its first derivative uses x <= 0: at the kink
    # the second derivative is one-sided either way, so it is not compared there)
    Case(
        "elu-kink",
        "elu",
        [F((3,), value=[-1.0, 0.0, 2.0])],
        lambda g, x: g.elu(x, alpha=0.7),
        lambda x: TF.elu(x, alpha=0.7),
        fd=False,
        grad2=False,
    ),
    # sqrt at 0: an infinite slope, as torch (its second derivative there is NaN/inf: not compared)
    Case(
        "sqrt-at-zero",
        "sqrt",
        [F((3,), value=[0.0, 1.0, 4.0])],
        lambda g, x: g.sqrt(x),
        torch.sqrt,
        fd=False,
        grad2=False,
    ),
    # large |x|: no overflow, saturated values and derivatives
    Case(
        "sigmoid-large",
        "sigmoid",
        [F((8,), value=[-1000.0, -750.0, -40.0, -0.0, 0.0, 40.0, 750.0, 1000.0])],
        lambda g, x: g.sigmoid(x),
        torch.sigmoid,
        fd=False,
    ),
    Case("sigmoid-large-random", "sigmoid", [F((4, 3), "large")], lambda g, x: g.sigmoid(x), torch.sigmoid, fd=False),
    Case("tanh-large", "tanh", [F((4, 3), "large")], lambda g, x: g.tanh(x), torch.tanh, fd=False),
    Case("softplus-large", "softplus", [F((4, 3), "large")], lambda g, x: g.softplus(x), TF.softplus, fd=False),
    # softplus's linear region beyond the threshold (beta x > threshold), on both sides of it
    Case(
        "softplus-threshold",
        "softplus",
        [F((6,), value=[19.0, 19.9, 20.1, 25.0, -25.0, 0.3])],
        lambda g, x: g.softplus(x),
        TF.softplus,
        fd=False,
    ),
    Case(
        "softplus-threshold-beta",
        "softplus",
        [F((6,), value=[0.5, 1.4, 1.6, 3.0, -3.0, 0.1])],
        lambda g, x: g.softplus(x, beta=2.0, threshold=3.0),
        lambda x: TF.softplus(x, beta=2.0, threshold=3.0),
        fd=False,
    ),
    Case(
        "softplus-threshold-smooth-side",
        "softplus",
        [F((4, 3), gen=lambda r, s: r.uniform(-3.0, 1.3, s))],
        lambda g, x: g.softplus(x, beta=2.0, threshold=3.0),
        lambda x: TF.softplus(x, beta=2.0, threshold=3.0),
    ),
    Case("gelu-wide", "gelu", [F((4, 3), gen=lambda r, s: r.uniform(-6.0, 6.0, s))], lambda g, x: g.gelu(x), TF.gelu),
    Case("erf-wide", "erf", [F((4, 3), gen=lambda r, s: r.uniform(-4.0, 4.0, s))], lambda g, x: g.erf(x), torch.erf),
]

STOP_GRADIENT_CASES = [
    # its gradient is zero (none); finite differences see through it, so they do not apply
    Case(
        "stop_gradient", "stop_gradient", [F((4, 3))], lambda g, x: g.stop_gradient(x), lambda x: x.detach(), fd=False
    ),
    Case(
        "stop_gradient-diamond",
        ("stop_gradient", "mul"),
        [F((4, 3))],
        lambda g, x: x * g.stop_gradient(x),
        lambda x: x * x.detach(),
        fd=False,
    ),
    Case(
        "stop_gradient-int",
        "stop_gradient",
        [I((4, 3), high=9)],
        lambda g, i: g.stop_gradient(i),
        lambda i: i,
        diff=False,
    ),
    Case("identity-int", "identity", [I((4, 3), high=9)], lambda g, i: g.identity(i), lambda i: i, diff=False),
    Case(
        "detach-alias",
        ("detach", "tanh"),
        [F((None, 3))],
        lambda g, x: g.tanh(x) + g.detach(g.tanh(x)) * x,
        lambda x: torch.tanh(x) + torch.tanh(x).detach() * x,
        fd=False,
    ),
]

# ---------------------------------------------------------------- diamonds: one node feeding several


def _t_diamond(g, x):
    t = g.tanh(x)
    return t * t + g.sin(t)


def _t_diamond_ref(x):
    t = torch.tanh(x)
    return t * t + torch.sin(t)


DIAMOND_CASES = [
    Case("diamond-tanh-sin", ("tanh", "mul", "sin", "add"), [F((4, 3))], _t_diamond, _t_diamond_ref),
    Case("diamond-x-times-x", "mul", [F((None, 3))], lambda g, x: x * x, lambda x: x * x),
    Case("diamond-x-plus-x", "add", [F((4, 3))], lambda g, x: x + x, lambda x: x + x),
    Case("diamond-x-minus-x", "sub", [F((4, 3))], lambda g, x: (x - x) * x, lambda x: (x - x) * x),
    Case(
        "diamond-minimum-same-node",
        "minimum",
        [F((4, 3))],
        lambda g, x: g.minimum(x, x) * x,
        lambda x: torch.minimum(x, x) * x,
        fd=False,
    ),
    Case("diamond-x-over-x", "div", [F((4, 3), "nonzero")], lambda g, x: x / x + x, lambda x: x / x + x),
    Case("diamond-x-pow-x", "pow", [F((4, 3), "pos")], lambda g, x: x**x, lambda x: x**x),
    Case(
        "diamond-exp-sin",
        ("exp", "sin", "mul", "add"),
        [F((2, 3))],
        lambda g, x: g.exp(x) * g.sin(x) + x,
        lambda x: torch.exp(x) * torch.sin(x) + x,
    ),
    Case(
        "diamond-bcast",
        ("mul", "sum", "sub"),
        [F((4, 3))],
        lambda g, x: x * g.sum(x, axis=0) - x,
        lambda x: x * x.sum(0) - x,
    ),
    Case(
        "diamond-entropy",
        ("softmax", "log_softmax", "mul", "sum"),
        [F((4, 5))],
        lambda g, x: -g.sum(g.softmax(x) * g.log_softmax(x), axis=-1),
        lambda x: -(torch.softmax(x, -1) * torch.log_softmax(x, -1)).sum(-1),
    ),
    Case(
        "diamond-two-params",
        ("mul", "add", "tanh"),
        [F((None, 3)), F((3,), param=True)],
        lambda g, x, w: g.tanh(x * w) * w + x,
        lambda x, w: torch.tanh(x * w) * w + x,
    ),
]

# ---------------------------------------------------------------- reductions


REDUCTIONS = {
    "sum": (lambda x, axis, keep: x.sum(dim=axis, keepdim=keep), "normal"),
    "mean": (lambda x, axis, keep: x.mean(dim=axis, keepdim=keep), "normal"),
    "max": (lambda x, axis, keep: torch.amax(x, dim=() if axis is None else axis, keepdim=keep), "distinct"),
    "min": (lambda x, axis, keep: torch.amin(x, dim=() if axis is None else axis, keepdim=keep), "distinct"),
    "logsumexp": (
        lambda x, axis, keep: torch.logsumexp(x, dim=tuple(range(x.ndim)) if axis is None else axis, keepdim=keep),
        "normal",
    ),
    "norm": (lambda x, axis, keep: torch.linalg.vector_norm(x, dim=axis, keepdim=keep), "normal"),
}

# variant -> (shape, axis, keepdims)
REDUCTION_AXES = {
    "all": ((2, 3, 4), None, False),
    "all-keep": ((2, 3), None, True),
    "axis1": ((2, 3, 4), 1, False),
    "axis-neg": ((2, 3, 4), -1, True),
    "axis0-keep": ((3, 4), 0, True),
    "tuple": ((2, 3, 4), (0, 2), False),
    "tuple-neg-keep": ((2, 3, 4), (-1, 0), True),
    "1d": ((5,), 0, False),
    "batch-axis1": ((None, 3), 1, False),
    "batch-over-batch": ((None, 3), 0, True),
    "batch-all": ((None, 3), None, False),
}


def _reduction_case(op: str, variant: str) -> Case:
    ref_fn, gen = REDUCTIONS[op]
    shape, axis, keep = REDUCTION_AXES[variant]
    return Case(
        f"{op}-{variant}",
        op,
        [F(shape, gen)],
        lambda g, x: getattr(g, op)(x, axis=axis, keepdims=keep),
        lambda x: ref_fn(x, axis, keep),
    )


REDUCTION_CASES = [_reduction_case(op, variant) for op in REDUCTIONS for variant in REDUCTION_AXES]

TIES = np.array([[1.0, 3.0, 3.0, -1.0], [2.0, 2.0, 2.0, 2.0], [-5.0, 0.0, 4.0, 4.0]])
REDUCTION_EDGE_CASES = [
    # ties share the gradient equally (torch amax/amin, and the full max/min)
    Case(
        "max-ties-axis",
        "max",
        [F((3, 4), value=TIES)],
        lambda g, x: g.max(x, axis=1),
        lambda x: torch.amax(x, 1),
        fd=False,
    ),
    Case(
        "max-ties-axis0",
        "max",
        [F((3, 4), value=TIES)],
        lambda g, x: g.max(x, axis=0, keepdims=True),
        lambda x: torch.amax(x, 0, keepdim=True),
        fd=False,
    ),
    Case("max-ties-all", "max", [F((3, 4), value=TIES)], lambda g, x: g.max(x), lambda x: torch.max(x), fd=False),
    Case(
        "min-ties-axis",
        "min",
        [F((3, 4), value=-TIES)],
        lambda g, x: g.min(x, axis=-1),
        lambda x: torch.amin(x, -1),
        fd=False,
    ),
    Case("min-ties-all", "min", [F((3, 4), value=-TIES)], lambda g, x: g.min(x), lambda x: torch.min(x), fd=False),
    # a zero vector: norm's gradient there is 0 (torch's second derivative there is NaN: not compared)
    Case(
        "norm-zero-row",
        "norm",
        [F((2, 3), value=[[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])],
        lambda g, x: g.norm(x, axis=1),
        lambda x: torch.linalg.vector_norm(x, dim=1),
        fd=False,
        grad2=False,
    ),
    # logsumexp / softmax of large values, without overflow
    Case(
        "logsumexp-large",
        "logsumexp",
        [F((4, 3), "large")],
        lambda g, x: g.logsumexp(x, axis=1),
        lambda x: torch.logsumexp(x, 1),
        fd=False,
    ),
    Case(
        "softmax-large",
        "softmax",
        [F((4, 3), "large")],
        lambda g, x: g.softmax(x),
        lambda x: torch.softmax(x, -1),
        fd=False,
    ),
    Case(
        "log_softmax-large",
        "log_softmax",
        [F((4, 3), "large")],
        lambda g, x: g.log_softmax(x),
        lambda x: torch.log_softmax(x, -1),
        fd=False,
    ),
    # -inf entries (masked logits): zero weight, no NaN
    Case(
        "logsumexp-neg-inf",
        "logsumexp",
        [F((2, 3), value=[[-np.inf, 0.5, 1.0], [2.0, -np.inf, -1.0]])],
        lambda g, x: g.logsumexp(x, axis=-1),
        lambda x: torch.logsumexp(x, -1),
        fd=False,
    ),
    Case(
        "softmax-neg-inf",
        "softmax",
        [F((2, 3), value=[[-np.inf, 0.5, 1.0], [2.0, -np.inf, -1.0]])],
        lambda g, x: g.softmax(x),
        lambda x: torch.softmax(x, -1),
        fd=False,
    ),
    Case(
        "log_softmax-neg-inf",
        "log_softmax",
        [F((2, 3), value=[[-np.inf, 0.5, 1.0], [2.0, -np.inf, -1.0]])],
        lambda g, x: g.log_softmax(x),
        lambda x: torch.log_softmax(x, -1),
        fd=False,
    ),
    Case(
        "mean-of-square", ("mean", "square"), [F((None, 3))], lambda g, x: g.mean(g.square(x)), lambda x: (x * x).mean()
    ),
]

SOFTMAX_CASES = [
    Case(
        f"{op}-{variant}",
        op,
        [F(shape)],
        lambda g, x, op=op, axis=axis: getattr(g, op)(x, axis=axis),
        lambda x, op=op, axis=axis: getattr(torch, op)(x, axis),
    )
    for op in ("softmax", "log_softmax")
    for variant, shape, axis in (
        ("last", (2, 3, 4), -1),
        ("axis0", (2, 3, 4), 0),
        ("axis1", (2, 3, 4), 1),
        ("1d", (5,), 0),
        ("batch", (None, 5), -1),
        ("over-batch", (None, 3), 0),
    )
]

CASES = (
    BINARY_CASES
    + SCALAR_CASES
    + TIE_CASES
    + CLIP_CASES
    + WHERE_CASES
    + COMPARISON_CASES
    + UNARY_CASES
    + ACTIVATION_EDGE_CASES
    + STOP_GRADIENT_CASES
    + DIAMOND_CASES
    + REDUCTION_CASES
    + REDUCTION_EDGE_CASES
    + SOFTMAX_CASES
)
