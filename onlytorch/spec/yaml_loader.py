"""Safe YAML loading that remembers where every value came from.

Only the standard YAML tags are accepted (no ``!!python/...``: that is reported as E-YAML-TAG,
never constructed). The result is plain Python data plus a map from each path (tuple of keys and
list indices) to the line/column of its value and, for mapping entries, of its key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from ..safe_files import short_repr
from .diagnostics import Diagnostic, Path

_SAFE_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary")
}
MAX_DEPTH = 64  # nesting levels: a spec needs fewer than 10
MAX_VALUES = 20_000  # values after expanding aliases: a spec has a few hundred (this stops "billion laughs")


class _Loader(yaml.SafeLoader):
    """The safe loader, refusing flow collections ([ and {) nested deeper than MAX_DEPTH: PyYAML's
    scanner does work per open level for every token, so thousands of levels take minutes."""

    def fetch_flow_collection_start(self, TokenClass: Any) -> None:
        if self.flow_level >= MAX_DEPTH:
            mark = self.get_mark()
            raise yaml.scanner.ScannerError(None, None, f"the document nests more than {MAX_DEPTH} levels deep", mark)
        super().fetch_flow_collection_start(TokenClass)


class _TooBig(Exception):
    """The document nests too deeply or expands to too many values; the diagnostic is already added."""


@dataclass
class Located:
    """Spec data with source positions (1-based line and column)."""

    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    styles: dict[Path, str | None] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # the source, to map offsets inside quoted scalars

    def at(self, path: Path, key: bool = False) -> tuple[int | None, int | None]:
        """The position of path's value (or key), else of its nearest located ancestor."""
        table = self.keys if key else self.values
        p = tuple(path)
        if p in table:
            return table[p]
        while p:
            p = p[:-1]
            if p in self.values:
                return self.values[p]
        return None, None

    def expression_column(self, path: Path, offset: int) -> tuple[int | None, int | None]:
        """Where character ``offset`` of the string at path is, for single-line scalars."""
        line, col = self.at(path)
        if line is None or col is None:
            return line, col
        style = self.styles.get(tuple(path))
        raw = self.lines[line - 1] if 0 < line <= len(self.lines) else ""
        if style in (None, ""):
            return line, min(
                col + offset, max(col, len(raw) + 1)
            )  # a plain scalar folded over lines: stay on the first
        if style in ("'", '"'):
            # walk the quoted text: '' (single quotes) and \x.. escapes (double quotes) are one character
            i, n = col, 0  # i: 0-based index of the character after the opening quote
            while n < offset and i < len(raw):
                if style == "'" and raw.startswith("''", i):
                    i += 2
                elif raw[i] == style:  # the closing quote: the text goes on on the next line
                    break
                elif style == '"' and raw[i] == "\\":
                    i += {"x": 4, "u": 6, "U": 10}.get(raw[i + 1 : i + 2], 2)
                else:
                    i += 1
                n += 1
            return line, i + 1
        return line, col


def load(text: str) -> Located:
    out = Located(data=None, lines=text.splitlines())
    try:
        loader = _Loader(text)
    except yaml.reader.ReaderError as e:  # a control character anywhere in the text
        line = text.count("\n", 0, e.position) + 1
        col = e.position - (text.rfind("\n", 0, e.position) + 1) + 1
        out.diagnostics.append(
            Diagnostic("E-YAML", f"the character {e.character:#06x} is not allowed in YAML: {e.reason}", (), line, col)
        )
        return out
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = e.problem or "invalid YAML"
        ctx = f" ({e.context})" if e.context else ""
        n_lines = len(text.splitlines())
        if mark is not None and mark.line >= n_lines and e.context_mark is not None and e.context_mark.line < n_lines:
            # the file ended inside something left open (a quote, a bracket): point at where it opens
            mark = e.context_mark
            ctx = f" ({e.context}, opened here and never closed)" if e.context else " (opened here and never closed)"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        if line > max(1, n_lines):  # past the last line: show the last one
            line, col = max(1, n_lines), len(text.splitlines()[-1]) + 1 if n_lines else 1
        out.diagnostics.append(Diagnostic("E-YAML", f"{problem}{ctx}", (), line, col))
        return out
    except yaml.YAMLError as e:
        out.diagnostics.append(Diagnostic("E-YAML", str(e).splitlines()[0], (), 1, 1))
        return out
    except RecursionError:
        mark = loader.get_mark()
        out.diagnostics.append(
            Diagnostic(
                "E-YAML", f"the document nests more than {MAX_DEPTH} levels deep", (), mark.line + 1, mark.column + 1
            )
        )
        return out
    finally:
        loader.dispose()
    if root is None:
        return out
    try:
        out.data = _construct(root, (), out, loader, [0])
    except _TooBig:
        out.data = None
    return out


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct(node: yaml.Node, path: Path, out: Located, loader: _Loader, count: list[int]) -> Any:
    """Plain data from a composed node. Aliases make the node graph a DAG (or a cycle), so the walk
    is bounded in depth and in the number of values it produces."""
    line, col = _pos(node)
    count[0] += 1
    if len(path) > MAX_DEPTH or count[0] > MAX_VALUES:
        if len(path) > MAX_DEPTH:
            what = f"the document nests more than {MAX_DEPTH} levels deep"
        else:  # point at the top-level key whose value blows up (an alias's node carries its anchor's position)
            what = f"the document expands to more than {MAX_VALUES} values"
            line, col = out.keys.get(path[:1], (line, col))
        out.diagnostics.append(
            Diagnostic("E-YAML", what, path, line, col, hint="check the anchors (&a) and aliases (*a) around here")
        )
        raise _TooBig
    out.values[path] = (line, col)
    if node.tag not in _SAFE_TAGS:
        merge = node.tag == "tag:yaml.org,2002:merge"
        out.diagnostics.append(
            Diagnostic(
                "E-YAML-TAG",
                "YAML merge keys (<<) are not supported: write the keys out"
                if merge
                else f"the YAML tag {node.tag!r} is not allowed: specs hold plain data only",
                path,
                line,
                col,
                hint=None if merge else "remove the tag; onlytorch never constructs Python objects from YAML",
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, path + ("<key>",), out, loader, count)
            out.values.pop(path + ("<key>",), None)
            if key is None and key_node.tag not in _SAFE_TAGS:
                continue  # the tag is reported already
            if isinstance(key, (list, dict)) or key is None:
                line, col = _pos(key_node)
                out.diagnostics.append(
                    Diagnostic("E-KEY", f"a mapping key must be a name, got {key!r}", path, line, col)
                )
                continue
            if key in result:
                line, col = _pos(key_node)
                out.diagnostics.append(
                    Diagnostic(
                        "E-YAML-DUP",
                        f"the key {key!r} appears twice here; the last one would win",
                        path + (key,),
                        line,
                        col,
                        width=len(str(key)),
                    )
                )
            out.keys[path + (key,)] = _pos(key_node)
            result[key] = _construct(value_node, path + (key,), out, loader, count)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), out, loader, count) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    out.styles[path] = node.style
    try:
        return loader.construct_object(node, deep=True)
    except Exception as e:  # any failure to read a plain scalar is a problem of the text
        # an explicit tag that does not fit the text (!!int abc, !!bool maybe) or a date that does not exist
        problem = getattr(e, "problem", None) or (str(e) if isinstance(e, ValueError) else None)
        if problem and "int_max_str_digits" in problem:  # Python's own advice does not apply to a spec
            problem = f"an integer of {len(node.value)} digits is far out of range"
        detail = f": {problem}" if problem else ""
        out.diagnostics.append(
            Diagnostic(
                "E-YAML",
                f"cannot read {short_repr(node.value)} as {node.tag.rsplit(':', 1)[-1]}{detail}",
                path,
                line,
                col,
            )
        )
        return None
