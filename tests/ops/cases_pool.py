"""Cases for pooling, resampling and the image normalisations: max_pool2d, avg_pool2d,
adaptive_avg_pool2d, upsample_nearest2d, flatten, group_norm, and batch_norm over (N, C, L) and
(N, C, H, W) in train mode (eval mode and the running statistics: test_norm_nd.py). See harness.py
for the case format.

Pooling is piecewise linear, so sum(out * R) has no second derivative of its own: the ``-tanh``
cases put a curve after the op, which sends the second derivative through the op's backward op
(max pooling's scatter, whose derivative is the gather; avg pooling's transpose; ...).

Max pooling's derivative goes to the first largest value of each window in row-major order (torch's
rule): random cases draw distinct values ("distinct"), and the ``-ties`` case checks the rule on
integer-valued data, without finite differences (a tie is a kink).
"""

from __future__ import annotations

import torch
import torch.nn.functional as TF

from .harness import Case, F


def _case(case_id, name, ref, shape, attrs, targs, *, batch=4, tanh=False, fd=True, gen="distinct"):
    """A case of our op `name` with attrs next to torch.nn.functional's `ref` with targs; tanh=True
    puts a curve after both (second derivatives through the op's backward)."""
    theirs = getattr(TF, ref)

    def ot_expr(g, x):
        y = getattr(g, name)(x, **attrs)
        return g.tanh(y) if tanh else y

    def torch_expr(x):
        y = theirs(x, **targs)
        return torch.tanh(y) if tanh else y

    return Case(case_id, name, [F(shape, gen)], ot_expr, torch_expr, batch=batch, fd=fd)


MAX_POOL_CASES = [
    _case("max_pool2d-k2", "max_pool2d", "max_pool2d", (None, 1, 4, 4), {"kernel": 2}, {"kernel_size": 2}, batch=2),
    _case(
        "max_pool2d-k3-s2-p1-odd",
        "max_pool2d",
        "max_pool2d",
        (None, 2, 7, 6),
        {"kernel": 3, "stride": 2, "padding": 1},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        fd=False,
    ),
    _case(
        "max_pool2d-k3-not-dividing",
        "max_pool2d",
        "max_pool2d",
        (None, 1, 5, 7),
        {"kernel": 3},
        {"kernel_size": 3},
        batch=1,
    ),
    _case(
        "max_pool2d-rect-overlap",
        "max_pool2d",
        "max_pool2d",
        (None, 3, 6, 7),
        {"kernel": (2, 3), "stride": (1, 2), "padding": (1, 0)},
        {"kernel_size": (2, 3), "stride": (1, 2), "padding": (1, 0)},
        fd=False,
    ),
    _case(
        "max_pool2d-list-attrs-batch1",
        "max_pool2d",
        "max_pool2d",
        (None, 2, 5, 5),
        {"kernel": [3, 2], "stride": [2, 1], "padding": [1, 1]},
        {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1)},
        batch=1,
    ),
    _case(
        "max_pool2d-tanh",
        "max_pool2d",
        "max_pool2d",
        (None, 1, 5, 6),
        {"kernel": 3, "stride": 1, "padding": 1},
        {"kernel_size": 3, "stride": 1, "padding": 1},
        batch=2,
        tanh=True,
    ),
    _case(
        "max_pool2d-k2-p1-tanh",
        "max_pool2d",
        "max_pool2d",
        (None, 2, 3, 5),
        {"kernel": 2, "padding": 1},
        {"kernel_size": 2, "padding": 1},
        batch=2,
        tanh=True,
    ),
    _case(
        "max_pool2d-ties",
        "max_pool2d",
        "max_pool2d",
        (None, 2, 6, 6),
        {"kernel": 3, "stride": 1, "padding": 1},
        {"kernel_size": 3, "stride": 1, "padding": 1},
        tanh=True,
        fd=False,
        gen="small_ints",
    ),
]

AVG_POOL_CASES = [
    _case("avg_pool2d-k2", "avg_pool2d", "avg_pool2d", (None, 1, 4, 4), {"kernel": 2}, {"kernel_size": 2}, batch=2),
    _case(
        "avg_pool2d-k3-s2-p1-odd",
        "avg_pool2d",
        "avg_pool2d",
        (None, 2, 7, 5),
        {"kernel": 3, "stride": 2, "padding": 1},
        {"kernel_size": 3, "stride": 2, "padding": 1},
        fd=False,
    ),
    _case(
        "avg_pool2d-exclude-pad",
        "avg_pool2d",
        "avg_pool2d",
        (None, 1, 5, 6),
        {"kernel": (3, 2), "stride": (2, 1), "padding": (1, 1), "count_include_pad": False},
        {"kernel_size": (3, 2), "stride": (2, 1), "padding": (1, 1), "count_include_pad": False},
        batch=1,
        gen="normal",
    ),
    _case(
        "avg_pool2d-not-dividing-tanh",
        "avg_pool2d",
        "avg_pool2d",
        (None, 2, 5, 6),
        {"kernel": 2, "stride": 3},
        {"kernel_size": 2, "stride": 3},
        batch=1,
        tanh=True,
        gen="normal",
    ),
    _case(
        "avg_pool2d-overlap-pad-tanh",
        "avg_pool2d",
        "avg_pool2d",
        (None, 3, 6, 6),
        {"kernel": 4, "stride": 1, "padding": 2},
        {"kernel_size": 4, "stride": 1, "padding": 2},
        tanh=True,
        fd=False,
        gen="normal",
    ),
]

ADAPTIVE_CASES = [
    _case(
        "adaptive_avg_pool2d-global",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        (None, 3, 5, 7),
        {},
        {"output_size": 1},
        tanh=True,
        fd=False,
        gen="normal",
    ),
    _case(
        "adaptive_avg_pool2d-global-batch1",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        (None, 2, 3, 4),
        {"output_size": (1, 1)},
        {"output_size": (1, 1)},
        batch=1,
        tanh=True,
        gen="normal",
    ),
    _case(
        "adaptive_avg_pool2d-overlapping-bins",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        (None, 2, 7, 5),
        {"output_size": (3, 2)},
        {"output_size": (3, 2)},
        tanh=True,
        fd=False,
        gen="normal",
    ),
    _case(
        "adaptive_avg_pool2d-keep-height",
        "adaptive_avg_pool2d",
        "adaptive_avg_pool2d",
        (None, 1, 4, 9),
        {"output_size": [None, 4]},
        {"output_size": (None, 4)},
        batch=1,
        tanh=True,
        gen="normal",
    ),
]

UPSAMPLE_CASES = [
    Case(
        "upsample_nearest2d-x2",
        "upsample_nearest2d",
        [F((None, 2, 3, 3))],
        lambda g, x: g.upsample_nearest2d(x, scale_factor=2),
        lambda x: TF.interpolate(x, scale_factor=2, mode="nearest"),
        batch=2,
    ),
    Case(
        "upsample_nearest2d-pair-tanh",
        "upsample_nearest2d",
        [F((None, 2, 3, 2))],
        lambda g, x: g.tanh(g.upsample_nearest2d(x, scale_factor=(2, 3))),
        lambda x: torch.tanh(TF.interpolate(x, scale_factor=(2, 3), mode="nearest")),
        batch=1,
    ),
]

FLATTEN_CASES = [
    Case(
        "flatten-default",
        "flatten",
        [F((None, 2, 3, 2))],
        lambda g, x: g.flatten(x),
        lambda x: torch.flatten(x, 1),
        batch=2,
    ),
    Case(
        "flatten-middle",
        "flatten",
        [F((None, 2, 3, 2))],
        lambda g, x: g.flatten(x, start_dim=1, end_dim=2),
        lambda x: torch.flatten(x, 1, 2),
        batch=2,
    ),
    Case(
        "flatten-all",
        "flatten",
        [F((None, 3, 2))],
        lambda g, x: g.tanh(g.flatten(x, start_dim=0)),
        lambda x: torch.tanh(torch.flatten(x)),
        batch=3,
    ),
]


def _group_norm(shape, groups, *, batch=3, fd=True, eps=1e-5):
    c = shape[1]
    return dict(
        ops="group_norm",
        inputs=[F(shape), F((c,), param=True), F((c,), param=True)],
        ot=lambda g, x, w, b: g.tanh(g.group_norm(x, w, b, num_groups=groups, eps=eps)),
        ref=lambda x, w, b: torch.tanh(TF.group_norm(x, groups, w, b, eps)),
        batch=batch,
        fd=fd,
        rtol=1e-9,
        atol=1e-11,
    )


GROUP_NORM_CASES = [
    Case("group_norm-2d", **_group_norm((None, 6, 3, 4), 3, fd=False)),
    Case("group_norm-1d-small", **_group_norm((None, 4, 3), 2, batch=2)),
    Case("group_norm-one-group-batch1", **_group_norm((None, 4, 2, 3), 1, batch=1, eps=1e-3)),
    Case("group_norm-per-channel", **_group_norm((None, 3, 2, 2), 3, batch=2)),
    Case("group_norm-features-only", **_group_norm((None, 6), 2, batch=4)),
]


def _batch_norm(shape, *, batch=3, fd=True, momentum=0.1, eps=1e-5):
    """Train mode (the harness's graphs are in train mode); the running statistics are states of
    the case's graph that only the op itself reads."""
    c = shape[1]

    def ours(g, x, w, b):
        rm = g.state("running_mean", shape=(c,), init="zeros")
        rv = g.state("running_var", shape=(c,), init="ones")
        return g.tanh(g.batch_norm(x, w, b, rm, rv, momentum=momentum, eps=eps))

    def theirs(x, w, b):
        return torch.tanh(TF.batch_norm(x, None, None, w, b, training=True, momentum=momentum, eps=eps))

    return dict(
        ops="batch_norm",
        inputs=[F(shape), F((c,), param=True), F((c,), param=True)],
        ot=ours,
        ref=theirs,
        batch=batch,
        fd=fd,
        rtol=1e-9,
        atol=1e-11,
    )


BATCH_NORM_CASES = [
    Case("batch_norm-nchw", **_batch_norm((None, 3, 4, 5), fd=False)),
    Case("batch_norm-ncl", **_batch_norm((None, 4, 5), fd=False)),
    Case("batch_norm-nchw-small", **_batch_norm((None, 2, 3, 3), batch=2)),
    Case("batch_norm-nchw-batch1", **_batch_norm((None, 2, 3, 4), batch=1, eps=1e-3)),
    Case("batch_norm-nc", **_batch_norm((None, 3), batch=5)),
]

CASES = (
    MAX_POOL_CASES
    + AVG_POOL_CASES
    + ADAPTIVE_CASES
    + UPSAMPLE_CASES
    + FLATTEN_CASES
    + GROUP_NORM_CASES
    + BATCH_NORM_CASES
)
