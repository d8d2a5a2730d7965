"""Cases for the convolutions: conv1d, conv2d and conv_transpose2d against torch.nn.functional,
with strides, padding (symmetric, 'same' with its uneven split, 'valid', and strides that leave
trailing input rows unused), dilation, groups, odd sizes and a batch of 1. Second derivatives
(the harness differentiates sum(grad . V) in every input) cover the mixed input/weight terms the
three primitive ops' derivative rules build of each other; the cases behind a tanh make the pure
second derivatives non-zero too. See harness.py for the case format."""

from __future__ import annotations

import torch
import torch.nn.functional as tF

from .harness import Case, F

C2 = ("conv2d", "conv2d_core")
C1 = ("conv1d", "conv2d_core")
CT = ("conv_transpose2d", "conv_transpose2d_core")


def _conv2d(variant: str, sx, sw, bias: bool = True, **kw) -> Case:
    extra = kw.pop("case", {})
    inputs = [F(sx), F(sw)] + ([F((sw[0],))] if bias else [])
    if bias:
        return Case(
            f"conv2d-{variant}",
            C2,
            inputs,
            lambda g, x, w, b: g.conv2d(x, w, b, **kw),
            lambda x, w, b: tF.conv2d(x, w, b, **kw),
            **extra,
        )
    return Case(
        f"conv2d-{variant}",
        C2,
        inputs,
        lambda g, x, w: g.conv2d(x, w, **kw),
        lambda x, w: tF.conv2d(x, w, **kw),
        **extra,
    )


def _conv1d(variant: str, sx, sw, **kw) -> Case:
    extra = kw.pop("case", {})
    return Case(
        f"conv1d-{variant}",
        C1,
        [F(sx), F(sw), F((sw[0],))],
        lambda g, x, w, b: g.conv1d(x, w, b, **kw),
        lambda x, w, b: tF.conv1d(x, w, b, **kw),
        **extra,
    )


def _convt(variant: str, sx, sw, groups: int = 1, **kw) -> Case:
    extra = kw.pop("case", {})
    out = sw[1] * groups
    return Case(
        f"conv_transpose2d-{variant}",
        CT,
        [F(sx), F(sw), F((out,))],
        lambda g, x, w, b: g.conv_transpose2d(x, w, b, groups=groups, **kw),
        lambda x, w, b: tF.conv_transpose2d(x, w, b, groups=groups, **kw),
        **extra,
    )


NO_FD = {"fd": False}

CONV2D_CASES = [
    _conv2d("small", (1, 2, 4, 3), (2, 2, 2, 2)),  # finite differences (42 elements)
    _conv2d("stride-pad", (2, 3, 7, 6), (4, 3, 3, 3), stride=2, padding=1, case=NO_FD),
    # stride 3 over 9x7 with a 3x2 kernel dilated 2x1: trailing rows and columns are never read
    _conv2d("asym-unused-tail", (2, 2, 9, 8), (3, 2, 3, 2), stride=(3, 2), padding=(0, 2), dilation=(2, 1), case=NO_FD),
    _conv2d("groups", (2, 4, 5, 5), (6, 2, 3, 3), groups=2, padding=1, case=NO_FD),
    _conv2d("depthwise-same", (2, 3, 5, 6), (3, 1, 3, 3), groups=3, padding="same", case=NO_FD),
    # an even kernel: 'same' pads one more at the bottom/right than at the top/left (torch)
    _conv2d("same-even-kernel", (2, 2, 5, 6), (3, 2, 4, 2), padding="same", case=NO_FD),
    _conv2d("same-dilated", (1, 2, 6, 5), (2, 2, 3, 2), padding="same", dilation=(2, 3), case=NO_FD),
    _conv2d("valid-no-bias", (2, 3, 6, 5), (4, 3, 3, 2), bias=False, padding="valid", case=NO_FD),
    _conv2d("1x1", (2, 5, 3, 4), (3, 5, 1, 1), case=NO_FD),
    _conv2d("kernel-fills-input", (3, 2, 3, 4), (2, 2, 3, 4), case=NO_FD),
    # groups and stride, small enough for finite differences (48 elements)
    _conv2d("groups-stride-small", (1, 2, 5, 4), (2, 1, 2, 2), bias=False, stride=2, groups=2),
    Case(
        "conv2d-batch-of-1",
        C2,
        [F((None, 2, 5, 5)), F((3, 2, 3, 3), param=True), F((3,), param=True)],
        lambda g, x, w, b: g.conv2d(x, w, b, stride=2, padding=1),
        lambda x, w, b: tF.conv2d(x, w, b, stride=2, padding=1),
        batch=1,
        fd=False,
    ),
    # a two-layer critic: tanh makes the second derivatives in x and in w non-zero
    Case(
        "conv2d-tanh-critic",
        (*C2, "tanh"),
        [F((2, 1, 6, 6)), F((3, 1, 3, 3), param=True), F((2, 3, 2, 2), param=True)],
        lambda g, x, w1, w2: g.sum(g.conv2d(g.tanh(g.conv2d(x, w1, stride=2, padding=1)), w2), axis=(1, 2, 3)),
        lambda x, w1, w2: tF.conv2d(torch.tanh(tF.conv2d(x, w1, stride=2, padding=1)), w2).sum(dim=(1, 2, 3)),
        fd=False,
    ),
    Case(
        "conv2d-tanh-small",
        (*C2, "tanh"),
        [F((1, 1, 4, 4)), F((2, 1, 2, 2)), F((2,))],
        lambda g, x, w, b: g.tanh(g.conv2d(x, w, b, stride=(1, 2), padding=(1, 0))),
        lambda x, w, b: torch.tanh(tF.conv2d(x, w, b, stride=(1, 2), padding=(1, 0))),
    ),
]

CONV1D_CASES = [
    _conv1d("small", (2, 2, 7), (3, 2, 3)),  # finite differences (51 elements)
    _conv1d("stride-dilation-groups", (2, 4, 11), (6, 2, 3), stride=2, dilation=2, padding=2, groups=2, case=NO_FD),
    _conv1d("same-even-kernel", (2, 3, 8), (2, 3, 4), padding="same", case=NO_FD),
    _conv1d("valid-odd", (3, 2, 9), (4, 2, 5), padding="valid", stride=3, case=NO_FD),
    Case(
        "conv1d-batch-of-1",
        C1,
        [F((None, 3, 7)), F((2, 3, 3), param=True)],
        lambda g, x, w: g.conv1d(x, w, padding=1),
        lambda x, w: tF.conv1d(x, w, padding=1),
        batch=1,
        fd=False,
    ),
    Case(
        "conv1d-tanh-small",
        (*C1, "tanh"),
        [F((1, 2, 6)), F((2, 2, 3)), F((2,))],
        lambda g, x, w, b: g.tanh(g.conv1d(x, w, b, stride=2, padding=1)),
        lambda x, w, b: torch.tanh(tF.conv1d(x, w, b, stride=2, padding=1)),
    ),
]

CONV_TRANSPOSE_CASES = [
    _convt("small", (1, 2, 3, 3), (2, 2, 2, 2), stride=2),  # finite differences (36 elements)
    _convt("stride-pad-output-pad", (2, 3, 4, 3), (3, 2, 3, 3), stride=2, padding=1, output_padding=1, case=NO_FD),
    _convt(
        "groups-dilation-asym",
        (2, 4, 3, 4),
        (4, 3, 3, 2),
        groups=2,
        stride=(2, 3),
        padding=(1, 0),
        output_padding=(1, 2),
        dilation=(1, 2),
        case=NO_FD,
    ),
    _convt("stride-1-padding", (2, 3, 5, 4), (3, 2, 3, 3), padding=1, case=NO_FD),
    # output_padding below the dilation with stride 1
    _convt("dilation-output-pad", (1, 2, 4, 4), (2, 3, 2, 3), dilation=2, output_padding=1, case=NO_FD),
    Case(
        "conv_transpose2d-batch-of-1",
        CT,
        [F((None, 4, 3, 3)), F((4, 2, 4, 4), param=True), F((2,), param=True)],
        lambda g, x, w, b: g.conv_transpose2d(x, w, b, stride=2, padding=1),
        lambda x, w, b: tF.conv_transpose2d(x, w, b, stride=2, padding=1),
        batch=1,
        fd=False,
    ),
    # a DCGAN-like generator into a conv critic
    Case(
        "conv_transpose2d-generator-critic",
        (*CT, *C2, "tanh"),
        [F((2, 3, 2, 2)), F((3, 2, 4, 4), param=True), F((2, 2, 3, 3), param=True)],
        lambda g, z, wg, wd: g.sum(
            g.tanh(g.conv2d(g.tanh(g.conv_transpose2d(z, wg, stride=2, padding=1)), wd, stride=2)), axis=(1, 2, 3)
        ),
        lambda z, wg, wd: torch.tanh(
            tF.conv2d(torch.tanh(tF.conv_transpose2d(z, wg, stride=2, padding=1)), wd, stride=2)
        ).sum(dim=(1, 2, 3)),
        fd=False,
    ),
    Case(
        "conv_transpose2d-tanh-small",
        (*CT, "tanh"),
        [F((1, 2, 2, 3)), F((2, 1, 3, 2)), F((1,))],
        lambda g, x, w, b: g.tanh(g.conv_transpose2d(x, w, b, stride=(2, 1), padding=(1, 0), output_padding=(1, 0))),
        lambda x, w, b: torch.tanh(tF.conv_transpose2d(x, w, b, stride=(2, 1), padding=(1, 0), output_padding=(1, 0))),
    ),
]

CASES = CONV2D_CASES + CONV1D_CASES + CONV_TRANSPOSE_CASES
