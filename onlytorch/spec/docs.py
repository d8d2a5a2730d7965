"""The spec language reference, generated from the pydantic models, the data source registry,
the optimizer and schedule classes, the op registry and the diagnostic codes, so that the docs
cannot drift from what validate accepts. ``python -m onlytorch.spec.docs`` rewrites the generated
part of docs/spec.md; a test fails when the file is out of date."""

from __future__ import annotations

import inspect
import pathlib
import re
import sys
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from . import schema as S
from .diagnostics import CODES
from .logging_spec import MlflowSpec

BEGIN = "<!-- BEGIN GENERATED: python -m onlytorch.spec.docs -->"
END = "<!-- END GENERATED -->"


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin is typing.Literal:
        return " \\| ".join(repr(a) if isinstance(a, str) else str(a) for a in args)
    if origin is typing.Annotated:
        inner = args[0]
        if typing.get_origin(inner) is typing.Union:
            members = [
                typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m for m in typing.get_args(inner)
            ]
            if all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
                return "one of the kinds listed below"
        return _type_name(inner)
    if origin in (typing.Union, __import__("types").UnionType):
        members = [typing.get_args(m)[0] if typing.get_origin(m) is typing.Annotated else m for m in args]
        if len(members) > 2 and all(isinstance(m, type) and issubclass(m, BaseModel) for m in members):
            return "one of the kinds listed below"
        rest = members[1:]
        if members[0] is float and rest and all(isinstance(m, type) and issubclass(m, BaseModel) for m in rest):
            return "float \\| a schedule (see the loss-weight schedules below)"  # a backward's weight
        return " \\| ".join(_type_name(a) for a in args)
    if origin is list:
        return f"list of {_type_name(args[0])}" if args else "list"
    if origin is dict:
        return f"mapping name → {_type_name(args[1])}" if args else "mapping"
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        if not tp.__name__.endswith("Spec"):
            return tp.__name__
        # EarlyStoppingSpec -> early_stopping: the key the model is written under
        return re.sub(r"(?<!^)(?=[A-Z])", "_", tp.__name__.removesuffix("Spec")).lower()
    return getattr(tp, "__name__", str(tp))


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    if field.default_factory is not None:
        return f"`{field.default_factory()!r}`"
    if field.default is PydanticUndefined or field.default is None:
        return "—"
    return f"`{field.default!r}`"


def model_table(model: type[BaseModel], skip: tuple[str, ...] = ()) -> str:
    rows = ["| key | type | default | meaning |", "|---|---|---|---|"]
    for name, f in model.model_fields.items():
        key = f.alias or name
        if key in skip:
            continue
        meaning = (f.description or "").replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_name(f.annotation)} | {_default(f)} | {meaning} |")
    return "\n".join(rows)


def _doc(obj: Any) -> str:
    return inspect.cleandoc(obj.__doc__ or "").split("\n\n")[0].replace("\n", " ")


def render_reference() -> str:
    from ..data.sources import SOURCES
    from ..ops.registry import public_ops

    out: list[str] = []
    add = out.append
    add("### Top level\n")
    add(_doc(S.Spec) + "\n")
    add(model_table(S.Spec))
    for title, model in (
        ("`data`", S.DataSpec),
        ("`inputs.NAME`", S.InputSpec),
        ("`modules.NAME`", S.ModuleSpec),
        ("`modules.NAME.sync`", S.SyncSpec),
        ("`modules.NAME.params.P`", S.ParamSpec),
        ("`train`", S.TrainSpec),
        ("`train.monitor`", S.MonitorSpec),
        ("`train.early_stopping`", S.EarlyStoppingSpec),
        ("`init[i]`", S.InitSpec),
        ("`train.schedule[i]` (a phase)", S.PhaseSpec),
        ("`train.schedule[i].backward[j]`", S.BackwardSpec),
        ("`eval`", S.EvalSpec),
        ("`data.val` / `data.test` held out of train", S.SplitSpec),
        ("`logging`", S.LoggingSpec),
        ("`logging.mlflow`", MlflowSpec),
    ):
        add(f"\n### {title}\n")
        add(_doc(model) + "\n")
        add(model_table(model))
    add("\n### Data sources (`data.train`, `data.val`, `data.test`)\n")
    add("Each is `{source: NAME, ...parameters}`; inputs read a source's fields as `SPLIT.FIELD`.\n")
    for name, src in SOURCES.items():
        add(f"\n#### `{name}`" + (f" (needs the `{src.extra}` extra)" if src.extra else "") + "\n")
        add(inspect.cleandoc(src.doc).split("\n\n")[0].replace("\n", " "))
        add("")
        add(model_table(src.params))
        add("")
        add(field_table(src.field_rows))
    add("\n### Optimizers (`optimizers.NAME`)\n")
    add("Each is `{type: NAME, params: [...], lr: ..., ...}` with torch.optim's defaults.\n")
    for name, opt_model in S.OPTIMIZER_MODELS.items():
        add(f"\n#### `type: {name}`\n")
        add(_doc(opt_model) + "\n")
        add(model_table(opt_model, skip=("type",)))
    add("\n### Learning-rate schedules (`optimizers.NAME.schedule`)\n")
    for name, sched_model in S.SCHEDULE_MODELS.items():
        add(f"\n#### `type: {name}`\n")
        add(_doc(sched_model) + "\n")
        add(model_table(sched_model, skip=("type",)))
    add("\n### Loss-weight schedules (`train.schedule[i].backward[j].weight`)\n")
    add(
        "A weight is a number or `{type: NAME, ...}`, evaluated at every iteration (the trainer's step before "
        "the iteration runs; every repeat and micro-batch of an iteration uses the same weight). `linear` gives "
        "the weight itself; every learning-rate schedule above that is a function of the step ("
        + ", ".join(f"`{k}`" for k in S.WEIGHT_SCHEDULE_MODELS if k != "linear")
        + ") takes its own keys plus `value` (default 1.0), the weight it scales as it scales a base learning rate.\n"
    )
    add("\n#### `type: linear`\n")
    add(_doc(S.WEIGHT_SCHEDULE_MODELS["linear"]) + "\n")
    add(model_table(S.WEIGHT_SCHEDULE_MODELS["linear"], skip=("type",)))
    add(layer_table())
    add(cell_table())
    add("\n### Functions in expressions\n")
    add(
        "Expressions are Python syntax (`+ - * / ** @`, unary `-`, comparisons, `x[...]` with constant indices), parsed with `ast` under a whitelist; keyword arguments take constants. Besides module calls `M(x)`:\n"
    )
    add("| function | meaning |\n|---|---|")
    from .expr import SPECIAL_FUNCTIONS

    for name, text in SPECIAL_FUNCTIONS.items():
        add(f"| `{name}` | {text} |")
    for name, op in sorted(public_ops().items()):
        sig = op.signature()
        alias = f" (alias of `{op.name}`)" if name != op.name else ""
        first = " ".join(op.doc.split("\n\n")[0].split()).replace("|", "\\|")
        add(f"| `{name}({sig})` | {first}{alias} |")
    add("\n### Diagnostic codes\n")
    add("| code | meaning |\n|---|---|")
    for code, text in CODES.items():
        add(f"| `{code}` | {text} |")
    return "\n".join(out) + "\n"


def field_table(rows: Any) -> str:
    """A data source's fields, one row per declared field (name, dtype, per-sample shape, meaning;
    sizes written with the source's parameters), from its FieldTable."""
    if not rows:
        return "Fields: given by a function of its parameters (declare a `FieldTable` to list them here)."
    out = [
        "Fields (per sample; an input reads one as `SPLIT.FIELD`):\n",
        "| field | dtype | shape | meaning |",
        "|---|---|---|---|",
    ]
    for row in rows:
        shape = row.shape_text() if isinstance(row.shape, str) else f"`{row.shape_text()}`"
        meaning = row.doc
        if row.classes is not None:
            meaning += f"; classes: `{row.classes}`"
        if row.when is not None:
            meaning += f" (only when `{row.when}` is set)"
        out.append(f"| `{row.name}` | {row.dtype} | {shape} | {meaning.replace('|', chr(92) + '|')} |")
    return "\n".join(out)


def layer_table() -> str:
    """The layers of a module's layer list: one row per declared layer (from the layer registry),
    then the one-input functions, then each declared layer's options."""
    from ..nn.layers import LAYERS

    out = ["\n### Layers (items of a module's layer list)\n", "| layer | form | meaning |\n|---|---|---|"]
    for name, defn in LAYERS.items():
        forms = " or ".join(f"`{f}`" for f in defn.forms)
        out.append(f"| `{name}` | {forms} | {defn.doc} |")
    out.append(
        "| any one-input function below | `relu`, `{leaky_relu: 0.2}`, `{dropout: 0.1}`, `{gelu: {approximate: tanh}}` | the function, a scalar giving its first argument |"
    )
    for name, defn in LAYERS.items():
        out.append(f"\n#### `{name}` options\n")
        if defn.short:
            out.append(f"A bare value (`{defn.forms[0]}`) is `{defn.short}`.\n")
        out.append(model_table(defn.options))
    return "\n".join(out)


class _Dim:
    """A width written as a letter (D, H) so that a cell's declared parameter shapes print as
    formulas: 3 * H is "3H", D + H is "D + H"."""

    def __init__(self, text: str, sum_: bool = False) -> None:
        self.text, self.sum = text, sum_

    def __add__(self, other: Any) -> _Dim:
        return _Dim(f"{self} + {other}", True)

    __radd__ = __add__

    def __mul__(self, other: Any) -> _Dim:
        if not isinstance(other, int) or isinstance(other, bool):
            return NotImplemented
        return _Dim(f"{other}({self.text})" if self.sum else f"{other}{self.text}")

    __rmul__ = __mul__

    def __str__(self) -> str:
        return self.text


def _cell_params(defn: Any) -> str:
    """A cell's parameters with their shapes for input width D and hidden size H, or their names
    alone when its declaration computes shapes the letters cannot stand for."""
    try:
        shapes = defn.params(_Dim("D"), _Dim("H"))
        return ", ".join(f"`{k}` ({', '.join(map(str, s))})" for k, s in shapes.items())
    except Exception:  # e.g. hidden // 2: the names still say what the cell holds
        return ", ".join(f"`{k}`" for k in defn.params(1, 1))


def cell_table() -> str:
    """The recurrent cells a module may be (``{cell: KIND, hidden: H}``): one row per declared cell
    (from the cell registry)."""
    from ..nn.cells import CELLS

    out = [
        "\n### Recurrent cells (`modules.NAME.cell`)\n",
        "A module `{cell: KIND, hidden: H}` is called as `NAME(x, h)`, or over a sequence by `scan(NAME, xs, h0)`; "
        "its parameters are `NAME.*`, shaped for an input of width D.\n",
        "| cell | meaning | parameters |\n|---|---|---|",
    ]
    for name, defn in CELLS.items():
        doc = defn.doc.replace("|", "\\|")
        if len(defn.states) > 1:  # e.g. an LSTM's (h, c): called and scanned with one value per state
            st = ", ".join(defn.states)
            doc += f"; states {st}: `NAME(x, {st})`, `scan(NAME, xs, {', '.join(s + '0' for s in defn.states)})`"
        out.append(f"| `{name}` | {doc} | {_cell_params(defn)} |")
    return "\n".join(out)


def splice(text: str, generated: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with what lies between the markers ``begin`` and ``end`` replaced by ``generated``."""
    if begin not in text or end not in text:
        raise ValueError(f"the docs file needs the markers {begin!r} and {end!r}")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n{generated}{end}{tail}"


def regenerate(
    argv: list[str], prog: str, description: str, default: str, render: Any, begin: str = BEGIN, end: str = END
) -> int:
    """The command line of a generated reference (``prog [FILE] [--stdout]``): write ``render()``
    between FILE's markers (default ``default``), or print it. Exit 0, or 2 when FILE cannot be
    read or written or lacks the markers."""
    import argparse

    ap = argparse.ArgumentParser(prog=prog, description=description)
    ap.add_argument("file", nargs="?", default=default, help=f"a Markdown file holding {begin} ... {end}")
    ap.add_argument("--stdout", action="store_true", help="print the generated reference instead of writing it")
    args = ap.parse_args(argv[1:])
    if args.stdout:
        print(render(), end="")
        return 0
    path = pathlib.Path(args.file)
    try:
        text = path.read_text(encoding="utf-8")
        path.write_text(splice(text, render(), begin, end), encoding="utf-8")
    except (OSError, ValueError) as e:
        print(f"error: {path}: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


def main(argv: list[str]) -> int:
    """``python -m onlytorch.spec.docs [FILE] [--stdout]``: regenerate the reference between FILE's
    markers (default docs/spec.md), or print it. Declarations imported before calling main (your
    own layers, sources, optimizers) are listed too."""
    return regenerate(
        argv, "python -m onlytorch.spec.docs", "Regenerate the spec reference.", "docs/spec.md", render_reference
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
