"""Cases for matmul (2-D, batched with broadcasting, vectors) and linear. See harness.py for the
case format."""

from __future__ import annotations

import torch

from .harness import Case, F


def _matmul_case(variant: str, sa, sb, **kw) -> Case:
    return Case(f"matmul-{variant}", "matmul", [F(sa), F(sb)], lambda g, a, b: g.matmul(a, b), lambda a, b: a @ b, **kw)


MATMUL_CASES = [
    _matmul_case("2d", (3, 4), (4, 2)),
    _matmul_case("batched-3d", (2, 3, 4), (2, 4, 2)),
    _matmul_case("batched-bcast-matrix", (2, 3, 4), (4, 2)),
    _matmul_case("matrix-bcast-batched", (3, 4), (2, 4, 2)),
    _matmul_case("batched-bcast-ones", (1, 3, 4), (2, 4, 2)),
    _matmul_case("4d-bcast", (2, 1, 2, 3), (3, 3, 2)),
    _matmul_case("vec-mat", (4,), (4, 3)),
    _matmul_case("mat-vec", (3, 4), (4,)),
    _matmul_case("vec-vec", (4,), (4,)),
    Case("matmul-operator", "matmul", [F((3, 4)), F((4, 2))], lambda g, a, b: a @ b, lambda a, b: a @ b),
    Case(
        "matmul-batch-param", "matmul", [F((None, 4)), F((4, 3), param=True)], lambda g, x, w: x @ w, lambda x, w: x @ w
    ),
    Case("matmul-batch-vec", "matmul", [F((None, 4)), F((4,))], lambda g, x, v: x @ v, lambda x, v: x @ v),
    Case("matmul-same-node", "matmul", [F((3, 3))], lambda g, x: x @ x, lambda x: x @ x),
    Case("matmul-gram", ("matmul", "transpose"), [F((3, 4))], lambda g, x: x @ x.T, lambda x: x @ x.T),
    Case(
        "matmul-diamond",
        ("matmul", "tanh", "mul"),
        [F((3, 4)), F((4, 3))],
        lambda g, a, w: (lambda m: m * g.tanh(m))(a @ w),
        lambda a, w: (a @ w) * torch.tanh(a @ w),
    ),
]

LINEAR_CASES = [
    Case(
        "linear-2d",
        "linear",
        [F((3, 4)), F((4, 2)), F((2,))],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-3d",
        "linear",
        [F((2, 3, 4)), F((4, 2)), F((2,))],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-batch-params",
        "linear",
        [F((None, 4)), F((4, 3), param=True), F((3,), param=True)],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-batch-3d",
        "linear",
        [F((None, 2, 3)), F((3, 2), param=True), F((1, 2), param=True)],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-1d",
        "linear",
        [F((4,)), F((4, 3)), F((3,))],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-0d-bias",
        "linear",
        [F((3, 4)), F((4, 2)), F(())],
        lambda g, x, w, b: g.linear(x, w, b),
        lambda x, w, b: x @ w + b,
    ),
    Case(
        "linear-tanh-mlp",
        ("linear", "tanh"),
        [F((None, 3)), F((3, 4), param=True), F((4,), param=True)],
        lambda g, x, w, b: g.tanh(g.linear(x, w, b)),
        lambda x, w, b: (x @ w + b).tanh(),
    ),
]

CASES = MATMUL_CASES + LINEAR_CASES
