"""YAML for the mapping table: every scalar a string, every node with its line.

A plain YAML 1.1 loader turns ``on``/``yes``/``no`` into booleans and ``0123``
into numbers; the table's values are read as text and typed by the config
models instead. ``null``/``~``/empty stay None. Duplicate keys are errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

_NULLS = frozenset({"", "~", "null", "Null", "NULL"})
# far more values than any table holds; aliases (``*name``) could expand a small file past it
MAX_VALUES = 100_000


class TableSyntaxError(ValueError):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class LoadedTable:
    data: Any
    lines: dict[Path, int] = field(default_factory=dict)

    def line_of(self, path: Path) -> int:
        """The line of the deepest node of ``path`` the file has (1 when none)."""
        for cut in range(len(path), -1, -1):
            line = self.lines.get(tuple(path[:cut]))
            if line is not None:
                return line
        return 1


def load_table(text: str) -> LoadedTable:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise TableSyntaxError(line, f"not valid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise TableSyntaxError(1, f"not valid YAML: {exc}") from None
    except RecursionError:
        raise TableSyntaxError(1, "not valid YAML: nested too deeply") from None
    table = LoadedTable(data=None)
    if root is None:
        table.data = {}
        return table
    try:
        table.data = _build(root, (), table.lines)
    except RecursionError:
        raise TableSyntaxError(1, "nested too deeply (or an alias within itself)") from None
    return table


def _build(node: yaml.Node, path: Path, lines: dict[Path, int]) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if len(lines) > MAX_VALUES:
        raise TableSyntaxError(
            node.start_mark.line + 1, f"more than {MAX_VALUES} values (aliases expanding?)"
        )
    if isinstance(node, yaml.MappingNode):
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise TableSyntaxError(key_node.start_mark.line + 1, "a key must be plain text")
            key = str(key_node.value)
            if key in result:
                raise TableSyntaxError(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            lines[(*path, key)] = key_node.start_mark.line + 1
            result[key] = _build(value_node, (*path, key), lines)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, index), lines) for index, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    if node.style is None and node.value in _NULLS:
        return None
    return str(node.value)
