"""Elementwise ops with numpy broadcasting: arithmetic, comparisons and activations.

Derivative rules return gradients shaped like the output; the gradient builder sums them down to
each input's shape (the one ``unbroadcast`` step, see ``plan.py``)."""

from __future__ import annotations

import math

import numpy as np

from ..export.builder import onnx_rule
from ..export.rules import alias, cast_to, with_attrs
from ..export.rules import comparison as onnx_comparison
from ..export.rules import elementwise as onnx_elementwise
from .registry import ShapeRuleError, defop
from .shapes import comparison, elementwise, same

# ---------------------------------------------------------------- ONNX mappings (onnx=)


@onnx_rule("Max and Min")
def _clip_onnx(b, n):
    x, lo, hi = (cast_to(b, v, d, n.dtype) for v, d in zip(n.inputs, n.input_dtypes))
    return b.op("Min", b.op("Max", x, lo), hi, out=n.out)


@onnx_rule("Where (the condition cast to bool)")
def _where_onnx(b, n):
    cond = b.cast(n.inputs[0], np.bool_)
    x, y = (cast_to(b, v, d, n.dtype) for v, d in zip(n.inputs[1:], n.input_dtypes[1:]))
    return b.op("Where", cond, x, y, out=n.out)


@onnx_rule("x * Phi(x) with Erf (opset 17 has no Gelu), or the tanh form")
def _gelu_onnx(b, n):
    x = n.inputs[0]
    if n.attrs.get("approximate", "none") == "tanh":
        cube = b.op("Mul", b.op("Mul", x, x), x)
        inner = b.op("Mul", b.op("Add", x, b.op("Mul", cube, b.scalar(0.044715))), b.scalar(math.sqrt(2 / math.pi)))
        cdf = b.op("Add", b.scalar(1.0), b.op("Tanh", inner))
    else:
        cdf = b.op("Add", b.scalar(1.0), b.op("Erf", b.op("Mul", x, b.scalar(1 / math.sqrt(2)))))
    return b.op("Mul", b.op("Mul", x, b.scalar(0.5)), cdf, out=n.out)


@onnx_rule("Softplus with beta and threshold (Where)")
def _softplus_onnx(b, n):
    x = n.inputs[0]
    beta, threshold = float(n.attrs["beta"]), float(n.attrs["threshold"])
    z = b.op("Mul", x, b.scalar(beta))
    soft = b.op("Div", b.op("Softplus", z), b.scalar(beta))
    return b.op("Where", b.op("Greater", z, b.scalar(threshold)), x, soft, out=n.out)


@onnx_rule("Mul")
def _square_onnx(b, n):
    return b.op("Mul", n.inputs[0], n.inputs[0], out=n.out)


# The derivative ops, for exported grad(...) nodes: the same formulas as their forwards.


@onnx_rule("gy * (1 - y * y)")
def _tanh_grad_onnx(b, n):
    gy, y = n.inputs
    return b.op("Mul", gy, b.op("Sub", b.scalar(1.0), b.op("Mul", y, y)), out=n.out)


@onnx_rule("gy * y * (1 - y)")
def _sigmoid_grad_onnx(b, n):
    gy, y = n.inputs
    return b.op("Mul", b.op("Mul", gy, y), b.op("Sub", b.scalar(1.0), y), out=n.out)


@onnx_rule("gy * (x > 0) (leaky: negative_slope where x <= 0)")
def _relu_grad_onnx(b, n):
    gy, x = n.inputs
    pos = b.cast(b.op("Greater", x, b.const(np.zeros((), dtype=n.input_dtypes[1]))), n.dtype)
    if n.op == "leaky_relu_grad":
        slope = float(n.attrs["negative_slope"])
        pos = b.op("Add", b.op("Mul", pos, b.scalar(1.0 - slope)), b.scalar(slope))
    return b.op("Mul", cast_to(b, gy, n.input_dtypes[0], n.dtype), pos, out=n.out)


# ---------------------------------------------------------------- arithmetic


@defop("add", elementwise, onnx=onnx_elementwise("Add"))
def add(a, b):
    """The sum a + b, elementwise (shapes broadcast as in numpy)."""
    return np.add(a, b)


@add.vjp
def _(ctx, gy):
    return gy, gy


@defop("sub", elementwise, onnx=onnx_elementwise("Sub"))
def sub(a, b):
    """The difference a - b, elementwise (shapes broadcast as in numpy)."""
    return np.subtract(a, b)


@sub.vjp
def _(ctx, gy):
    return gy, (-gy if ctx.needs[1] else None)


@defop("mul", elementwise, onnx=onnx_elementwise("Mul"))
def mul(a, b):
    """The product a * b, elementwise (shapes broadcast as in numpy)."""
    return np.multiply(a, b)


@mul.vjp
def _(ctx, gy):
    a, b = ctx.inputs
    return (gy * b if ctx.needs[0] else None), (gy * a if ctx.needs[1] else None)


@defop("div", elementwise, onnx=onnx_elementwise("Div"))
def div(a, b):
    """The quotient a / b, elementwise (shapes broadcast as in numpy)."""
    return np.divide(a, b)


@div.vjp
def _(ctx, gy):
    b = ctx.inputs[1]
    ga = gy / b if ctx.needs[0] else None
    gb = -(gy * ctx.out) / b if ctx.needs[1] else None
    return ga, gb


@defop("pow", elementwise, onnx=onnx_elementwise("Pow"))
def pow_(a, b):
    """The power a ** b, elementwise (shapes broadcast as in numpy)."""
    return np.power(a, b)


@pow_.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    ga = None
    if ctx.needs[0]:
        bn = b.node
        if bn.kind == "constant" and np.all(bn.value != 0):
            ga = gy * b * a ** (b - 1)
        else:
            # torch defines d/da a**0 as 0 (b * a**(b-1) is 0 * inf = nan at a == 0); the inner
            # where keeps the derivatives of this derivative finite there too.
            zero = g.equal(b, 0)
            ga = gy * g.where(zero, 0.0, b * g.where(zero, 1.0, a) ** (b - 1))
    # d/db a**b = a**b * log(a); torch defines it as 0 where a == 0 and b >= 0.
    gb = None
    if ctx.needs[1]:
        safe_log = g.log(g.where(g.equal(a, 0), 1, a))
        gb = gy * ctx.out * safe_log
    return ga, gb


@defop("neg", same, onnx="Neg")
def neg(x):
    """The negation -x."""
    return np.negative(x)


@neg.vjp
def _(ctx, gy):
    return (-gy,)


@defop("maximum", elementwise, onnx=onnx_elementwise("Max"))
def maximum(a, b):
    """Elementwise maximum; ties split the gradient equally (as torch)."""
    return np.maximum(a, b)


@maximum.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    share_a = g.greater(a, b) + 0.5 * g.equal(a, b)
    return (gy * share_a if ctx.needs[0] else None), (gy * (1 - share_a) if ctx.needs[1] else None)


@defop("minimum", elementwise, onnx=onnx_elementwise("Min"))
def minimum(a, b):
    """Elementwise minimum; ties split the gradient equally (as torch)."""
    return np.minimum(a, b)


@minimum.vjp
def _(ctx, gy):
    g = ctx.g
    a, b = ctx.inputs
    share_a = g.less(a, b) + 0.5 * g.equal(a, b)
    return (gy * share_a if ctx.needs[0] else None), (gy * (1 - share_a) if ctx.needs[1] else None)


def _clip_shape(x, lo, hi, **attrs):
    return elementwise(x, lo, hi)


@defop("clip", _clip_shape, aliases=("clamp",), onnx=_clip_onnx)
def clip(x, lo, hi):
    """x limited to [lo, hi]; the gradient passes where lo <= x <= hi (as torch.clamp)."""
    return np.minimum(np.maximum(x, lo), hi)


@clip.vjp
def _(ctx, gy):
    g = ctx.g
    x, lo, hi = ctx.inputs
    inside = g.greater_equal(x, lo) * g.less_equal(x, hi)
    # When lo > hi the result is hi everywhere, so hi gets all of the gradient (as torch).
    return (
        gy * inside if ctx.needs[0] else None,
        gy * (g.less(x, lo) * g.less(lo, hi)) if ctx.needs[1] else None,
        gy * g.maximum(g.greater(x, hi), g.less(hi, lo)) if ctx.needs[2] else None,
    )


def _where_shape(cond, a, b, **attrs):
    return elementwise(cond, a, b)


@defop("where", _where_shape, nondiff=(0,), onnx=_where_onnx)
def where(cond, a, b):
    """a where cond is true (non-zero), else b."""
    return np.where(cond.astype(bool), a, b)


@where.vjp
def _(ctx, gy):
    g = ctx.g
    cond = ctx.inputs[0]
    return (
        None,
        g.where(cond, gy, 0.0) if ctx.needs[1] else None,
        g.where(cond, 0.0, gy) if ctx.needs[2] else None,
    )


# ---------------------------------------------------------------- comparisons (no gradient)


def _comparison(name: str, fn, doc: str, onnx) -> None:
    def forward(a, b):
        return fn(a, b)

    forward.__doc__ = doc
    defop(name, comparison, nondiff=(0, 1), onnx=onnx)(forward)


_comparison("greater", np.greater, "1.0 where a > b, else 0.0 (no gradient).", onnx_comparison("Greater"))
_comparison(
    "greater_equal", np.greater_equal, "1.0 where a >= b, else 0.0 (no gradient).", onnx_comparison("GreaterOrEqual")
)
_comparison("less", np.less, "1.0 where a < b, else 0.0 (no gradient).", onnx_comparison("Less"))
_comparison("less_equal", np.less_equal, "1.0 where a <= b, else 0.0 (no gradient).", onnx_comparison("LessOrEqual"))
_comparison("equal", np.equal, "1.0 where a == b, else 0.0 (no gradient).", onnx_comparison("Equal"))
_comparison(
    "not_equal", np.not_equal, "1.0 where a != b, else 0.0 (no gradient).", onnx_comparison("Equal", negate=True)
)


# ---------------------------------------------------------------- unary math


@defop("exp", same, onnx="Exp")
def exp(x):
    """The exponential e ** x."""
    return np.exp(x)


@exp.vjp
def _(ctx, gy):
    return (gy * ctx.out,)


@defop("log", same, onnx="Log")
def log(x):
    """Natural logarithm."""
    return np.log(x)


@log.vjp
def _(ctx, gy):
    return (gy / ctx.inputs[0],)


@defop("sqrt", same, onnx="Sqrt")
def sqrt(x):
    """Square root."""
    return np.sqrt(x)


@sqrt.vjp
def _(ctx, gy):
    return (gy / (2 * ctx.out),)


@defop("abs", same, onnx="Abs")
def abs_(x):
    """|x|; the gradient at 0 is 0 (as torch)."""
    return np.abs(x)


@abs_.vjp
def _(ctx, gy):
    return (gy * ctx.g.sign(ctx.inputs[0]),)


@defop("sign", same, nondiff=(0,), onnx="Sign")
def sign(x):
    """-1, 0 or 1 (no gradient)."""
    return np.sign(x)


@defop("sin", same, onnx="Sin")
def sin(x):
    """Sine."""
    return np.sin(x)


@sin.vjp
def _(ctx, gy):
    return (gy * ctx.g.cos(ctx.inputs[0]),)


@defop("cos", same, onnx="Cos")
def cos(x):
    """Cosine."""
    return np.cos(x)


@cos.vjp
def _(ctx, gy):
    return (-(gy * ctx.g.sin(ctx.inputs[0])),)


_erf_elementwise = np.vectorize(math.erf, otypes=[float])


def _erf(x: np.ndarray) -> np.ndarray:
    # math.erf is exact to the last bit; numpy has no erf and scipy is not a dependency.
    return np.asarray(_erf_elementwise(x), dtype=np.asarray(x).dtype)


@defop("erf", same, onnx="Erf")
def erf(x):
    """The error function."""
    return _erf(x)


@erf.vjp
def _(ctx, gy):
    x = ctx.inputs[0]
    return (gy * (2.0 / math.sqrt(math.pi)) * ctx.g.exp(-(x * x)),)


# ---------------------------------------------------------------- activations


@defop("tanh", same, onnx="Tanh")
def tanh(x):
    """Hyperbolic tangent."""
    return np.tanh(x)


@tanh.vjp
def _(ctx, gy):
    return (ctx.g.tanh_grad(gy, ctx.out),)


# The activations' derivatives are single fused nodes (a few in-place numpy calls, not a chain of
# small nodes); each is an op with its own derivative rule, so higher orders still work. They
# compute the same expressions, in the same order, as the chains of graph ops they replace.


@defop("tanh_grad", elementwise, public=False, onnx=_tanh_grad_onnx)
def tanh_grad(gy, y):
    """gy * (1 - y * y): the derivative of tanh through its output y."""
    d = np.multiply(y, y)
    if type(d) is not np.ndarray or type(gy) is not np.ndarray or d.shape != gy.shape:  # 0-d: a numpy scalar
        return np.multiply(gy, np.subtract(1, d))
    np.subtract(1, d, out=d)
    return np.multiply(gy, d, out=d)


@tanh_grad.vjp
def _(ctx, gz):
    gy, y = ctx.inputs
    g_gy = ctx.g.tanh_grad(gz, y) if ctx.needs[0] else None
    return g_gy, (-2 * (gz * gy * y) if ctx.needs[1] else None)


@defop("sigmoid", same, onnx="Sigmoid")
def sigmoid(x):
    """1 / (1 + e ** -x), computed without overflow."""
    # 1 / (1 + e ** -x) where x >= 0 and e ** x / (1 + e ** x) elsewhere, both from e ** -|x|
    # (which never overflows), without boolean indexing: 8x faster than masks on a 256x128 batch,
    # the same bits.
    if x.ndim == 0:
        return sigmoid.forward(x.reshape(1)).reshape(())
    e = np.abs(x)
    np.negative(e, out=e)
    np.exp(e, out=e)
    d = np.add(e, 1.0)
    np.divide(e, d, out=e)
    np.divide(1.0, d, out=d)
    return np.where(x >= 0, d, e)


@sigmoid.vjp
def _(ctx, gy):
    return (ctx.g.sigmoid_grad(gy, ctx.out),)


@defop("sigmoid_grad", elementwise, public=False, onnx=_sigmoid_grad_onnx)
def sigmoid_grad(gy, y):
    """gy * y * (1 - y): the derivative of sigmoid through its output y."""
    d = np.multiply(gy, y)
    return np.multiply(d, np.subtract(1, y), out=d if type(d) is np.ndarray and d.shape == np.shape(y) else None)


@sigmoid_grad.vjp
def _(ctx, gz):
    gy, y = ctx.inputs
    g_gy = ctx.g.sigmoid_grad(gz, y) if ctx.needs[0] else None
    return g_gy, (gz * gy * (1 - 2 * y) if ctx.needs[1] else None)


@defop("relu", same, onnx="Relu")
def relu(x):
    """max(x, 0); the gradient at 0 is 0 (as torch)."""
    return np.maximum(x, 0)


@relu.vjp
def _(ctx, gy):
    return (ctx.g.relu_grad(gy, ctx.inputs[0]),)


@defop("relu_grad", elementwise, public=False, nondiff=(1,), onnx=_relu_grad_onnx)
def relu_grad(gy, x):
    """gy where x > 0, else 0: the derivative of relu (zero almost everywhere in x)."""
    return np.multiply(gy, x > 0)


@relu_grad.vjp
def _(ctx, gz):
    return ctx.g.relu_grad(gz, ctx.inputs[1]), None


@defop("leaky_relu", same, onnx=with_attrs("LeakyRelu", {"negative_slope": "alpha"}))
def leaky_relu(x, *, negative_slope=0.01):
    """x where x > 0, else negative_slope * x."""
    return np.where(x > 0, x, x * negative_slope)


@leaky_relu.vjp
def _(ctx, gy):
    return (ctx.g.leaky_relu_grad(gy, ctx.inputs[0], negative_slope=ctx.attrs["negative_slope"]),)


@defop("leaky_relu_grad", elementwise, public=False, nondiff=(1,), onnx=_relu_grad_onnx)
def leaky_relu_grad(gy, x, *, negative_slope):
    """gy where x > 0, else negative_slope * gy: the derivative of leaky_relu."""
    pos = np.greater(x, 0).astype(np.result_type(gy, x))
    return gy * (pos * (1 - negative_slope) + negative_slope)


@leaky_relu_grad.vjp
def _(ctx, gz):
    return ctx.g.leaky_relu_grad(gz, ctx.inputs[1], negative_slope=ctx.attrs["negative_slope"]), None


@defop("elu", same, onnx=with_attrs("Elu", {"alpha": "alpha"}))
def elu(x, *, alpha=1.0):
    """x where x > 0, else alpha * (e ** x - 1)."""
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0)))


@elu.vjp
def _(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    alpha = ctx.attrs["alpha"]
    return (gy * g.where(g.greater(x, 0), 1.0, ctx.out + alpha),)


_SQRT_2PI = math.sqrt(2 * math.pi)


def _gelu_shape(x, *, approximate="none"):
    if approximate not in ("none", "tanh"):
        raise ShapeRuleError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return x, "f"


@defop("gelu", _gelu_shape, onnx=_gelu_onnx)
def gelu(x, *, approximate="none"):
    """Gaussian error linear unit: x * Phi(x) (approximate='tanh' for the tanh form)."""
    if approximate == "tanh":
        c = math.sqrt(2 / math.pi)
        return 0.5 * x * (1 + np.tanh(c * (x + 0.044715 * x**3)))
    return 0.5 * x * (1 + _erf(x / math.sqrt(2)))


@gelu.vjp
def _(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    if ctx.attrs["approximate"] == "tanh":
        c = math.sqrt(2 / math.pi)
        t = g.tanh(c * (x + 0.044715 * x * x * x))
        d = 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * c * (1 + 3 * 0.044715 * x * x)
        return (gy * d,)
    cdf = 0.5 * (1 + g.erf(x * (1 / math.sqrt(2))))
    pdf = g.exp(-0.5 * x * x) * (1 / _SQRT_2PI)
    return (gy * (cdf + x * pdf),)


def _softplus_shape(x, *, beta=1.0, threshold=20.0):
    if not beta > 0:
        raise ShapeRuleError(f"softplus: beta must be positive, got {beta!r}")
    return x, "f"


@defop("softplus", _softplus_shape, onnx=_softplus_onnx)
def softplus(x, *, beta=1.0, threshold=20.0):
    """log(1 + e ** (beta x)) / beta, linear where beta x > threshold (as torch)."""
    z = x * beta
    return np.where(z > threshold, x, np.logaddexp(0, z) / beta)


@softplus.vjp
def _(ctx, gy):
    g = ctx.g
    x = ctx.inputs[0]
    beta, threshold = ctx.attrs["beta"], ctx.attrs["threshold"]
    z = x * beta
    return (gy * g.where(g.greater(z, threshold), 1.0, g.sigmoid(z)),)


@defop("square", same, onnx=_square_onnx)
def square(x):
    """The square x * x."""
    return np.square(x)


@square.vjp
def _(ctx, gy):
    return (gy * 2 * ctx.inputs[0],)


@defop("identity", same, keep_dtype=True, passes_input=True, onnx=alias)
def identity(x):
    """x itself (a named view of a node)."""
    return x


@identity.vjp
def _(ctx, gy):
    return (gy,)


@defop("stop_gradient", same, nondiff=(0,), aliases=("detach",), keep_dtype=True, passes_input=True, onnx=alias)
def stop_gradient(x):
    """x's value with no gradient path (PyTorch .detach(), JAX stop_gradient): a permanent cut."""
    return x
