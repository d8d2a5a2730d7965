"""``--set key=value`` overrides: dotted paths into the spec (``train.steps=100``,
``optimizers.d_opt.lr=1e-3``, ``train.schedule.critic.repeat=3``: a list of phases is indexed
by position or by phase name). Values are parsed as YAML scalars or flow collections. A path the
spec language does not have is an error with a did-you-mean, never a new key."""

from __future__ import annotations

from typing import Any

from ..safe_files import short_repr
from .diagnostics import Diagnostic, Path, cut, did_you_mean
from .yaml_loader import load


def parse(item: str) -> tuple[str, Any]:
    """(dotted key, value) of one ``--set`` item. The value is read by the spec's own YAML loader, with
    the same limits (nesting depth, values after expanding aliases, standard tags only) as a spec file."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"--set takes KEY=VALUE, got {short_repr(item)}")
    if "\0" in item:
        raise ValueError(f"--set {short_repr(key.strip())}: the item contains a NUL byte")
    if not raw.strip():
        return key.strip(), ""
    located = load(raw)
    if located.diagnostics:
        d = located.diagnostics[0]
        at = f" (at character {d.column} of the value)" if d.line == 1 and d.column else ""
        raise ValueError(f"--set {short_repr(key.strip())}: the value is refused: {cut(d.message, 300)}{at}")
    return key.strip(), located.data


def apply(
    data: dict[str, Any], overrides: list[tuple[str, Any]], written: list[tuple[Path, str]] | None = None
) -> list[Diagnostic]:
    """Apply the overrides to data in place; returns the diagnostics for those that do not fit.
    ``written`` receives (path in the data, dotted key) of every override applied."""
    from .pydantic_errors import allowed_keys, model_for
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
                    if written is not None:
                        written.append(((*path, idx), dotted))
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
            model = model_for(Spec, data, tuple(path))
            allowed = allowed_keys(model)
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
                if written is not None:
                    written.append(((*path, part), dotted))
            else:
                path.append(part)
                cur = cur.setdefault(part, {})
    return problems


def strings_in(values: list[Any]) -> list[str]:
    """Every string inside the values (of --set items): the file paths the user typed, which may lie anywhere."""
    out: list[str] = []
    stack = list(values)
    while stack:
        v = stack.pop()
        if isinstance(v, str):
            out.append(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return out


def note_origin(diagnostics: list[Diagnostic], written: list[tuple[Path, str]]) -> None:
    """Diagnostics about a value that ``--set`` wrote say so: their file position shows the value it replaced."""
    for d in diagnostics:
        origin = next((dotted for path, dotted in written if tuple(d.path[: len(path)]) == path), None)
        if origin is not None:
            d.message += f" (the value comes from --set {short_repr(origin)})"


def _list_index(items: list[Any], part: str) -> int | None:
    if part.lstrip("-").isdigit():
        i = int(part)
        return i if -len(items) <= i < len(items) else None
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("name") == part:
            return i
    return None
