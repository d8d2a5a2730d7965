"""Pydantic validation errors -> located diagnostics: each error of ``Spec.model_validate`` becomes
a ``Diagnostic`` at the spec position it is about (unknown keys with a did-you-mean over the keys
the model at that position allows, missing keys, unknown ``type``/``source`` tags with their
options, malformed layer items). ``model_for`` and ``allowed_keys`` also serve ``--set`` overrides."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from ..safe_files import short_repr
from . import names
from . import schema as S
from .diagnostics import Diagnostic, Path, did_you_mean
from .yaml_loader import Located


def _data_path(data: Any, loc: tuple[Any, ...]) -> tuple[Path, list[Any]]:
    """Split a pydantic loc into the path through the data and the union tags it passed."""
    path: list[Any] = []
    skipped: list[Any] = []
    cur = data
    for part in loc:
        if (isinstance(cur, dict) and part in cur) or (
            isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur)
        ):
            path.append(part)
            cur = cur[part]
        else:
            skipped.append(part)
    return tuple(path), skipped


def allowed_keys(model: Any) -> list[str]:
    if isinstance(model, type) and issubclass(model, BaseModel):
        return [f.alias or k for k, f in model.model_fields.items()]
    return []


def model_for(root: Any, located_data: Any, path: Path) -> Any:
    """The pydantic model that validates the mapping at path (for did-you-mean on keys)."""
    import typing

    cur: Any = root
    data = located_data
    for part in path:
        cur = unwrap(cur, data)
        if isinstance(cur, type) and issubclass(cur, BaseModel):
            fields = {(f.alias or k): f for k, f in cur.model_fields.items()}
            if part not in fields:
                return None
            f = fields[part]
            # pydantic moves a field's top-level Annotated metadata (a union's Discriminator) into
            # f.metadata: put it back, or unwrap cannot pick the union member the data selects.
            cur = typing.Annotated[(f.annotation, *f.metadata)] if f.metadata else f.annotation
        else:
            origin = typing.get_origin(cur)
            args = typing.get_args(cur)
            if origin is dict and args:
                cur = args[1]
            elif origin is list and args:
                cur = args[0]
            else:
                return None
        data = data[part] if isinstance(data, (dict, list)) else None
    return unwrap(cur, data)


def unwrap(tp: Any, data: Any) -> Any:
    import types
    import typing

    for _ in range(6):
        origin = typing.get_origin(tp)
        if origin is typing.Annotated:
            args = typing.get_args(tp)
            inner, meta = args[0], args[1:]
            disc = next((m for m in meta if type(m).__name__ == "Discriminator"), None)
            if disc is not None and callable(getattr(disc, "discriminator", None)):
                tag = disc.discriminator(data)
                for member in typing.get_args(inner):
                    if typing.get_origin(member) is typing.Annotated:
                        m_args = typing.get_args(member)
                        if any(getattr(x, "tag", None) == tag for x in m_args[1:]):
                            return m_args[0]
                return None
            tp = inner
        elif origin in (typing.Union, types.UnionType):
            members = [m for m in typing.get_args(tp) if m is not type(None)]
            models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
            tp = models[0] if models else members[0]
        else:
            return tp
    return tp


def validation_diagnostics(err: ValidationError, located: Located, base: Path, model: Any) -> list[Diagnostic]:
    out = []
    root_data = located.data
    for sub in base:
        root_data = root_data[sub]
    for e in err.errors():
        rel, _tags = _data_path(root_data, tuple(e["loc"]))
        path = base + rel
        kind = e["type"]
        if kind == "extra_forbidden":
            key = e["loc"][-1]
            parent = path if key not in path[-1:] else path[:-1]
            line, col = located.at(parent + (key,), key=True)
            allowed = allowed_keys(model_for(model, root_data, rel[:-1] if rel and rel[-1] == key else rel))
            hint = did_you_mean(str(key), allowed)
            known = f" (known here: {', '.join(allowed)})" if allowed else ""
            out.append(
                Diagnostic(
                    "E-KEY", f"unknown key {key!r}{known}", parent + (key,), line, col, hint, width=len(str(key))
                )
            )
        elif kind == "missing":
            key = e["loc"][-1]
            line, col = located.at(path)
            where = ".".join(str(p) for p in path) or "the spec"
            out.append(Diagnostic("E-MISSING", f"{where} needs the key {key!r}", path, line, col))
        elif (
            kind in ("union_tag_invalid", "union_tag_not_found", "literal_error")
            and rel
            and rel[-1] in ("source", "type")
        ) or kind in ("union_tag_invalid", "union_tag_not_found"):
            value_path, options = _tag_problem(e, path, located)
            options = options or _tag_options(path)[1]
            line, col = located.at(value_path)
            got = value_at(located.data, value_path)
            hint = did_you_mean(got, options) if isinstance(got, str) else None
            message = f"unknown {value_path[-1] if value_path else 'value'} {short_repr(got)}; use one of: {', '.join(options)}"
            if value_path == path and path and path[-1] not in ("source", "type"):
                # no tag at all (pydantic names no options then): say which key is missing, and its values
                key = _tag_options(path)[0]
                where = ".".join(str(p) for p in path)
                split = " (or {from_split: train, fraction: F})" if path[0] == "data" and path[-1] != "train" else ""
                if not isinstance(got, dict):
                    message = f"{where} must be a mapping with a {key!r} key, got {short_repr(got)}"
                else:
                    message = f"{where} needs the key {key!r}{split}"
                message += f"; {key} is one of: {', '.join(options)}" if options else ""
            out.append(Diagnostic("E-TYPE", message, value_path, line, col, hint))
        elif kind == "bad_name":
            out.extend(_bad_names(path, (e.get("ctx") or {}).get("keys", []), located))
        elif _is_layer_item(path) and not isinstance(value_at(located.data, path), (str, dict)):
            # one diagnostic, not one per member of the layer union (str | dict)
            line, col = located.at(path)
            got = value_at(located.data, path)
            out.append(
                Diagnostic(
                    "E-MODULE",
                    f"a layer is a name (relu) or a one-key mapping ({{linear: 64}}), got {got!r}",
                    path,
                    line,
                    col,
                )
            )
        else:
            line, col = located.at(path)
            msg = e["msg"].removeprefix("Value error, ")
            where = ".".join(str(p) for p in path)
            hint = None
            if kind == "literal_error":
                import re

                options = re.findall(r"'([^']*)'", str((e.get("ctx") or {}).get("expected", "")))
                got = value_at(located.data, path)
                hint = did_you_mean(got, options) if isinstance(got, str) else None
            out.append(Diagnostic("E-TYPE", f"{where}: {msg}" if where else msg, path, line, col, hint))
    return out


def _bad_names(path: Path, keys: list[Any], located: Located) -> list[Diagnostic]:
    """One diagnostic per key of the mapping at path that is not a name, at the key itself."""
    out = []
    rule = "letters, digits and _, not starting with a digit"
    for key in keys:
        line, col = located.at(path + (key,), key=True)
        hint = None
        message = f"{path[-1]}: {key!r} is not a valid name ({rule})"
        if names.unpacking(key) is not None:
            if path[-1:] == ("nodes",):  # several names that unpack outputs: say which part is wrong
                bad = names.bad_parts(key)
                parts = ", ".join(repr(p) for p in bad) + (" is not a name" if len(bad) == 1 else " are not names")
                message = f"{path[-1]}: {key!r} unpacks into names separated by commas, and {parts} ({rule})"
                hint = "one name between each two commas, e.g. mu, logvar: enc(x) (_ skips an output)"
            else:
                hint = (
                    "several names (mu, logvar: enc(x)) unpack a value with several outputs in nodes only; "
                    f"{path[-1]} takes one name"
                )
        out.append(Diagnostic("E-TYPE", message, path + (key,), line, col, hint, width=len(str(key))))
    return out


def _is_layer_item(path: Path) -> bool:
    """Whether path is an item of a module's layer list (short form modules.M.i, or modules.M.layers.i)."""
    return (
        len(path) >= 3
        and path[0] == "modules"
        and isinstance(path[-1], int)
        and (len(path) == 3 or (len(path) == 4 and path[2] == "layers"))
    )


def _tag_problem(e: Any, path: Path, located: Located) -> tuple[Path, list[str]]:
    ctx = e.get("ctx") or {}
    expected = ctx.get("expected_tags") or ctx.get("expected") or ""
    options = [t.strip().strip("'") for t in str(expected).split(",") if t.strip()]
    options = [t for t in options if t != S.WEIGHT_NUMBER_TAG]  # a weight's number: no value of 'type'
    target = value_at(located.data, path)
    if isinstance(target, dict):
        for key in ("type", "source"):
            if key in target:
                return path + (key,), options
    return path, options


def _tag_options(path: Path) -> tuple[str, list[str]]:
    """The key that chooses the kind of the entry at path (source or type), and its values."""
    if path and path[0] == "data":
        return "source", list(S.SOURCE_MODELS)
    if "schedule" in path[1:] and path[0] == "optimizers":
        return "type", list(S.SCHEDULE_MODELS)
    if path and path[0] == "optimizers":
        return "type", list(S.OPTIMIZER_MODELS)
    if path and path[-1] == "weight":
        return "type", list(S.WEIGHT_SCHEDULE_MODELS)
    return "type", []


def value_at(data: Any, path: Path) -> Any:
    for p in path:
        try:
            data = data[p]
        except (KeyError, IndexError, TypeError):
            return None
    return data
