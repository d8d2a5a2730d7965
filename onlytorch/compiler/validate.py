"""The schema pass: the spec data against the pydantic models, every problem reported at once, and
what validates on its own kept (entry by entry, key by key), so that one broken entry does not hide
the problems the later passes find in the others. What is dropped is marked broken."""

from __future__ import annotations

import typing
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from ..spec import names as N
from ..spec import schema as S
from ..spec.pydantic_errors import unwrap, validation_diagnostics
from .context import CompileContext


def validate(ctx: CompileContext) -> S.Spec | None:
    data = ctx.loc.data
    try:
        return S.Spec.model_validate(data)
    except ValidationError as err:
        ctx.report.extend(d for d in validation_diagnostics(err, ctx.loc, (), S.Spec) if not ctx.quiet(d.path))
    # Keep every entry that validates on its own, so the semantic checks still run on them.
    fields = S.Spec.model_fields
    kept: dict[str, Any] = {}
    for key, value in data.items():
        f = fields.get(key)
        if f is None:
            continue
        ann = f.annotation
        if key in ("inputs", "modules", "nodes", "losses", "metrics", "optimizers") and isinstance(value, dict):
            item_type = typing.get_args(unwrap(ann, value))[1] if typing.get_origin(unwrap(ann, value)) is dict else Any
            adapter = TypeAdapter(item_type)
            good = {}
            for name, item in value.items():
                unpacks = key == "nodes" and N.unpacking(name) is not None  # mu, logvar: enc(x)
                try:
                    good[name] = adapter.validate_python(item)
                except ValidationError:
                    ctx.broken.add(str(name))
                else:
                    if not N.is_name(name) and not (unpacks and not N.bad_parts(name)):
                        ctx.broken.add(str(name))
                    else:
                        good[name] = good[name]
                if unpacks and str(name) in ctx.broken:  # the names it would define: their uses stay quiet
                    ctx.broken.update(N.defined(str(name)))
            kept[key] = {k: v for k, v in good.items() if k not in ctx.broken}
        else:
            try:
                kept[key] = TypeAdapter(ann if ann is not None else Any).validate_python(value)
            except ValidationError:
                salvaged = _salvage(ctx, key, value)
                if salvaged is None:
                    ctx.broken.add(f"<{key}>")
                    continue
                kept[key] = salvaged
    kept.setdefault("version", 1)
    kept.setdefault("name", "spec")
    kept.setdefault("inputs", {})
    kept.setdefault("losses", {})
    try:
        return S.Spec.model_validate(kept)
    except ValidationError:
        return None


def _salvage(ctx: CompileContext, key: str, value: Any) -> BaseModel | None:
    """Section data or train without its broken optional keys and broken phases, so that one
    bad value (batch_size: 0, log_every: 0) does not hide the problems the later checks find.
    Each dropped key is marked broken as ``<section.key>``; None when nothing can be kept."""
    sections: dict[str, type[BaseModel]] = {"data": S.DataSpec, "train": S.TrainSpec}
    model = sections.get(key)
    if model is None or not isinstance(value, dict):
        return None
    by_alias = {(f.alias or k): f for k, f in model.model_fields.items()}
    value = dict(value)
    origin = {k: list(range(len(v))) for k, v in value.items() if isinstance(v, list)}  # item -> its index in the file
    for _ in range(4):
        try:
            return model.model_validate(value)
        except ValidationError as err:
            drop_keys: set[str] = set()
            drop_items: dict[str, set[int]] = {}
            for e in err.errors():
                loc = e["loc"]
                if not loc or not isinstance(loc[0], str) or loc[0] not in value or loc[0] not in by_alias:
                    return None  # a rule about the whole section, or a missing required key
                k = loc[0]
                if isinstance(value[k], list) and len(loc) > 1 and isinstance(loc[1], int):
                    drop_items.setdefault(k, set()).add(loc[1])
                elif not by_alias[k].is_required():
                    drop_keys.add(k)
                else:
                    return None
            for k in drop_keys:
                del value[k]
                ctx.broken.add(f"<{key}.{k}>")
            for k, items in drop_items.items():
                value[k] = [v for i, v in enumerate(value[k]) if i not in items]
                origin[k] = [o for i, o in enumerate(origin[k]) if i not in items]
            if key == "train" and "schedule" in origin:
                ctx.phase_index = origin["schedule"]
    return None
