"""Spec expressions: Python's expression syntax, parsed with ``ast`` and walked under a
whitelist (never ``eval``). Names are the spec's inputs, nodes, losses and metrics; functions are
the op registry's ops, the spec's modules, ``grad(y, x)``, ``scan`` and ``param``. Anything else is
refused with a message that names the construct and the column where it starts.

A call may have several named results (a module with ``output: {mu: ..., logvar: ...}``, a scan
over such a cell): an ``Outputs`` value, which only a named node may hold and only ``["name"]``
may take apart; wherever a tensor is needed it is refused with the names to pick from."""

from __future__ import annotations

import ast
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import GraphError, ShapeError
from ..node import NodeId
from ..suggest import did_you_mean

# The spec language's functions that are not ops: the compiler lowers them itself.
SPECIAL_FUNCTIONS = {
    "grad": "grad(y, x): d y / d x as a node (y a scalar), differentiable again.",
    "scan": "scan(cell, xs, h0, ...): run a cell over axis 1 of xs, one initial state per state argument. A "
    "cell with one output returns its states stacked on axis 1; a subgraph cell with named outputs "
    "(args [x, h, c], output {h: ..., c: ...}) returns each output stacked on axis 1 (r['h']) and each "
    "state's final value (r['h_last']).",
    "param": "param('M.NAME'): module M's parameter NAME, the very node, for weight tying and penalties. "
    "Its gradient is the parameter's. The names are those onlytorch graph lists in module M's box, after 'M.': "
    "param('net.0.weight') (a layer list's layer 0), param('cell.w_ih') (a cell), param('block.w') (a "
    "subgraph's params entry w).",
}

_BINOPS: dict[type, str] = {
    ast.Add: "add",
    ast.Sub: "sub",
    ast.Mult: "mul",
    ast.Div: "div",
    ast.Pow: "pow",
    ast.MatMult: "matmul",
}
_COMPARE: dict[type, str] = {
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
}
_REFUSED: dict[type, str] = {
    ast.Attribute: "attribute access (a.b) is not allowed: call a function instead, e.g. mean(x) rather than x.mean()",
    ast.Lambda: "lambdas are not allowed in specs",
    ast.ListComp: "comprehensions are not allowed in specs",
    ast.SetComp: "comprehensions are not allowed in specs",
    ast.DictComp: "comprehensions are not allowed in specs",
    ast.GeneratorExp: "comprehensions are not allowed in specs",
    ast.IfExp: "'a if c else b' is not allowed: use where(c, a, b)",
    ast.BoolOp: "'and'/'or' are not allowed: combine 0/1 masks with * and maximum",
    ast.Dict: "dict literals are not allowed in expressions",
    ast.Set: "set literals are not allowed in expressions",
    ast.JoinedStr: "f-strings are not allowed in expressions",
    ast.Starred: "*args is not allowed in expressions",
    ast.NamedExpr: "':=' is not allowed in expressions",
    ast.Await: "'await' is not allowed in expressions",
    ast.Yield: "'yield' is not allowed in expressions",
    ast.YieldFrom: "'yield' is not allowed in expressions",
}


@dataclass(frozen=True)
class Outputs:
    """The several named results of one call (``what`` names the call for messages, e.g. "module
    enc"); select one with ``["name"]``."""

    what: str
    values: dict[str, NodeId]

    def pick_hint(self, text: str) -> str:
        first = next(iter(self.values), "name")
        return f'pick one output, e.g. {text}["{first}"]'


class ExprError(Exception):
    """A problem at a spot of an expression: ``offset`` is the 0-based column in its text."""

    def __init__(self, code: str, message: str, offset: int = 0, width: int = 1, hint: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.offset = offset
        self.width = max(1, width)
        self.hint = hint


def _span(node: ast.AST) -> tuple[int, int]:
    start = getattr(node, "col_offset", 0)
    end = getattr(node, "end_col_offset", None) or start + 1
    return start, end - start


def parse(text: str) -> ast.expr:
    """Parse and check one expression; raises ExprError (E-EXPR) for syntax or refused constructs."""
    if not isinstance(text, str):
        raise ExprError("E-EXPR", f"an expression must be a string, got {type(text).__name__} {text!r}")
    if "\n" in text.strip():
        raise ExprError("E-EXPR", "an expression must fit on one line")
    lead = len(text) - len(text.lstrip())
    try:
        with warnings.catch_warnings():  # "invalid decimal literal" and the like: not for the user's terminal
            warnings.simplefilter("ignore")
            tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as e:
        raise ExprError("E-EXPR", f"invalid expression: {e.msg}", lead + max(0, (e.offset or 1) - 1)) from None
    except ValueError as e:  # e.g. a NUL character (from a "\0" escape in a quoted YAML string)
        raise ExprError("E-EXPR", f"invalid expression: {e}", lead) from None
    except (RecursionError, MemoryError):
        raise ExprError("E-EXPR", "the expression nests too deeply to parse; split it into named nodes", lead) from None
    for node in ast.walk(tree):
        for attr in ("col_offset", "end_col_offset"):
            if hasattr(node, attr) and getattr(node, attr) is not None:
                setattr(node, attr, getattr(node, attr) + lead)
    for node in ast.walk(tree.body):
        refused = _REFUSED.get(type(node))
        if refused:
            start, width = _span(node)
            raise ExprError("E-EXPR", refused, start, width)
        if isinstance(node, ast.Call) and not isinstance(node.func, ast.Name):
            start, width = _span(node.func)
            raise ExprError("E-EXPR", "only named functions can be called, e.g. tanh(x)", start, width)
        if isinstance(node, ast.Compare) and len(node.ops) > 1:
            start, width = _span(node)
            raise ExprError("E-EXPR", "chained comparisons (a < b < c) are not allowed", start, width)
        if isinstance(node, ast.Compare) and type(node.ops[0]) not in _COMPARE:
            start, width = _span(node)
            word = "is" if isinstance(node.ops[0], (ast.Is, ast.IsNot)) else "in"
            raise ExprError(
                "E-EXPR", f"the '{word}' test is not allowed: compare with <, <=, >, >=, == or !=", start, width
            )
        if isinstance(node, ast.Constant) and not isinstance(node.value, (int, float, str, type(None), type(Ellipsis))):
            start, width = _span(node)
            raise ExprError("E-EXPR", f"the constant {node.value!r} is not allowed", start, width)
        if isinstance(node, ast.Constant) and isinstance(node.value, int) and not _int64(node.value):
            start, width = _span(node)
            raise ExprError(
                "E-EXPR", "integer constants must fit in 64 bits; write large numbers as floats (1.0e30)", start, width
            )
    return tree.body


@dataclass
class Scope:
    """What names and calls mean while evaluating: supplied by the compiler. ``call`` gets the
    function's name, the call's AST node and an evaluator for its arguments (so that functions
    such as scan can take a module name as an argument)."""

    graph: Any
    value: Callable[[str, int, int], Any]  # (name, offset, width) -> node or Outputs; raises ExprError
    call: Callable[[str, ast.Call, Callable[[ast.expr], Any]], Any]
    float_type: str | None = None  # the graph's float type: number constants must fit in it


def evaluate(tree: ast.expr, scope: Scope) -> NodeId:
    """Build the nodes of an expression in scope.graph; returns the result node (one tensor)."""
    out = evaluate_value(tree, scope)
    if isinstance(out, Outputs):
        raise _several(tree, out, "a tensor")
    return out


def evaluate_value(tree: ast.expr, scope: Scope) -> NodeId | Outputs:
    """As evaluate, but a call's several named results (what a named node may hold) are kept."""
    try:
        out = _eval(tree, scope)
    except RecursionError:
        start, width = _span(tree)
        raise ExprError(
            "E-EXPR", "the expression nests too deeply to build; split it into named nodes", start, width
        ) from None
    if isinstance(out, Outputs):
        return out
    if not isinstance(out, NodeId):
        return scope.graph.constant(float(out)) if isinstance(out, (int, float)) else _not_a_node(tree, out)
    return out


def _several(node: ast.expr, out: Outputs, need: str) -> ExprError:
    """The error for several outputs where one tensor is needed: which exist, how to pick one."""
    start, width = _span(node)
    text = ast.unparse(node)
    names = ", ".join(out.values)
    return ExprError(
        "E-OUTPUT", f"{text} has several outputs ({names}) where {need} is needed", start, width, out.pick_hint(text)
    )


def _tensor(node: ast.expr, scope: Scope) -> Any:
    """A sub-expression whose value is used as one tensor (or a number, a list)."""
    out = _eval(node, scope)
    if isinstance(out, Outputs):
        raise _several(node, out, "one tensor")
    return out


def _select(node: ast.Subscript, base: Any) -> Any:
    """base["name"]: one of a call's named outputs. None when the index is not a string (an
    ordinary index of a tensor)."""
    key = node.slice
    named = isinstance(key, ast.Constant) and isinstance(key.value, str)
    if isinstance(base, Outputs):
        if not named:
            raise _several(node.value, base, "a tensor to index")
        assert isinstance(key, ast.Constant)
        if key.value not in base.values:
            start, width = _span(key)
            options = ", ".join(base.values)
            hint = did_you_mean(key.value, base.values) or f"its outputs are {options}"
            raise ExprError("E-NAME", f"{base.what} has no output {key.value!r} (it has {options})", start, width, hint)
        return base.values[key.value]
    if named:
        start, width = _span(key)
        raise ExprError(
            "E-OUTPUT",
            f"{ast.unparse(node.value)} is one tensor: a name in [...] selects an output of a module "
            "with several (output: {name: ..., ...})",
            start,
            width,
            "index a tensor with integers and slices, e.g. x[:, 0]",
        )
    return None


def _not_a_node(tree: ast.expr, out: Any) -> NodeId:
    start, width = _span(tree)
    raise ExprError("E-EXPR", f"the expression must compute a value, not {out!r}", start, width)


def _eval(node: ast.expr, scope: Scope) -> Any:
    g = scope.graph
    try:
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                start, width = _span(node)
                raise ExprError(
                    "E-EXPR", "strings are only allowed as keyword arguments, e.g. reduction='sum'", start, width
                )
            return _fits(node.value, node, scope)
        if isinstance(node, ast.Name):
            start, width = _span(node)
            return scope.value(node.id, start, width)
        if isinstance(node, ast.BinOp):
            op = _BINOPS.get(type(node.op))
            if op is None:
                start, width = _span(node)
                raise ExprError("E-EXPR", f"the operator {type(node.op).__name__} is not allowed", start, width)
            left, right = _tensor(node.left, scope), _tensor(node.right, scope)
            if not isinstance(left, NodeId) and not isinstance(right, NodeId):
                return _fits(_fold(node, left, right), node, scope)
            return g.apply(op, (left, right))
        if isinstance(node, ast.UnaryOp):
            operand = _tensor(node.operand, scope)
            if not isinstance(operand, (NodeId, int, float)) and isinstance(node.op, (ast.USub, ast.UAdd)):
                start, width = _span(node)
                raise ExprError("E-EXPR", f"a sign applies to numbers and nodes, not {operand!r}", start, width)
            if isinstance(node.op, ast.USub):
                return -operand
            if isinstance(node.op, ast.UAdd):
                return operand
            start, width = _span(node)
            raise ExprError("E-EXPR", f"the operator {type(node.op).__name__} is not allowed", start, width)
        if isinstance(node, ast.Compare):
            op = _COMPARE[type(node.ops[0])]
            return g.apply(op, (_tensor(node.left, scope), _tensor(node.comparators[0], scope)))
        if isinstance(node, ast.Subscript):
            base = _eval(node.value, scope)
            picked = _select(node, base)
            if picked is not None:
                return picked
            if not isinstance(base, NodeId):
                start, width = _span(node.value)
                raise ExprError("E-EXPR", "only nodes can be indexed", start, width)
            return g.apply("index", (base,), {"key": _index_key(node.slice)})
        if isinstance(node, (ast.List, ast.Tuple)):
            return [_tensor(e, scope) for e in node.elts]
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            for kw in node.keywords:
                if kw.arg is None:
                    start, width = _span(kw.value)
                    raise ExprError("E-EXPR", "**kwargs is not allowed", start, width)
            return scope.call(node.func.id, node, lambda a: _tensor(a, scope))
        start, width = _span(node)
        raise ExprError("E-EXPR", f"{type(node).__name__} is not allowed in expressions", start, width)
    except ShapeError as e:
        start, width = _span(node)
        raise ExprError("E-SHAPE", str(e), start, width) from None
    except GraphError as e:
        start, width = _span(node)
        message, hint = _split_hint(str(e))
        raise ExprError("E-ARG", message, start, width, hint) from None


def _split_hint(message: str) -> tuple[str, str | None]:
    """The engine writes "...; did you mean 'axis'? (...)" into its messages: make that the hint."""
    m = re.search(r"; (did you mean '[^']*'\?)", message)
    if m is None:
        return message, None
    return message[: m.start()] + message[m.end() :], m.group(1)


def _fits(value: Any, node: ast.expr, scope: Scope) -> Any:
    """A number constant, checked against the graph's float type (1e308 would become inf in float32)."""
    if scope.float_type and isinstance(value, float) and math.isfinite(value):
        largest = float(np.finfo(scope.float_type).max)
        if abs(value) > largest:
            start, width = _span(node)
            raise ExprError(
                "E-EXPR",
                f"the number {value:g} does not fit in {scope.float_type} (at most {largest:.4g})",
                start,
                width,
            )
    return value


def _fold(node: ast.BinOp, a: Any, b: Any) -> Any:
    if not all(isinstance(v, (int, float)) for v in (a, b)):
        start, width = _span(node)
        raise ExprError("E-EXPR", "arithmetic needs numbers or nodes", start, width)
    op = type(node.op)
    if op is ast.MatMult:
        start, width = _span(node)
        raise ExprError("E-EXPR", "'@' needs nodes", start, width)
    try:
        if op is ast.Pow:
            # float first: it overflows at once where an exact integer power could run for hours
            out = float(a) ** b
            if isinstance(out, complex):
                raise ValueError(f"{a!r} ** {b!r} is not a real number")
            if isinstance(a, int) and isinstance(b, int) and b >= 0:
                out = a**b
        elif op is ast.Add:
            out = a + b
        elif op is ast.Sub:
            out = a - b
        elif op is ast.Mult:
            out = a * b
        else:
            out = a / b
        return float(out) if isinstance(out, int) and not _int64(out) else out
    except (ZeroDivisionError, OverflowError, ValueError) as e:
        start, width = _span(node)
        why = "the result is too large" if isinstance(e, OverflowError) else str(e)
        raise ExprError("E-EXPR", f"constant arithmetic failed: {why}", start, width) from None


def _int64(v: int) -> bool:
    return -(2**63) <= v < 2**63


def call_arguments(node: ast.Call, ev: Callable[[ast.expr], Any]) -> tuple[list[Any], dict[str, Any]]:
    """A call's positional arguments (evaluated) and keyword arguments (constants)."""
    return [ev(a) for a in node.args], {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg}


def span(node: ast.AST) -> tuple[int, int]:
    """(start column, width) of an AST node in its expression's text."""
    return _span(node)


def _literal(node: ast.expr) -> Any:
    """A keyword argument's value: numbers, strings, booleans, None, or tuples/lists of them."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
        v = node.operand.value
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return -v
    if isinstance(node, (ast.Tuple, ast.List)):
        return tuple(_literal(e) for e in node.elts)
    start, width = _span(node)
    raise ExprError(
        "E-ARG",
        "keyword arguments take constants (numbers, strings, True/False, tuples); pass nodes by position",
        start,
        width,
    )


def _index_key(node: ast.expr) -> Any:
    if isinstance(node, ast.Tuple):
        return tuple(_index_part(e) for e in node.elts)
    return _index_part(node)


def _index_part(node: ast.expr) -> Any:
    if isinstance(node, ast.Slice):
        if node.step is not None and _int(node.step) == 0:
            start, width = _span(node.step)
            raise ExprError("E-ARG", "a slice step must be a non-zero integer (x[::2], x[::-1]), not 0", start, width)
        return slice(*(None if p is None else _int(p) for p in (node.lower, node.upper, node.step)))
    if isinstance(node, ast.Constant) and (node.value is None or node.value is Ellipsis):
        return node.value
    if isinstance(node, ast.List):
        return [_int(e) for e in node.elts]
    return _int(node)


def _int(node: ast.expr) -> int:
    value = _literal(node) if isinstance(node, (ast.Constant, ast.UnaryOp)) else None
    if isinstance(value, bool) or not isinstance(value, int):
        start, width = _span(node)
        raise ExprError("E-EXPR", "indices must be integer constants (x[:, 0], x[1:3], x[..., -1])", start, width)
    return value
