"""Diagnostics: what validate reports, the way a compiler does: ``file:line:column: CODE message``,
the offending line, a caret under the spot, and a hint.

Codes are stable (tests and users match on them); ``CODES`` below says what each means.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..suggest import did_you_mean  # noqa: F401  (the one did-you-mean rule, re-exported for the spec modules)

Path = tuple[Any, ...]

CODES: dict[str, str] = {
    "E-YAML": "the file is not valid YAML (or cannot be read)",
    "E-YAML-TAG": "a YAML tag other than the standard ones (`!!python/...` and the like); never constructed",
    "E-YAML-DUP": "a mapping repeats a key",
    "E-KEY": "a key the spec language does not have (with a did-you-mean)",
    "E-MISSING": "a required key is missing",
    "E-TYPE": "a value of the wrong type or out of range",
    "E-NAME": "a name that is not defined (with a did-you-mean)",
    "E-DUP": "a name defined twice (across inputs, modules, nodes, losses, metrics; phases), or one the metrics "
    "log already uses: a phase called eval, val, test, train_split, lr, grad_norm or rollout, a loss or metric "
    "named like a score the evaluation computes (modes_covered, return_mean, ...)",
    "E-EXPR": "an expression that does not parse or uses a construct that is not allowed",
    "E-ARG": "wrong arguments to a function or module",
    "E-OUTPUT": "a call's several named outputs used where one tensor is needed (pick one: enc(x)['mu']), a "
    "name in [...] on a value with one output, or a scan cell that does not return each of its states",
    "E-SHAPE": "shapes that do not fit together (static inference, batch dimension N)",
    "E-CYCLE": "definitions that depend on each other in a circle",
    "E-LOSS": "a loss or metric that is not a scalar",
    "E-MODULE": "a module or layer that cannot be built",
    "E-DATA": "a data source, file, split or field problem",
    "E-PHASE": "a phase that cannot work: an optimizer that no backward of the phase reaches, a backward with no targets, "
    "`accumulate` or a later phase's `batch: new` with windowed inputs",
    "E-RANGE": "a phase's active range is empty: `until` (the first iteration it no longer runs) is not after `start`",
    "W-NEVER-RUNS": "a phase that never runs within `train.steps` (its `start` is past the run's last iteration)",
    "E-RELEASED": "a backward needs values that an earlier `retain_graph: false` backward of the same phase releases",
    "W-RETAIN": "`retain_graph: true` that no later backward of the phase needs (wasted memory)",
    "W-UNUSED": "a parameter that no phase updates, or a module that is never called",
    "W-DOUBLE-BATCH": "an optimizer step applies the same loss on the same batch twice (a phase's first run reuses "
    "the previous phase's last batch: after `zero_grad: never`, the last micro-batch counts twice)",
    "W-GRAD-DISCARDED": "gradients a backward accumulates are cleared (zero_grad) before any step applies them",
    "W-STEP-ROLE": "an optimizer stepped on another optimizer's loss in a game (both losses depend on both "
    "optimizers' parameters, e.g. d_opt stepped in the generator phase on g_loss)",
    "W-DOUBLE-STEP": "two optimizers stepped in one phase both update a parameter (it moves twice on one gradient)",
    "W-SHARED-PARAM": "two optimizers both update a parameter, in different phases",
    "W-MODE": "a gym source's policy uses dropout or batch norm: it acts in eval mode (under no_grad) but trains in train mode",
    "E-MEMORY": "the memory a run needs (parameters, gradients, optimizer state, activations at the batch size, data, buffers) passes the limit: the machine's memory or `--max-memory`",
    "E-GRAD-SIZE": "`grad(...)` calls (nested ones grow the graph about threefold per level) would build more gradient nodes than the compiler allows",
    "E-MONITOR": "`train.monitor` cannot choose best.npz: a metric of the spec without `mode`, a mode against a declared direction (a loss is always minimised), a split that does not apply, or no eval section",
    "E-SAMPLES": "`eval.samples` of a conditional generator cannot be drawn: its node reads a data field the evaluated "
    "split (eval.split) does not have, or a windowed (sequence) input",
    "E-INIT-FILE": "an `init` checkpoint (or `--init PATH`) that cannot be used: missing, unreadable, outside the "
    "spec's folder, or not a checkpoint written by onlytorch train",
    "E-INIT-MODULE": "an `init` entry names a module its checkpoint does not hold (with a did-you-mean), loads one "
    "module twice, or (without `modules`) finds no module of the spec under its own name",
    "E-INIT-SHAPE": "a module loaded by `init` does not fit: the first tensor whose name or shape differs, with both "
    "shapes",
    "W-INIT-SKIP": "an `init` entry without `modules` skips a module of the same name whose tensors do not fit",
    "E-EVAL-EVERY": "`train.early_stopping` or a `reduce_on_plateau` schedule with no evaluations to act on: no "
    "`train.eval_every`, no eval section, or nothing monitored",
    "W-SELECT": "best.npz is chosen on the test (or train) split that the final evaluation also reports; declare a `val` split or `train.monitor.split`",
    "E-SWEEP-SPEC": "a sweep file's base spec is missing, unreadable or invalid (its own problems are shown in it)",
    "E-SWEEP-PATH": "a sweep's `set` or `space` path that the base spec does not have (with a did-you-mean), the "
    "seed, or a part of the spec that two entries both write",
    "E-SWEEP-SPACE": "a sweep with nothing to search (no space and one seed), a seed study with several trials, or a "
    "space entry that is not exactly one of loguniform, uniform, int, choice (or takes an option its kind does not)",
    "E-SWEEP-BOUNDS": "a space entry's range is empty or wrong: low >= high, loguniform low <= 0, int bounds that are "
    "not integers, an empty choice or one listed twice, a step <= 0 or not dividing high - low, log with step",
    "E-SWEEP-METRIC": "a sweep's monitor cannot be optimised: a metric the base spec does not report (with a "
    "did-you-mean), a mode against its direction, or a base spec that evaluates nothing",
    "E-SWEEP-GRID": "the grid sampler over a continuous range (loguniform, or uniform without step), or more trials "
    "than grid points",
    "E-SWEEP-PRUNE": "a pruner with nothing to act on: a trial of one seed is evaluated only after its last step (no "
    "`train.eval_every`, or one not below `train.steps`), so no trial would ever be pruned",
    "W-SWEEP-TEST": "a sweep that chooses its parameters on the test split (no val split, or a monitor on test): its "
    "best value is optimistic; declare a `val` split, or `monitor: {split: val}`",
}


EXCERPT_WIDTH = 160  # characters of the offending line shown around the column (a spec line is shorter)
MAX_MESSAGE = 1000  # characters of a message or hint: one quoting a 50 MB key must not print 50 MB
_UNPRINTABLE = {i: "?" for i in [*range(9), *range(10, 32), *range(127, 160)]}  # one cell each, as the caret counts
# in a message or hint: a name or path from the spec may hold an escape sequence (a file name with
# ESC [2J would clear the terminal); newlines stay
_UNPRINTABLE_TEXT = {i: c for i, c in _UNPRINTABLE.items() if i != 10}


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """text, cut to ``limit`` characters with a note of how much was left out."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def printable(text: str) -> str:
    """text with control characters (but newlines) shown as "?": what a terminal may be sent."""
    return text.translate(_UNPRINTABLE_TEXT)


def excerpt(line: str, column: int, width: int = EXCERPT_WIDTH) -> tuple[str, int, int]:
    """What is shown of a source line: at most ``width`` characters around the 1-based ``column``, with
    "..." where the line goes on, and control characters (a terminal's escape sequences) shown as "?".
    Returns the text, the column's position in it, and how many characters from there are the line's."""
    column = min(max(1, column), len(line) + 1)
    start = 0 if len(line) <= width else min(max(0, column - 1 - width // 2), len(line) - width)
    end = min(len(line), start + width)
    head, tail = "..." if start else "", "..." if end < len(line) else ""
    text = head + line[start:end].translate(_UNPRINTABLE) + tail
    return text, column - start + len(head), end - column + 1


@dataclass
class Diagnostic:
    code: str
    message: str
    path: Path = ()
    line: int | None = None  # 1-based
    column: int | None = None  # 1-based
    hint: str | None = None
    width: int = 1

    @property
    def severity(self) -> str:
        return "warning" if self.code.startswith("W-") else "error"

    def where(self, filename: str) -> str:
        if self.line is None:
            return filename
        return f"{filename}:{self.line}:{self.column or 1}"

    def render(self, filename: str, lines: list[str]) -> str:
        out = [f"{printable(self.where(filename))}: {self.code} {printable(cut(self.message))}"]
        if self.line is not None and 0 < self.line <= len(lines):
            text, col, room = excerpt(lines[self.line - 1].rstrip("\n"), self.column or 1)
            out.append(f"    {text}")
            out.append("    " + " " * (col - 1) + "^" + "~" * max(0, min(self.width, room) - 1))
        if self.hint:
            out.append(f"    hint: {printable(cut(self.hint))}")
        return "\n".join(out)

    def to_json(self, filename: str) -> dict[str, Any]:
        return {
            "file": filename,
            "line": self.line,
            "column": self.column,
            "code": self.code,
            "severity": self.severity,
            "message": cut(self.message),
            "hint": None if self.hint is None else cut(self.hint),
            "path": [str(p) for p in self.path],
        }


@dataclass
class Report:
    """All diagnostics of one spec, in file order."""

    filename: str
    text: str
    items: list[Diagnostic] = field(default_factory=list)

    def add(self, d: Diagnostic) -> None:
        key = (d.code, d.line, d.column, d.message)
        if all((x.code, x.line, x.column, x.message) != key for x in self.items):
            self.items.append(d)

    def extend(self, ds: Iterable[Diagnostic]) -> None:
        for d in ds:
            self.add(d)

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]

    @property
    def warnings(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "warning"]

    def sorted(self) -> list[Diagnostic]:
        return sorted(self.items, key=lambda d: (d.line or 0, d.column or 0, d.code))

    def render(self) -> str:
        lines = self.text.splitlines()
        return "\n".join(d.render(self.filename, lines) for d in self.sorted())

    def to_json(self) -> str:
        return json.dumps(
            {
                "file": self.filename,
                "errors": len(self.errors),
                "warnings": len(self.warnings),
                "diagnostics": [d.to_json(self.filename) for d in self.sorted()],
            },
            indent=2,
        )


class SpecError(Exception):
    """A spec that does not validate; carries the full report."""

    def __init__(self, report: Report) -> None:
        super().__init__(report.render())
        self.report = report
