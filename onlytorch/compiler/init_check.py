"""The ``init:`` entries (and ``--init`` paths) checked against their checkpoints when the spec is
validated: the file is there and is a checkpoint, every module named is in it and in the spec,
and every tensor of a module fits (same names, same shapes, floats). Only the checkpoint's zip
directory and .npy headers are read (onlytorch/initfrom.py), never its arrays.

Relative paths in the spec resolve from its folder and must stay inside it unless
``--allow-outside`` (or the path came with ``--set``): the data files' rule (``data.files``).
``--init`` paths are command-line paths (relative to the current directory, anywhere); their
diagnostics name the option, as they have no place in the file."""

from __future__ import annotations

import pathlib
from typing import Any

from .. import checkpoint as ckpt
from ..initfrom import InitEntry, Tensor, checkpoint_tensors, module_tensors
from ..ops.shapes import fmt
from ..safe_files import NotAnArchive, RefusedFile, expand_user, short_repr
from ..spec.diagnostics import Diagnostic, Path
from ..suggest import did_you_mean
from .context import CompileContext

_FILE_HINT = "init: takes a checkpoint written by onlytorch train, e.g. runs/NAME/checkpoints/best.npz"


class _Where:
    """Where an entry's diagnostics go: its place in the file, or ``--init PATH`` (no place)."""

    def __init__(self, ctx: CompileContext, index: int | None, given: str) -> None:
        self.ctx, self.index, self.given = ctx, index, given

    def error(self, code: str, message: str, path: Path = (), key: bool = False, hint: str | None = None) -> None:
        if self.index is None:
            self.ctx.report.add(Diagnostic(code, f"--init {self.given}: {message}", hint=hint))
            return
        at = ("init", self.index, *path) if path else ("init", self.index, "checkpoint")
        width = len(str(path[-1])) if key and path else 1
        self.ctx.error(code, message, at, key=key, hint=hint, width=width)


def check_init(ctx: CompileContext) -> list[InitEntry]:
    """The entries of the spec's ``init:`` then one per ``--init`` path, each with the tensors it
    sets; what does not fit is reported (E-INIT-FILE, E-INIT-MODULE, E-INIT-SHAPE, E-NAME,
    W-INIT-SKIP)."""
    entries: list[InitEntry] = []
    for i, item in enumerate(ctx.spec.init or []):
        where = _Where(ctx, i, item.checkpoint)
        path = _spec_path(ctx, where, item.checkpoint)
        if path is not None:
            entry = _entry(ctx, where, InitEntry(item.checkpoint, path, "spec", i), item.modules)
            if entry is not None:
                entries.append(entry)
    for given in ctx.cli_init:
        where = _Where(ctx, None, given)  # a command-line path: relative to the current directory
        entry = _entry(ctx, where, InitEntry(given, pathlib.Path(given).absolute(), "--init"), None)
        if entry is not None:
            entries.append(entry)
    return entries


def _spec_path(ctx: CompileContext, where: _Where, given: str) -> pathlib.Path | None:
    from ..data.files import outside_problem  # the data package loads on the first compile, not on import

    try:
        expanded = expand_user(given, "the checkpoint")
    except RefusedFile as e:
        where.error("E-INIT-FILE", f"cannot use {short_repr(given, 300)}: {e.reason}")
        return None
    resolved = pathlib.Path(ctx.base_dir, expanded).absolute()
    problem = outside_problem(pathlib.Path(given), resolved, "checkpoint paths")
    if problem:
        where.error("E-INIT-FILE", problem)
        return None
    return resolved


def _read(where: _Where, path: pathlib.Path) -> dict[str, dict[str, Tensor]] | None:
    try:
        return checkpoint_tensors(path)
    except FileNotFoundError:
        where.error("E-INIT-FILE", f"no such checkpoint: {path}", hint=_FILE_HINT)
    except NotAnArchive:
        where.error("E-INIT-FILE", f"{path} is not a checkpoint: not an .npz (zip) archive", hint=_FILE_HINT)
    except RefusedFile as e:
        where.error("E-INIT-FILE", f"cannot read checkpoint {path}: {e.reason}", hint=_FILE_HINT)
    except ckpt.CheckpointError as e:
        where.error("E-INIT-FILE", str(e))
    except OSError as e:
        where.error("E-INIT-FILE", f"cannot read checkpoint {path}: {e.strerror or e}")
    return None


def _entry(ctx: CompileContext, where: _Where, entry: InitEntry, mapping: dict[str, str] | None) -> InitEntry | None:
    found = _read(where, entry.path)
    if found is None:
        return None
    if mapping is None:
        return _all_matching(ctx, where, entry, found)
    seen: dict[str, str] = {}
    ok = True
    for there, here in mapping.items():
        at: Path = ("modules", there)
        if there not in found:
            where.error(
                "E-INIT-MODULE",
                f"the checkpoint has no module {short_repr(there)} (it holds: {', '.join(sorted(found))})",
                at,
                key=True,
                hint=did_you_mean(there, list(found)),
            )
            ok = False
            continue
        if here in ctx.broken:
            ok = False
            continue
        if here not in ctx.modules:
            where.error(
                "E-NAME",
                f"the spec has no module {short_repr(here)} to load {there} into",
                at,
                hint=did_you_mean(here, list(ctx.modules)),
            )
            ok = False
            continue
        if here in seen:
            where.error(
                "E-INIT-MODULE",
                f"module {here} is loaded twice in this entry (from {seen[here]} and {there})",
                at,
                True,
            )
            ok = False
            continue
        seen[here] = there
        problem = _misfit(ctx, here, there, found[there])
        if problem is not None:
            where.error("E-INIT-SHAPE", problem, at, key=True)
            ok = False
            continue
        _add(ctx, entry, there, here, found[there])
    return entry if ok else None


def _all_matching(
    ctx: CompileContext, where: _Where, entry: InitEntry, found: dict[str, dict[str, Tensor]]
) -> InitEntry | None:
    """Every module of the spec that the checkpoint holds under its name, with the same tensors; a
    module of that name whose tensors differ is skipped with a warning."""
    skipped: list[str] = []
    for name in ctx.modules:
        if name not in found or name in ctx.broken:
            continue
        problem = _misfit(ctx, name, name, found[name])
        if problem is not None:
            where.error("W-INIT-SKIP", f"module {name} is not loaded: {problem}")
            skipped.append(name)
            continue
        _add(ctx, entry, name, name, found[name])
    if not entry.modules and skipped:
        # the names match but nothing fits: "no module ... under its own name" would contradict the list
        where.error(
            "E-INIT-MODULE",
            f"no module of the spec can be loaded from the checkpoint: {', '.join(skipped)} "
            f"{'has its name' if len(skipped) == 1 else 'have their names'} there but not its shapes (W-INIT-SKIP)",
            hint="give the spec's module the checkpoint's shapes, or pass a checkpoint of a run of this spec",
        )
        return None
    if not entry.modules:
        where.error(
            "E-INIT-MODULE",
            f"no module of the spec is in the checkpoint under its own name (the checkpoint holds: "
            f"{', '.join(sorted(found))}; the spec: {', '.join(ctx.modules) or 'none'})",
            hint="name them: modules: {IN_CHECKPOINT: HERE}"
            if entry.origin == "spec"
            else f"--init loads modules by their own names; to rename, write an init: entry in the spec: "
            f"init: [{{checkpoint: {entry.given}, modules: {{IN_CHECKPOINT: HERE}}}}]",
        )
        return None
    return entry


def _misfit(ctx: CompileContext, here: str, there: str, tensors: dict[str, Tensor]) -> str | None:
    """Why module ``there`` of the checkpoint cannot be loaded into module ``here``: the first
    tensor that does not fit, named on both sides with both shapes; None when it fits."""
    mine = module_tensors(ctx.modules, here)
    if not mine:
        return f"module {here} holds no parameters (it is never called)"
    wanted: set[str] = set()
    for kind, node in mine:
        rest = node.name[len(here) + 1 :]
        wanted.add(rest)
        t = tensors.get(rest)
        what = "parameter" if kind == "param" else "state"
        if t is None or not t.key.startswith(kind + "/"):
            return f"{what} {node.name} {fmt(node.shape)} has no counterpart {there}.{rest} in the checkpoint"
        if tuple(t.shape) != tuple(node.shape):
            return f"{what} {node.name} has shape {fmt(node.shape)} here but {t.key} has shape {fmt(t.shape)} in the checkpoint"
        if t.dtype.kind != "f":
            return f"{t.key} holds {t.dtype} values, not floats"
    extra = sorted(set(tensors) - wanted)
    if extra:
        return f"the checkpoint's {tensors[extra[0]].key} {fmt(tensors[extra[0]].shape)} has no counterpart in module {here}"
    return None


def _add(ctx: CompileContext, entry: InitEntry, there: str, here: str, tensors: dict[str, Any]) -> None:
    entry.modules[there] = here
    for _, node in module_tensors(ctx.modules, here):
        ctx.loaded.add(node.name)
        entry.targets.append((tensors[node.name[len(here) + 1 :]].key, node))
