"""``--set key=value`` overrides: dotted paths into the spec (``train.steps=100``,
``optimizers.d_opt.lr=1e-3``, ``train.schedule.critic.repeat=3``: a list of phases is indexed
by position or by phase name). Values are parsed as YAML scalars or flow collections. A path the
spec language does not have is an error with a did-you-mean, never a new key."""

from __future__ import annotations

from typing import Any

import yaml

from .diagnostics import Diagnostic, did_you_mean


def parse(item: str) -> tuple[str, Any]:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, got {item!r}")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ValueError(f"--set {item}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
    return key.strip(), value


def apply(data: dict[str, Any], overrides: list[tuple[str, Any]]) -> list[Diagnostic]:
    """Apply the overrides to data in place; returns the diagnostics for those that do not fit."""
    from ..compile import _allowed_keys, _model_for
    from .schema import Spec

    problems: list[Diagnostic] = []
    for dotted, value in overrides:
        parts = dotted.split(".")
        cur: Any = data
        path: list[Any] = []
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(cur, list):
                idx = _list_index(cur, part)
                if idx is None:
                    names = [str(x.get("name")) for x in cur if isinstance(x, dict) and "name" in x]
                    problems.append(
                        Diagnostic(
                            "E-KEY",
                            f"--set {dotted}: no item {part!r} here (use an index 0..{len(cur) - 1}"
                            + (f" or a name: {', '.join(names)})" if names else ")"),
                            tuple(path),
                            hint=did_you_mean(part, names),
                        )
                    )
                    break
                if last:
                    cur[idx] = value
                else:
                    path.append(idx)
                    cur = cur[idx]
                continue
            if not isinstance(cur, dict):
                problems.append(
                    Diagnostic(
                        "E-KEY",
                        f"--set {dotted}: {'.'.join(map(str, path)) or 'the spec'} is not a mapping",
                        tuple(path),
                    )
                )
                break
            model = _model_for(Spec, data, tuple(path))
            allowed = _allowed_keys(model)
            is_table = (
                model is None and path and path[-1] in ("inputs", "modules", "nodes", "losses", "metrics", "optimizers")
            )
            if part not in cur and allowed and part not in allowed:
                problems.append(
                    Diagnostic(
                        "E-KEY",
                        f"--set {dotted}: unknown key {part!r}"
                        + (f" (known here: {', '.join(allowed)})" if allowed else ""),
                        tuple(path),
                        hint=did_you_mean(part, allowed),
                    )
                )
                break
            if part not in cur and not allowed and not last and not is_table:
                problems.append(
                    Diagnostic(
                        "E-KEY",
                        f"--set {dotted}: unknown key {part!r}",
                        tuple(path),
                        hint=did_you_mean(part, list(cur)),
                    )
                )
                break
            if last:
                cur[part] = value
            else:
                path.append(part)
                cur = cur.setdefault(part, {})
    return problems


def _list_index(items: list[Any], part: str) -> int | None:
    if part.lstrip("-").isdigit():
        i = int(part)
        return i if -len(items) <= i < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None
