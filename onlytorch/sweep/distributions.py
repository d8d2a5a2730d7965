"""The checks of one ``space`` entry of a sweep file on its own (no base spec needed): exactly one
kind, only the options that kind takes, and bounds that make a range Optuna can sample. What
passes becomes a ``Param``; what does not, one located problem (E-SWEEP-SPACE, E-SWEEP-BOUNDS)."""

from __future__ import annotations

import math
import re
from typing import Any, cast

from ..spec.diagnostics import Path
from ..spec.numbers import exact_int_problem
from ..spec.schema import exactly_one
from ..spec.yaml_loader import Located
from .schema import KINDS, DistributionSpec
from .space import Kind, Param, flow, grid_points

# (code, message, path in the sweep file, whether at the key rather than the value, hint)
Problem = tuple[str, str, Path, bool, "str | None"]

# YAML 1.1 reads 1e-4 (an exponent without a dot) as a string; a plain (unquoted) choice written so
# is meant as the number, as the spec's float fields read it
_YAML11_FLOAT = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)[eE][-+]?\d+$")


def check_entry(key: str, dist: DistributionSpec, located: Located) -> tuple[Param | None, Problem | None]:
    """The Param of the entry ``space.KEY`` (validated by its model), or its first problem."""
    where: Path = ("space", key)
    given = {k: getattr(dist, "int_" if k == "int" else k) is not None for k in KINDS}
    try:
        exactly_one(f"space {key}", given)
    except ValueError as e:
        hint = "e.g. {loguniform: [1.0e-4, 1.0e-2]} or {choice: [1, 3, 5]}"
        return None, ("E-SWEEP-SPACE", f"{e}: a distribution is one of them", where, False, hint)
    kind = cast(Kind, next(k for k, on in given.items() if on))
    if kind == "choice":
        return _choice(key, dist, located)
    bounds: list[float] = (dist.int_ if kind == "int" else getattr(dist, kind)) or []
    if len(bounds) != 2:
        message = f"space {key}: {kind} takes [low, high], got {len(bounds)} numbers"
        return None, ("E-SWEEP-BOUNDS", message, (*where, kind), False, None)
    low, high = bounds
    problem = _bounds_problem(key, kind, dist, low, high, located.data["space"][key])
    if problem is not None:
        code, message, sub, at_key = problem
        return None, (code, message, (*where, *sub), at_key, None)
    if kind == "int":
        step = int(dist.step) if dist.step is not None else None
        return Param(key, "int", int(low), int(high), step, bool(dist.log)), None
    return Param(key, kind, float(low), float(high), dist.step, kind == "loguniform"), None


def _choice(key: str, dist: DistributionSpec, located: Located) -> tuple[Param | None, Problem | None]:
    where: Path = ("space", key)
    bad = [k for k in ("step", "log") if getattr(dist, k) is not None]
    if bad:
        return None, (
            "E-SWEEP-SPACE",
            f"space {key}: {bad[0]} does not apply to a choice",
            (*where, bad[0]),
            True,
            None,
        )
    items = plain_numbers(list(dist.choice or []), located, (*where, "choice"))
    if not items:
        message = f"space {key}: an empty choice has nothing to choose"
        return None, ("E-SWEEP-BOUNDS", message, (*where, "choice"), False, "list at least one value")
    texts = [flow(c) for c in items]
    twice = next((i for i, t in enumerate(texts) if t in texts[:i]), None)
    if twice is not None:
        message = f"space {key}: the choice {texts[twice]} appears twice"
        return None, ("E-SWEEP-BOUNDS", message, (*where, "choice", twice), False, None)
    return Param(key, "choice", choices=items), None


def plain_numbers(items: list[Any], located: Located, base: Path) -> list[Any]:
    """Choice items, with plain scalars that YAML 1.1 left as strings (1e-4) read as the numbers they spell."""
    out = []
    for i, item in enumerate(items):
        if isinstance(item, str) and located.styles.get((*base, i)) in (None, "") and _YAML11_FLOAT.match(item):
            out.append(float(item))
        else:
            out.append(item)
    return out


def _bounds_problem(
    key: str, kind: str, dist: DistributionSpec, low: float, high: float, raw: dict[str, Any]
) -> tuple[str, str, Path, bool] | None:
    """(code, message, path under the entry, whether at the key) of the first problem of a range, or
    None. ``raw``: the entry as written (an int bound written 8.0 is a float there)."""
    if kind != "int" and dist.log is not None:
        what = "loguniform is always log" if kind == "loguniform" else "use loguniform for a log-uniform float"
        return "E-SWEEP-SPACE", f"space {key}: log applies to int only ({what})", ("log",), True
    if not (math.isfinite(low) and math.isfinite(high)):
        return "E-SWEEP-BOUNDS", f"space {key}: the bounds must be finite numbers", (kind,), False
    if kind == "int":
        for i in (0, 1):
            p = exact_int_problem(raw[kind][i])
            if p:
                return "E-SWEEP-BOUNDS", f"space {key}: an int bound {p}", (kind, i), False
    if low >= high:
        written = f"[{flow(raw[kind][0])}, {flow(raw[kind][1])}]"
        return "E-SWEEP-BOUNDS", f"space {key}: low must be below high, got {written}", (kind,), False
    if kind == "loguniform" and low <= 0:
        message = f"space {key}: loguniform needs 0 < low, got {flow(raw[kind][0])}"
        return "E-SWEEP-BOUNDS", message, (kind, 0), False
    if kind == "int" and dist.log and low < 1:
        return "E-SWEEP-BOUNDS", f"space {key}: int with log needs 1 <= low, got {int(low)}", (kind, 0), False
    if dist.step is None:
        return None
    return _step_problem(key, kind, dist, low, high, raw)


def _step_problem(
    key: str, kind: str, dist: DistributionSpec, low: float, high: float, raw: dict[str, Any]
) -> tuple[str, str, Path, bool] | None:
    step = cast(float, dist.step)
    if kind == "loguniform" or dist.log:
        return "E-SWEEP-BOUNDS", f"space {key}: step does not combine with log", ("step",), True
    if step <= 0 or not math.isfinite(step):
        message = f"space {key}: step must be a positive number, got {flow(raw['step'])}"
        return "E-SWEEP-BOUNDS", message, ("step",), False
    if kind == "int":
        p = exact_int_problem(raw["step"])
        if p:
            return "E-SWEEP-BOUNDS", f"space {key}: an int step {p}", ("step",), False
        if (int(high) - int(low)) % int(step):
            span = int(high) - int(low)
            message = f"space {key}: high - low ({span}) is not a multiple of step {int(step)}"
            return "E-SWEEP-BOUNDS", message, ("step",), False
        return None
    n = (high - low) / step
    if abs(n - round(n)) > 1e-9 * max(1.0, abs(n)) or grid_points(low, high, step) < 2:
        message = f"space {key}: high - low ({flow(high - low)}) is not a multiple of step {flow(step)}"
        return "E-SWEEP-BOUNDS", message, ("step",), False
    return None
