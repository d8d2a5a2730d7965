"""The convolutions' static shape rules and argument checks (the values and derivatives against
torch are in cases_conv.py), and how they compute: on a window view, one matrix product per
group, without holding their scratch arrays."""

from __future__ import annotations

import numpy as np
import pytest

import onlytorch as ot
from onlytorch.ops import REGISTRY


def _graph(x_shape, w_shape):
    g = ot.Graph(dtype="float64")
    x = g.input("x", x_shape)
    w = g.parameter("w", value=np.ones(w_shape))
    return g, x, w


def test_static_shapes_follow_torch_with_a_symbolic_batch():
    g, x, w = _graph((None, 3, 28, 28), (16, 3, 5, 5))
    assert g.conv2d(x, w, stride=2, padding=1).shape == (None, 16, 13, 13)
    assert g.conv2d(x, w, padding="same").shape == (None, 16, 28, 28)
    assert g.conv2d(x, w, padding="valid", dilation=2).shape == (None, 16, 20, 20)
    g, x, w = _graph((None, 8, 7, 7), (8, 4, 4, 4))
    assert g.conv_transpose2d(x, w, stride=2, padding=1).shape == (None, 4, 14, 14)
    assert g.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1, groups=2).shape == (None, 8, 15, 15)
    g, x, w = _graph((None, 4, 50), (6, 2, 3))
    assert g.conv1d(x, w, stride=2, groups=2).shape == (None, 6, 24)


@pytest.mark.parametrize(
    ("x_shape", "w_shape", "kw", "pattern"),
    [
        ((None, 3, 8, 8), (16, 1, 3, 3), {}, r"the input has 3 channels but the weight \(16, 1, 3, 3\).* takes 1"),
        ((None, 4, 8, 8), (6, 1, 3, 3), {"groups": 2}, r"input has 4 channels .* takes 2 \(1 per group x 2 groups\)"),
        ((None, 3, 8, 8), (6, 1, 3, 3), {"groups": 2}, r"groups=2 does not divide the input's 3 channels"),
        ((None, 4, 8, 8), (5, 2, 3, 3), {"groups": 2}, r"groups=2 does not divide the weight's 5 output channels"),
        (
            (None, 1, 4, 4),
            (2, 1, 5, 5),
            {},
            r"kernel 5x5 is larger than the padded input 4x4 \(input 4x4, padding 0\+0",
        ),
        ((None, 1, 4, 4), (2, 1, 3, 3), {"dilation": 2}, r"kernel 3x3 \(dilation 2x2 spreads it over 5x5\)"),
        ((None, 1, 8), (2, 1, 9), {"padding": "valid"}, r"kernel 9 is larger than the padded input 8"),
        ((None, 8, 8), (2, 1, 3, 3), {}, r"takes \(batch, channels, height, width\) inputs, got \(N, 8, 8\)"),
        ((None, 1, 4, 4), (2, 1, 3), {}, r"the weight must have the fixed shape \(out, in/groups, kh, kw\)"),
    ],
)
def test_shape_mistakes_are_shape_errors_naming_the_sizes(x_shape, w_shape, kw, pattern):
    g, x, w = _graph(x_shape, w_shape)
    op = g.conv1d if len(x_shape) == 3 and len(w_shape) == 3 else g.conv2d
    with pytest.raises(ot.ShapeError, match=pattern):
        op(x, w, **kw)


def test_transposed_convolution_shape_mistakes():
    g, x, w = _graph((None, 3, 4, 4), (4, 2, 3, 3))
    with pytest.raises(ot.ShapeError, match=r"the input has 3 channels but the weight \(4, 2, 3, 3\) \(in, out/groups"):
        g.conv_transpose2d(x, w)
    g, x, w = _graph((None, 4, 1, 1), (4, 2, 1, 1))
    with pytest.raises(ot.ShapeError, match=r"the output would be -1x-1 .*use less padding"):
        g.conv_transpose2d(x, w, padding=1)


def test_bias_must_have_one_value_per_output_channel():
    g, x, w = _graph((None, 3, 8, 8), (16, 3, 3, 3))
    b = g.parameter("b", value=np.zeros(8))
    with pytest.raises(ot.ShapeError, match=r"the bias must have shape \(16,\) .* got \(8,\)"):
        g.conv2d(x, w, b)


@pytest.mark.parametrize(
    ("kw", "pattern"),
    [
        ({"padding": "same", "stride": 2}, "padding='same' needs stride 1"),
        ({"padding": "full"}, "padding must be an integer or 2 integers, 'same' or 'valid'"),
        ({"stride": 0}, "stride must be at least 1"),
        ({"dilation": (1, 2, 3)}, "dilation must be an integer or 2 integers"),
        ({"groups": 0}, "groups must be a positive integer"),
        ({"padding": -1}, "padding must be at least 0"),
    ],
)
def test_bad_arguments_are_graph_errors(kw, pattern):
    g, x, w = _graph((None, 2, 8, 8), (4, 2, 3, 3))
    with pytest.raises(ot.GraphError, match=pattern):
        g.conv2d(x, w, **kw)


def test_output_padding_must_stay_below_stride_or_dilation():
    g, x, w = _graph((None, 2, 4, 4), (2, 2, 3, 3))
    with pytest.raises(ot.GraphError, match=r"output_padding .* must be smaller than the stride"):
        g.conv_transpose2d(x, w, stride=2, output_padding=2)


def test_forward_copies_the_windows_once_per_group(monkeypatch):
    """No loop over output positions: one window copy (and the one product it feeds) per group,
    however large the image."""
    import onlytorch.ops.conv as conv

    calls = []
    real = conv._cols

    def counting(xp, kernel, out, stride, dilation):
        cols = real(xp, kernel, out, stride, dilation)
        calls.append(cols.shape)
        return cols

    monkeypatch.setattr(conv, "_cols", counting)
    for size, groups in ((6, 1), (20, 1), (20, 2)):
        calls.clear()
        x = np.random.default_rng(0).standard_normal((2, 4, size, size))
        w = np.ones((4, 4 // groups, 3, 3))
        out = REGISTRY["conv2d_core"].forward(
            x, w, stride=(1, 1), pads=((1, 1), (1, 1)), dilation=(1, 1), groups=groups
        )
        assert out.shape == (2, 4, size, size)
        assert calls == [(2, 4 // groups * 9, size * size)] * groups


def test_scratch_arrays_are_not_held_by_the_graph():
    """memory_stats counts the values a graph holds; a convolution holds its output, not the
    window copy its product needed (9x the input here)."""
    g = ot.Graph(dtype="float32")
    x = g.input("x", (None, 4, 16, 16))
    w = g.parameter("w", value=np.ones((8, 4, 3, 3), dtype=np.float32))
    y = g.conv2d(x, w, padding=1)
    g.set_value(x, np.ones((32, 4, 16, 16), dtype=np.float32))
    before = g.memory_stats()["current_bytes"]
    out = g.forward_node(y)
    assert g.memory_stats()["current_bytes"] - before == out.nbytes
    assert out.flags["C_CONTIGUOUS"] and out.dtype == np.float32


def test_gradient_penalty_of_a_conv_critic_matches_torch():
    """WGAN-GP's penalty (|d critic / d x| - 1)^2 on a strided conv critic, differentiated in the
    weights: a gradient of a gradient through all three primitive ops."""
    import torch
    import torch.nn.functional as tF

    rng = np.random.default_rng(3)
    xv, w1v, w2v = rng.normal(size=(3, 1, 7, 7)), rng.normal(size=(4, 1, 3, 3)), rng.normal(size=(1, 4, 3, 3))
    g = ot.Graph(dtype="float64")
    x = g.input("x", (None, 1, 7, 7))
    g.set_value(x, xv)
    w1, w2 = g.parameter("w1", value=w1v), g.parameter("w2", value=w2v)
    critic = g.sum(g.conv2d(g.tanh(g.conv2d(x, w1, stride=2, padding=1)), w2, padding="same"))
    (gx,) = g.grad(critic, [x], create_graph=True)
    norms = g.sqrt(g.sum(gx * gx, axis=(1, 2, 3)))
    penalty = g.mean((norms - 1.0) ** 2)
    g.forward_node(penalty)
    ours = g.grad(penalty, [w1, w2])

    tx = torch.tensor(xv, requires_grad=True)
    tw1, tw2 = torch.tensor(w1v, requires_grad=True), torch.tensor(w2v, requires_grad=True)
    tc = tF.conv2d(torch.tanh(tF.conv2d(tx, tw1, stride=2, padding=1)), tw2, padding="same").sum()
    (tgx,) = torch.autograd.grad(tc, tx, create_graph=True)
    tp = ((tgx.flatten(1).norm(dim=1) - 1.0) ** 2).mean()
    theirs = torch.autograd.grad(tp, [tw1, tw2])
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-9, atol=1e-11)
