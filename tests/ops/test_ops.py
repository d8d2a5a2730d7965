"""Every case of every tests/ops/cases_*.py module, checked against PyTorch (see harness.py)."""

from __future__ import annotations

import pytest

from .harness import (
    check_finite_differences,
    check_float32,
    check_forward,
    check_grad,
    check_grad2,
    collect_cases,
    required_ops,
)

CASES = collect_cases()
DIFF_CASES = [c for c in CASES if c.diff]
FD_CASES = [c for c in DIFF_CASES if c.fd]
F32_CASES = [c for c in CASES if c.float32]


def _params(cases, check):
    params = []
    for c in cases:
        marks = [pytest.mark.xfail(strict=True, reason=c.xfail[check])] if check in c.xfail else []
        params.append(pytest.param(c, id=c.id, marks=marks))
    return params


@pytest.mark.parametrize("case", _params(CASES, "forward"))
def test_forward(case):
    check_forward(case)


@pytest.mark.parametrize("case", _params(CASES, "grad"))
def test_grad(case):
    """First derivatives (diff cases), or no gradient at all (forward-only cases)."""
    check_grad(case)


@pytest.mark.parametrize("case", _params(DIFF_CASES, "grad2"))
def test_grad2(case):
    if not case.grad2:
        pytest.skip("grad2=False: torch's second derivative is undefined or one-sided here (see the case)")
    check_grad2(case)


@pytest.mark.parametrize("case", _params(FD_CASES, "finite_differences"))
def test_finite_differences(case):
    check_finite_differences(case)


@pytest.mark.parametrize("case", _params(F32_CASES, "float32"))
def test_float32(case):
    check_float32(case)


@pytest.mark.parametrize("op", required_ops())
def test_every_op_has_a_case(op):
    covered = {name for c in CASES for name in c.ops}
    assert op in covered, f"public op {op!r} has no case in tests/ops/cases_*.py"


def test_case_ops_exist():
    from onlytorch.ops import REGISTRY

    unknown = sorted({(c.id, name) for c in CASES for name in c.ops if name not in REGISTRY})
    assert not unknown, f"cases name unknown ops: {unknown}"
