"""The data section and the inputs it feeds: each split's source and the fields it yields, a
source too large for the memory limit, an input's ``from`` (SPLIT.FIELD or noise) against those
fields, and the rules of a live (gym) training source, which runs nodes of the graph: the general
ones here, the source's own in its declaration (onlytorch.data.gym)."""

from __future__ import annotations

from typing import Any

from .. import footprint
from ..spec import schema as S
from ..spec.diagnostics import Path, did_you_mean
from .context import CompileContext


def check_data(ctx: CompileContext) -> dict[str, dict[str, Any]]:
    """The fields each split yields (name -> Field), from the data registry."""
    from ..data.sources import DataError, get_source

    data = ctx.spec.data
    if data is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for split in ("train", "val", "test"):
        src = getattr(data, split)
        if src is None:
            continue
        if isinstance(src, S.SplitSpec):
            if "train" in out:
                out[split] = out["train"]
            continue
        try:
            source = get_source(src.source)
            params = source.parse(src.model_dump(exclude={"source"}), ctx.base_dir)
            out[split] = source.fields(params)
            check_source_size(ctx, split, src, out[split])
        except DataError as e:
            where = (
                ("data", split, e.param)
                if e.param and e.param in (ctx.loc.data["data"][split] or {})
                else ("data", split)
            )
            ctx.error("E-DATA", str(e), where)
    return out


def check_source_size(ctx: CompileContext, split: str, src: Any, fields: dict[str, Any]) -> None:
    """A data source that alone would pass the memory limit (n, a replay capacity, rollout steps)."""
    for item in footprint.source_items(split, src, fields, ctx.g.dtype.itemsize):
        if item.nbytes > ctx.limit.nbytes:
            ctx.error(
                "E-MEMORY",
                f"{item.what} needs about {footprint.human_size(item.nbytes)}, "
                f"more than the limit of {ctx.limit.describe()}",
                item.path,
                hint=footprint.HINT,
            )
            return


def check_input_source(ctx: CompileContext, name: str, spec: S.InputSpec, path: Path) -> None:
    errors = len(ctx.report.errors)
    _check_input_source(ctx, name, spec, path)
    if len(ctx.report.errors) > errors:
        ctx.unfed.add(name)  # its data problem is reported: later checks stay quiet about it


def _check_input_source(ctx: CompileContext, name: str, spec: S.InputSpec, path: Path) -> None:
    src = spec.from_ or ""
    where = path + ("from",)
    if src in ("noise.normal", "noise.uniform"):
        if spec.dtype != "float":
            ctx.error("E-TYPE", f"input {name}: noise is float, not {spec.dtype}", path + ("dtype",))
        return
    split, _, fname = src.partition(".")
    if src.startswith("noise."):
        ctx.error(
            "E-DATA",
            f"unknown noise {src!r}; use noise.normal or noise.uniform",
            where,
            hint=did_you_mean(src, ["noise.normal", "noise.uniform"]),
        )
        return
    if not fname or split not in ("train", "val", "test"):
        ctx.error(
            "E-DATA", f"'from' takes SPLIT.FIELD (e.g. train.x), noise.normal or noise.uniform; got {src!r}", where
        )
        return
    if ctx.spec.data is None:
        if "<data>" not in ctx.broken:
            ctx.error("E-DATA", f"input {name} reads {src!r}, but the spec has no data section", where)
        return
    if split not in ctx.data_fields:
        if getattr(ctx.spec.data, split, None) is None and f"<data.{split}>" not in ctx.broken:
            ctx.error("E-DATA", f"input {name} reads the {split} split, which data does not define", where)
        return
    fields = ctx.data_fields[split]
    if fname not in fields:
        ctx.error(
            "E-DATA",
            f"the {split} data has no field {fname!r} (it has: {', '.join(fields)})",
            where,
            hint=did_you_mean(fname, fields),
        )
        return
    f = fields[fname]
    want_shape = list(f.shape)
    if spec.window is not None:
        if len(f.shape) < 1 or f.shape[0] % spec.window:
            ctx.error(
                "E-SHAPE",
                f"input {name}: window {spec.window} must divide the length of {src}'s axis 1 (per-sample shape {list(f.shape)})",
                path + ("window",),
            )
            return
        want_shape = [spec.window, *f.shape[1:]]
    if list(spec.shape) != want_shape:
        where = path + ("shape",) if "shape" in (ctx.loc.data.get("inputs", {}).get(name) or {}) else path
        per = f"windows of {src} have" if spec.window else f"{src} has"
        ctx.error(
            "E-SHAPE",
            f"input {name} has shape {list(spec.shape)}, but {per} per-sample shape {want_shape}",
            where,
            hint=f"use shape: {want_shape}",
        )
    want = "int64" if f.dtype == "int64" else "float"
    if want != spec.dtype:
        ctx.error(
            "E-TYPE",
            f"input {name} is {spec.dtype}, but {src} holds {want} values",
            path,
            hint=f"use dtype: {want}",
        )


def live_source(ctx: CompileContext) -> Any:
    """The train entry when its source is live (a gym source, filled while training), else None."""
    from ..data.sources import live_train_source

    return live_train_source(ctx.spec)


def check_live_source(ctx: CompileContext) -> None:
    """A live source (a gym source) is only a train source, and the only one evaluated by episodes;
    it runs nodes of the graph, which the source itself checks (LiveSource.check_compiled)."""
    from ..data.sources import SOURCES, LiveSource, get_source, live_source_names

    data = ctx.spec.data
    if data is None:
        return
    for split in ("val", "test"):
        src = getattr(data, split)
        if src is not None and not isinstance(src, S.SplitSpec) and SOURCES[src.source].live:
            ctx.error(
                "E-DATA",
                f"{src.source} can only be the train source: evaluation runs whole episodes instead (eval.episodes)",
                ("data", split, "source"),
            )
    src = live_source(ctx)
    if src is None:
        for key in ("episodes", "policy"):
            ev = ctx.spec.eval
            # a value equal to the default is no request: a run directory's spec.yaml writes the
            # defaults out (policy: greedy), and it must validate again
            if ev is not None and key in ev.model_fields_set and getattr(ev, key) != type(ev).model_fields[key].default:
                live = " or ".join(live_source_names())
                ctx.error("E-ARG", f"eval.{key} needs a gym training source ({live})", ("eval", key))
        return
    if "<data.train>" in ctx.broken or "train" not in ctx.data_fields:
        return
    source = get_source(src.source)
    if isinstance(source, LiveSource):
        source.check_compiled(src, ctx)
