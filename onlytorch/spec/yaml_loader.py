"""Safe YAML loading that remembers where every value came from.

Only the standard YAML tags are accepted (no ``!!python/...``: that is reported as E-YAML-TAG,
never constructed). The result is plain Python data plus a map from each path (tuple of keys and
list indices) to the line/column of its value and, for mapping entries, of its key."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from .diagnostics import Diagnostic, Path

_SAFE_TAGS = {
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq", "timestamp", "binary")
}


@dataclass
class Located:
    """Spec data with source positions (1-based line and column)."""

    data: Any
    values: dict[Path, tuple[int, int]] = field(default_factory=dict)
    keys: dict[Path, tuple[int, int]] = field(default_factory=dict)
    styles: dict[Path, str | None] = field(default_factory=dict)
    diagnostics: list[Diagnostic] = field(default_factory=list)

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
        if style in (None, ""):
            return line, col + offset
        if style in ("'", '"'):
            return line, col + 1 + offset
        return line, col


def load(text: str) -> Located:
    out = Located(data=None)
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (None, None)
        problem = e.problem or "invalid YAML"
        ctx = f" ({e.context})" if e.context else ""
        out.diagnostics.append(Diagnostic("E-YAML", f"{problem}{ctx}", (), line, col))
        return out
    except yaml.YAMLError as e:
        out.diagnostics.append(Diagnostic("E-YAML", str(e).splitlines()[0], (), 1, 1))
        return out
    finally:
        loader.dispose()
    if root is None:
        return out
    out.data = _construct(root, (), out, loader)
    return out


def _pos(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def _construct(node: yaml.Node, path: Path, out: Located, loader: yaml.SafeLoader) -> Any:
    out.values[path] = _pos(node)
    if node.tag not in _SAFE_TAGS:
        line, col = _pos(node)
        out.diagnostics.append(
            Diagnostic(
                "E-YAML-TAG",
                f"the YAML tag {node.tag!r} is not allowed: specs hold plain data only",
                path,
                line,
                col,
                hint="remove the tag; onlytorch never constructs Python objects from YAML",
            )
        )
        return None
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = _construct(key_node, path + ("<key>",), out, loader)
            out.values.pop(path + ("<key>",), None)
            if isinstance(key, (list, dict)) or key is None:
                line, col = _pos(key_node)
                out.diagnostics.append(Diagnostic("E-KEY", f"a mapping key must be a name, got {key!r}", path, line, col))
                continue
            if key in result:
                line, col = _pos(key_node)
                out.diagnostics.append(
                    Diagnostic("E-YAML-DUP", f"the key {key!r} appears twice here; the last one would win", path + (key,), line, col, width=len(str(key)))
                )
            out.keys[path + (key,)] = _pos(key_node)
            result[key] = _construct(value_node, path + (key,), out, loader)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), out, loader) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    out.styles[path] = node.style
    return loader.construct_object(node, deep=True)
