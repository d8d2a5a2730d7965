"""Cases for attention (torch.nn.functional.scaled_dot_product_attention) and the helpers a
transformer needs: tril, triu, arange. See harness.py for the case format.

Masks are 0/1 floats here (non-zero = attend; torch gets them as booleans); padding masks keep at
least the first key of every sequence; ``attention-query-without-keys`` leaves one query with no
key at all (its output and gradient are zeros in torch 2.13, and here).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF
from torch.nn.attention import SDPBackend, sdpa_kernel

from .harness import Case, F


def _padding(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A key-padding mask (N, 1, 1, S) or (N, 1, S): sequence n has its first 1..S keys."""
    n, s = shape[0], shape[-1]
    lengths = rng.integers(1, s + 1, n)
    lengths[0] = max(1, s - 2)  # some padding for sure
    keep = (np.arange(s)[None, :] < lengths[:, None]).astype(np.float64)
    return keep.reshape(shape)


def _one_row_empty(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A random (..., L, S) mask whose query 1 attends to no key (torch: zeros there)."""
    keep = rng.integers(0, 2, shape).astype(np.float64)
    keep[..., :, 0] = 1.0
    keep[..., 1, :] = 0.0
    return keep


def _sdpa(q, k, v, mask=None, bias=None, causal=False, scale=None):
    """torch's attention with our arguments: mask (0/1) as a boolean attn_mask, bias as a float
    one; causal together with a mask as their intersection (torch takes one or the other)."""
    attn = None
    if mask is not None:
        attn = mask.bool()
    if causal and attn is not None:
        attn = attn & torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        causal = False
    if bias is not None:
        # torch's float attn_mask is added to the scores; a boolean one becomes -inf where False
        attn = bias if attn is None else bias.masked_fill(~attn, float("-inf"))
    # the math kernel: the fused CPU kernels have no second derivative
    with sdpa_kernel(SDPBackend.MATH):
        return TF.scaled_dot_product_attention(q, k, v, attn_mask=attn, is_causal=causal, scale=scale)


def _att(case_id, shapes, *, mask=None, bias=None, causal=False, scale=None, batch=2, fd=False, gen=_padding):
    inputs = [F(s) for s in shapes]
    if mask is not None:
        inputs.append(F(mask, gen, grad=False))
    if bias is not None:
        inputs.append(F(bias))

    def ot_expr(g, q, k, v, *extra):
        rest = list(extra)
        kw = {"causal": causal, "scale": scale}
        if mask is not None:
            kw["mask"] = rest.pop(0)
        if bias is not None:
            kw["bias"] = rest.pop(0)
        return g.attention(q, k, v, **kw)

    def torch_expr(q, k, v, *extra):
        rest = list(extra)
        m = rest.pop(0) if mask is not None else None
        b = rest.pop(0) if bias is not None else None
        return _sdpa(q, k, v, mask=m, bias=b, causal=causal, scale=scale)

    return Case(case_id, "attention", inputs, ot_expr, torch_expr, batch=batch, fd=fd)


ATTENTION_CASES = [
    _att("attention-heads-L-ne-S", [(None, 2, 4, 3), (None, 2, 5, 3), (None, 2, 5, 2)]),
    _att("attention-3d-batch1-fd", [(None, 3, 4), (None, 3, 4), (None, 3, 4)], batch=1, fd=True),
    _att("attention-causal-heads", [(None, 2, 5, 3), (None, 2, 5, 3), (None, 2, 5, 3)], causal=True),
    _att("attention-causal-3d-batch1-fd", [(None, 4, 3), (None, 4, 3), (None, 4, 2)], causal=True, batch=1, fd=True),
    _att("attention-causal-L-ne-S", [(None, 3, 4), (None, 5, 4), (None, 5, 3)], causal=True),
    _att(
        "attention-padding-mask",
        [(None, 2, 4, 3), (None, 2, 6, 3), (None, 2, 6, 3)],
        mask=(None, 1, 1, 6),
        batch=3,
    ),
    _att(
        "attention-padding-and-causal",
        [(None, 5, 3), (None, 5, 3), (None, 5, 3)],
        mask=(None, 1, 5),
        causal=True,
        batch=3,
    ),
    _att("attention-float-bias", [(None, 2, 4, 3), (None, 2, 5, 3), (None, 2, 5, 3)], bias=(None, 1, 4, 5)),
    _att("attention-bias-and-mask", [(None, 4, 3), (None, 6, 3), (None, 6, 3)], mask=(None, 1, 6), bias=(4, 6)),
    _att(
        "attention-query-without-keys",
        [(None, 4, 3), (None, 5, 3), (None, 5, 3)],
        mask=(None, 4, 5),
        gen=_one_row_empty,
    ),
    _att("attention-scale", [(None, 2, 3, 4), (None, 2, 3, 4), (None, 2, 3, 4)], scale=0.3),
]


def _triangle(case_id, name, shape, diagonal, *, batch=2, fd=True):
    theirs = getattr(torch, name)

    def ot_expr(g, x):
        return getattr(g, name)(x, diagonal=diagonal)

    return Case(case_id, name, [F(shape)], ot_expr, lambda x: theirs(x, diagonal=diagonal), batch=batch, fd=fd)


TRIANGLE_CASES = [
    _triangle("tril-batch", "tril", (None, 3, 4), 0),
    _triangle("tril-above", "tril", (4, 3), 1),
    _triangle("tril-below-batch1", "tril", (None, 2, 4, 4), -1, batch=1),
    _triangle("triu-batch", "triu", (None, 4, 3), 0),
    _triangle("triu-strict", "triu", (5, 5), 1),
    _triangle("triu-below", "triu", (None, 3, 5), -2),
    # a causal mask built from them, as a spec writes it: scores where allowed, else a large negative
    Case(
        "triu-as-causal-mask",
        ("triu", "where"),
        [F((None, 4, 4))],
        lambda g, s: g.where(g.triu(g.zeros_like(s) + 1.0, diagonal=1), -1e9, s),
        lambda s: s.masked_fill(torch.ones_like(s).triu(1).bool(), -1e9),
        fd=False,
    ),
]

ARANGE_CASES = [
    Case("arange-n", "arange", [F((5,))], lambda g, x: x * g.arange(5), lambda x: x * torch.arange(5)),
    Case(
        "arange-start-end-step",
        "arange",
        [F((None, 3))],
        lambda g, x: x + g.arange(1, 7, 2),
        lambda x: x + torch.arange(1, 7, 2),
    ),
    Case(
        "arange-float",
        "arange",
        [F((4,))],
        lambda g, x: x * g.arange(0.5, 2.5, 0.5),
        lambda x: x * torch.arange(0.5, 2.5, 0.5, dtype=torch.float64),
    ),
]

CASES = ATTENTION_CASES + TRIANGLE_CASES + ARANGE_CASES
