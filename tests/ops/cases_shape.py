"""Cases for the ops that move elements: reshape, transpose, concat, stack, index, take_along
(gather), one_hot and argmax. See harness.py for the case format."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as TF

from .harness import Case, F, I

RESHAPE_CASES = [
    Case("reshape-2d", "reshape", [F((4, 3))], lambda g, x: g.reshape(x, shape=(3, 4)), lambda x: x.reshape(3, 4)),
    Case(
        "reshape-minus1",
        "reshape",
        [F((2, 3, 4))],
        lambda g, x: g.reshape(x, shape=(-1, 4)),
        lambda x: x.reshape(-1, 4),
    ),
    Case(
        "reshape-minus1-last",
        "reshape",
        [F((6,))],
        lambda g, x: g.reshape(x, shape=(2, -1)),
        lambda x: x.reshape(2, -1),
    ),
    Case(
        "reshape-list", "reshape", [F((2, 6))], lambda g, x: g.reshape(x, shape=[3, 2, 2]), lambda x: x.reshape(3, 2, 2)
    ),
    Case("reshape-to-0d", "reshape", [F((1, 1))], lambda g, x: g.reshape(x, shape=()), lambda x: x.reshape(())),
    Case(
        "reshape-from-0d", "reshape", [F(())], lambda g, x: g.reshape(x, shape=(1, 1, 1)), lambda x: x.reshape(1, 1, 1)
    ),
    Case(
        "reshape-batch-flatten",
        "reshape",
        [F((None, 2, 3))],
        lambda g, x: g.reshape(x, shape=(-1, 6)),
        lambda x: x.reshape(-1, 6),
    ),
    Case(
        "reshape-batch-all", "reshape", [F((None, 3))], lambda g, x: g.reshape(x, shape=(-1,)), lambda x: x.reshape(-1)
    ),
    Case(
        "reshape-tanh",
        ("reshape", "tanh"),
        [F((4, 3))],
        lambda g, x: g.tanh(g.reshape(x, shape=(2, 6))) * 2.0,
        lambda x: torch.tanh(x.reshape(2, 6)) * 2.0,
    ),
    Case(
        "reshape-int",
        "reshape",
        [I((4, 3), high=9)],
        lambda g, i: g.reshape(i, shape=(2, 6)),
        lambda i: i.reshape(2, 6),
        diff=False,
    ),
]

TRANSPOSE_CASES = [
    Case("transpose-2d", "transpose", [F((4, 3))], lambda g, x: g.transpose(x), lambda x: x.T),
    Case("transpose-T", "transpose", [F((None, 3))], lambda g, x: x.T, lambda x: x.T),
    Case("transpose-3d-none", "transpose", [F((2, 3, 4))], lambda g, x: g.transpose(x), lambda x: x.permute(2, 1, 0)),
    Case(
        "transpose-3d-axes",
        "transpose",
        [F((2, 3, 4))],
        lambda g, x: g.transpose(x, axes=(1, 0, 2)),
        lambda x: x.permute(1, 0, 2),
    ),
    Case(
        "transpose-3d-cycle",
        "transpose",
        [F((2, 3, 4))],
        lambda g, x: g.transpose(x, axes=(2, 0, 1)),
        lambda x: x.permute(2, 0, 1),
    ),
    Case(
        "transpose-negative-axes",
        "transpose",
        [F((2, 3, 4))],
        lambda g, x: g.transpose(x, axes=(-1, 0, 1)),
        lambda x: x.permute(2, 0, 1),
    ),
    Case(
        "transpose-batch-axes",
        "transpose",
        [F((None, 2, 3))],
        lambda g, x: g.transpose(x, axes=[0, 2, 1]),
        lambda x: x.transpose(1, 2),
    ),
    Case("transpose-int", "transpose", [I((2, 3), high=9)], lambda g, i: g.transpose(i), lambda i: i.T, diff=False),
]

CONCAT_CASES = [
    Case(
        "concat-axis0-three",
        "concat",
        [F((2, 3)), F((1, 3)), F((3, 3))],
        lambda g, a, b, c: g.concat(a, b, c),
        lambda a, b, c: torch.cat([a, b, c], 0),
    ),
    Case(
        "concat-axis1",
        "concat",
        [F((2, 3)), F((2, 1))],
        lambda g, a, b: g.concat(a, b, axis=1),
        lambda a, b: torch.cat([a, b], 1),
    ),
    Case(
        "concat-axis-neg-list",
        "concat",
        [F((2, 2, 3)), F((2, 2, 1)), F((2, 2, 2))],
        lambda g, a, b, c: g.concat([a, b, c], axis=-1),
        lambda a, b, c: torch.cat([a, b, c], -1),
    ),
    Case(
        "concat-batch-axis1",
        "concat",
        [F((None, 3)), F((None, 2))],
        lambda g, a, b: g.concat(a, b, axis=1),
        lambda a, b: torch.cat([a, b], 1),
    ),
    Case(
        "concat-batch-axis0",
        "concat",
        [F((None, 3)), F((2, 3), param=True)],
        lambda g, a, b: g.concat(a, b, axis=0),
        lambda a, b: torch.cat([a, b], 0),
    ),
    Case("concat-single", "concat", [F((2, 3))], lambda g, a: g.concat(a, axis=1), lambda a: torch.cat([a], 1)),
    Case(
        "concat-same-node",
        ("concat", "tanh"),
        [F((2, 3))],
        lambda g, a: g.tanh(g.concat(a, a, axis=0)),
        lambda a: torch.tanh(torch.cat([a, a], 0)),
    ),
    Case(
        "concatenate-alias",
        "concatenate",
        [F((2, 3)), F((2, 3))],
        lambda g, a, b: g.concatenate(a, b, axis=1) ** 2,
        lambda a, b: torch.cat([a, b], 1) ** 2,
    ),
]

STACK_CASES = [
    Case(
        "stack-axis0",
        "stack",
        [F((2, 3)), F((2, 3)), F((2, 3))],
        lambda g, a, b, c: g.stack(a, b, c),
        lambda a, b, c: torch.stack([a, b, c], 0),
    ),
    Case(
        "stack-axis1",
        "stack",
        [F((2, 3)), F((2, 3))],
        lambda g, a, b: g.stack(a, b, axis=1),
        lambda a, b: torch.stack([a, b], 1),
    ),
    Case(
        "stack-axis-last",
        "stack",
        [F((2, 3)), F((2, 3))],
        lambda g, a, b: g.stack([a, b], axis=-1),
        lambda a, b: torch.stack([a, b], -1),
    ),
    Case(
        "stack-batch",
        "stack",
        [F((None, 3)), F((None, 3))],
        lambda g, a, b: g.stack(a, b, axis=1),
        lambda a, b: torch.stack([a, b], 1),
    ),
    Case("stack-0d", "stack", [F(()), F(())], lambda g, a, b: g.stack(a, b), lambda a, b: torch.stack([a, b])),
    Case(
        "stack-diamond",
        ("stack", "tanh", "mul"),
        [F((2, 3))],
        lambda g, a: g.stack(a, g.tanh(a), a * a),
        lambda a: torch.stack([a, torch.tanh(a), a * a]),
    ),
]


def _index_case(variant: str, shape, key, ot_key=None) -> Case:
    k = key if ot_key is None else ot_key
    return Case(f"index-{variant}", "index", [F(shape)], lambda g, x: x[k], lambda x: x[key])


INDEX_CASES = [
    _index_case("int", (4, 3), 1),
    _index_case("negative-int", (4, 3), -1),
    _index_case("two-ints", (4, 3), (2, -1)),
    _index_case("slice", (5, 3), slice(1, 3)),
    _index_case("slice-step", (5, 3), slice(None, None, 2)),
    _index_case("slice-negative-bounds", (5, 3), slice(-4, -1, 2)),
    _index_case("column", (4, 3), (slice(None), 1)),
    _index_case("ellipsis", (2, 3, 4), (Ellipsis, 0)),
    _index_case("ellipsis-middle", (2, 3, 4), (1, Ellipsis, slice(1, None))),
    _index_case("none", (4, 3), None),
    _index_case("none-mixed", (4, 3), (slice(None), None, slice(1, None))),
    _index_case("none-ellipsis-int", (2, 3, 4), (None, Ellipsis, 1)),
    _index_case("list", (4, 3), [0, 2]),
    _index_case("list-repeated", (4, 3), [0, 2, 2, 0, 2]),
    _index_case("list-negative", (4, 3), [-1, 0, -1]),
    _index_case("list-axis1-repeated", (4, 3), (slice(None), [1, 1, 0])),
    _index_case("list-with-slice", (4, 3), (slice(1, None), [0, 0])),
    _index_case("list-after-int", (2, 3, 4), (slice(None), 0, [1, 3])),
    _index_case("list-int-apart", (2, 3, 4), (0, slice(None), [1, 3, 3])),
    _index_case("list-ellipsis", (2, 3, 4), (Ellipsis, [3, 0, 3])),
    _index_case("0d-result", (4, 3), (1, 2)),
    _index_case("numpy-int", (4, 3), (np.int64(2), slice(None, 2))),
    _index_case("numpy-array", (4, 3), (slice(None), np.array([2, 0, 2]))),
    # negative steps (torch has none: compared with flip)
    Case("index-reverse", "index", [F((4, 3))], lambda g, x: x[::-1], lambda x: x.flip(0)),
    Case("index-reverse-step", "index", [F((5, 3))], lambda g, x: x[:, ::-2], lambda x: x.flip(1)[:, ::2]),
    Case("index-reverse-batch", "index", [F((None, 3))], lambda g, x: x[::-1, 1:], lambda x: x.flip(0)[:, 1:]),
    Case("index-batch-column", "index", [F((None, 3))], lambda g, x: x[:, 0], lambda x: x[:, 0]),
    Case("index-batch-ellipsis", "index", [F((None, 3))], lambda g, x: x[..., 1:], lambda x: x[..., 1:]),
    Case("index-batch-list", "index", [F((None, 3))], lambda g, x: x[:, [2, 2, 0]], lambda x: x[:, [2, 2, 0]]),
    Case("index-batch-rows", "index", [F((None, 3))], lambda g, x: x[1:3], lambda x: x[1:3]),
    Case(
        "index-diamond",
        ("index", "mul", "add"),
        [F((4, 3))],
        lambda g, x: x[0] * x[1] + x[[0, 0]],
        lambda x: x[0] * x[1] + x[[0, 0]],
    ),
    Case(
        "slice-alias",
        "slice",
        [F((4, 3))],
        lambda g, x: g.slice(x, key=(slice(1, None), slice(None, 2))),
        lambda x: x[1:, :2],
    ),
    Case("index-int-input", "index", [I((4, 3), high=9)], lambda g, i: i[1:, 0], lambda i: i[1:, 0], diff=False),
]

IDX = np.array([[0, 2, 2], [1, 1, 1], [4, 0, 4], [3, 3, 0]])  # repeated indices along axis 1
TAKE_CASES = [
    Case(
        "take_along-axis1-repeated",
        "take_along",
        [F((4, 5)), I((4, 3), value=IDX)],
        lambda g, x, i: g.take_along(x, i, axis=1),
        lambda x, i: torch.gather(x, 1, i),
    ),
    Case(
        "take_along-axis0",
        "take_along",
        [F((3, 4)), I((2, 4), high=3)],
        lambda g, x, i: g.take_along(x, i, axis=0),
        lambda x, i: torch.gather(x, 0, i),
    ),
    Case(
        "take_along-default-axis",
        "take_along",
        [F((4, 5)), I((4, 1), high=5)],
        lambda g, x, i: g.take_along(x, i),
        lambda x, i: torch.gather(x, -1, i),
    ),
    Case(
        "take_along-3d",
        "take_along",
        [F((2, 3, 4)), I((2, 3, 6), high=4)],
        lambda g, x, i: g.take_along(x, i, axis=-1),
        lambda x, i: torch.gather(x, -1, i),
    ),
    Case(
        "take_along-batch",
        "take_along",
        [F((None, 5)), I((None, 2), high=5)],
        lambda g, x, i: g.take_along(x, i, axis=1),
        lambda x, i: torch.gather(x, 1, i),
    ),
    Case(
        "gather-alias",
        "gather",
        [F((4, 5)), I((4, 3), value=IDX)],
        lambda g, x, i: g.gather(x, i, axis=1) ** 2,
        lambda x, i: torch.gather(x, 1, i) ** 2,
    ),
    # idx shorter than x off the axis reads x's leading part (torch.gather), it does not broadcast
    Case(
        "take_along-short-idx-row",
        "take_along",
        [F((4, 5)), I((1, 2), value=[[1, 3]])],
        lambda g, x, i: g.take_along(x, i, axis=1),
        lambda x, i: torch.gather(x, 1, i),
    ),
    Case(
        "take_along-short-idx",
        "take_along",
        [F((3, 4)), I((2, 2), high=3)],
        lambda g, x, i: g.take_along(x, i, axis=0),
        lambda x, i: torch.gather(x, 0, i),
    ),
    Case(
        "take_along-constant-idx",
        ("take_along", "log_softmax"),
        [F((4, 5))],
        lambda g, x: g.take_along(g.log_softmax(x), np.array([[1], [0], [4], [1]]), axis=1),
        lambda x: torch.gather(torch.log_softmax(x, 1), 1, torch.tensor([[1], [0], [4], [1]])),
    ),
]

ONE_HOT_CASES = [
    Case(
        "one_hot-1d",
        "one_hot",
        [I((4,), high=5)],
        lambda g, i: g.one_hot(i, num_classes=5),
        lambda i: TF.one_hot(i, 5).double(),
        diff=False,
    ),
    Case(
        "one_hot-2d",
        "one_hot",
        [I((2, 3), high=4)],
        lambda g, i: g.one_hot(i, num_classes=4),
        lambda i: TF.one_hot(i, 4).double(),
        diff=False,
    ),
    Case(
        "one_hot-batch",
        "one_hot",
        [I((None,), high=3)],
        lambda g, i: g.one_hot(i, num_classes=3),
        lambda i: TF.one_hot(i, 3).double(),
        diff=False,
    ),
    Case(
        "one_hot-times-x",
        ("one_hot", "mul", "sum"),
        [F((None, 3)), I((None,), high=3)],
        lambda g, x, i: g.sum(g.one_hot(i, num_classes=3) * x, axis=1),
        lambda x, i: (TF.one_hot(i, 3).double() * x).sum(1),
    ),
]

ARGMAX_CASES = [
    Case(
        "argmax-last",
        "argmax",
        [F((4, 5), "distinct")],
        lambda g, x: g.argmax(x),
        lambda x: torch.argmax(x, -1),
        diff=False,
    ),
    Case(
        "argmax-axis0",
        "argmax",
        [F((4, 5), "distinct")],
        lambda g, x: g.argmax(x, axis=0),
        lambda x: torch.argmax(x, 0),
        diff=False,
    ),
    Case(
        "argmax-batch",
        "argmax",
        [F((None, 3), "distinct")],
        lambda g, x: g.argmax(x, axis=1),
        lambda x: torch.argmax(x, 1),
        diff=False,
    ),
    # the first maximum wins a tie (numpy and torch on CPU)
    Case(
        "argmax-ties",
        "argmax",
        [F((2, 3), value=[[1.0, 3.0, 3.0], [2.0, 2.0, 2.0]])],
        lambda g, x: g.argmax(x),
        lambda x: torch.argmax(x, -1),
        diff=False,
    ),
    Case(
        "argmax-3d",
        "argmax",
        [F((2, 3, 4), "distinct")],
        lambda g, x: g.argmax(x, axis=1),
        lambda x: torch.argmax(x, 1),
        diff=False,
    ),
]

CASES = (
    RESHAPE_CASES
    + TRANSPOSE_CASES
    + CONCAT_CASES
    + STACK_CASES
    + INDEX_CASES
    + TAKE_CASES
    + ONE_HOT_CASES
    + ARGMAX_CASES
)
