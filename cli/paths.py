"""Paths given on the command line (SPEC, --out, --checkpoint, RUN_DIR, ...): checked before use,
so that a bad one is a usage error (exit 2) with a reason, never a traceback.

Refused: a NUL byte; a leading ``~`` that names no user (the shell leaves ``~nosuchuser/x`` as
it is; ``~`` and ``~user`` are expanded here as the shell would have, and a folder really named
``~x`` is written ``./~x``); a name longer than the file system allows; a path through a file.
"""

from __future__ import annotations

import errno
import os
from typing import Any

import click

# explain these errors of a path the user gave; they are all "this path cannot be used", exit 2
PATH_ERRNOS = {
    errno.ENAMETOOLONG: "a name in it is too long for the file system",
    errno.ENOTDIR: "a part of it is a file, not a folder",
    errno.ELOOP: "a symbolic link in it loops, or is one onlytorch does not follow",
    errno.EEXIST: "it exists and is not a folder",
    errno.EINVAL: "the file system does not accept this name",
    errno.EACCES: "you may not write there",
    errno.EPERM: "you may not write there",
    errno.EROFS: "it is on a read-only file system",
}


def path_problem(text: str) -> str | None:
    """Why ``text`` cannot be a path, or None. Only looks at the string."""
    if "\0" in text:
        return f"{text!r} contains a NUL byte, which no path can hold"
    if text.startswith("~") and os.path.expanduser(text).startswith("~"):
        user = text[1:].split(os.sep, 1)[0]
        return f"{text!r}: there is no user {user!r} (a leading ~ names a home folder; write ./{text} for a folder of that name)"
    limit = _name_max(os.path.dirname(os.path.expanduser(text)) or ".")
    for part in text.split(os.sep):
        if len(part.encode("utf-8", "surrogateescape")) > limit:
            return f"the name {part[:24]}...{part[-8:]} in it has {len(part)} characters; at most {limit} fit here"
    return None


def describe_os_error(path: str | os.PathLike[str], e: OSError) -> tuple[str, bool]:
    """(message, is_the_path_at_fault) for an error while creating or opening ``path``."""
    reason = PATH_ERRNOS.get(e.errno or 0)
    if reason is not None:
        return f"{shorten(path)}: {reason} ({e.strerror})", True
    return f"{shorten(path)}: {e.strerror or e}", False


def shorten(path: str | os.PathLike[str]) -> str:
    """``path`` for a message: each overlong name cut in the middle (a 5,000-character name would
    otherwise fill the screen)."""
    parts = os.fspath(path).split(os.sep)
    return os.sep.join(p if len(p) <= 40 else f"{p[:24]}...{p[-8:]}" for p in parts)


def _name_max(folder: str) -> int:
    while folder and not os.path.isdir(folder):
        folder = os.path.dirname(folder)
    try:
        return os.pathconf(folder or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


class CheckedPath(click.Path):
    """click.Path that refuses what :func:`path_problem` refuses and turns the OS errors of its
    own checks (a name too long, a path through a file) into usage errors."""

    name = "path"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fsdecode(value) if isinstance(value, (bytes, os.PathLike)) else str(value)
        problem = path_problem(text)
        if problem is not None:
            self.fail(problem, param, ctx)
        text = os.path.expanduser(text)
        try:
            return super().convert(text, param, ctx)
        except (OSError, ValueError) as e:
            message = describe_os_error(text, e)[0] if isinstance(e, OSError) else f"{text}: {e}"
            self.fail(message, param, ctx)
