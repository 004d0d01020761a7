"""Reading a YAML config: one number rule, duplicate keys refused, every key's line recorded.

PyYAML follows YAML 1.1, where ``1e-3`` is a string (a float needs a dot and a signed
exponent) and ``017`` is octal. initlab reads numbers as YAML 1.2 does, in config files
and command-line overrides alike:

* integers: ``-12``, ``017`` (seventeen), ``0o17``, ``0x1F``;
* floats: ``1e2``, ``1e-3``, ``.5``, ``2.``, ``-1.5E+3``, ``.inf``, ``.nan``.

Anything else (``1_000``, ``1:30``) stays a string. Booleans and null are PyYAML's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import yaml

from initlab.errors import ConfigError

KeyPath = tuple[str | int, ...]

_INT = re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$")
_FLOAT = re.compile(
    r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
)
_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_MERGE_TAG = "tag:yaml.org,2002:merge"


def _yaml12_resolvers() -> dict[Any, list[tuple[str, re.Pattern[str]]]]:
    """SafeLoader's implicit resolvers with YAML 1.2's int and float in place of 1.1's."""
    resolvers = {
        first: [(tag, rx) for tag, rx in pairs if tag not in (_INT_TAG, _FLOAT_TAG)]
        for first, pairs in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    for first in "-+0123456789.":
        resolvers.setdefault(first, [])
        resolvers[first] = [(_INT_TAG, _INT), (_FLOAT_TAG, _FLOAT), *resolvers[first]]
    return resolvers


class Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` reading numbers as YAML 1.2 does."""

    yaml_implicit_resolvers = _yaml12_resolvers()

    def construct_yaml_int(self, node: yaml.Node) -> int:
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        return int(text, 0) if text[:2] in ("0o", "0x") else int(text, 10)


Loader.add_constructor(_INT_TAG, Loader.construct_yaml_int)


class Dumper(yaml.SafeDumper):
    """Writes what :class:`Loader` reads back unchanged (a string such as ``1e2`` is quoted)."""

    yaml_implicit_resolvers = _yaml12_resolvers()


def dump(data: Any) -> str:
    """``data`` as block-style YAML, keys in their order."""
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, default_flow_style=None)


def parse_value(text: str) -> Any:
    """A command-line value read as the same YAML a file holds (text that is no YAML stays text)."""
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError:
        return text


@dataclass
class Document:
    """A config file's contents, with the line of every key and list item, and every scalar's text."""

    data: dict[str, Any]
    lines: dict[KeyPath, int] = field(default_factory=dict)
    texts: dict[KeyPath, str] = field(default_factory=dict)


def read(text: str, source: str) -> Document:
    """Parse a config file's text; every problem is a :class:`ConfigError` naming ``source:line``."""
    loader = Loader(text)
    doc = Document({})
    try:
        node = loader.get_single_node()
        # walked before construct_document, which flattens `<<` merges into the mapping's pairs
        duplicates = list(_walk(node, (), doc)) if node is not None else []
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError([f"{where}: malformed YAML: {problem}"]) from None
    finally:
        loader.dispose()
    if data is None:
        raise ConfigError([f"{source} is empty: write at least one key, or {{}} to run every default"])
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the config must be a mapping of keys to values"])
    doc.data = data
    if duplicates:
        raise ConfigError([f"{source}:{line}: {message}" for line, message in duplicates])
    return doc


def _walk(node: yaml.Node, path: KeyPath, doc: Document) -> Iterator[tuple[int, str]]:
    """Record lines and texts under ``node``; yield ``(line, message)`` for every duplicate key."""
    if len(path) > 32:  # an alias that contains itself: nothing a config needs lies this deep
        return
    if isinstance(node, yaml.ScalarNode):
        doc.texts[path] = str(node.value)
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            sub = (*path, str(key.value))
            if key.tag == _MERGE_TAG:
                continue
            if sub in doc.lines:
                dotted = ".".join(str(p) for p in sub)
                yield key.start_mark.line + 1, f"{dotted}: duplicate key (first at line {doc.lines[sub]})"
                continue
            doc.lines[sub] = key.start_mark.line + 1
            yield from _walk(value, sub, doc)
        for key, value in _merged(node, len(path)):  # a key written in the mapping overrides a merged one
            sub = (*path, str(key.value))
            if sub not in doc.lines:
                doc.lines[sub] = key.start_mark.line + 1
                yield from _walk(value, sub, doc)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            doc.lines[path + (i,)] = item.start_mark.line + 1
            yield from _walk(item, path + (i,), doc)


def _merged(node: yaml.MappingNode, depth: int) -> Iterator[tuple[yaml.Node, yaml.Node]]:
    """The pairs ``<<`` merges into ``node``, the first merged mapping's first (YAML's merge
    key: earlier mappings win, and the mapping's own keys win over all of them)."""
    if depth > 32:  # a merge that contains itself
        return
    for key, value in node.value:
        if key.tag != _MERGE_TAG:
            continue
        sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
        for source in sources:
            if isinstance(source, yaml.MappingNode):
                yield from ((k, v) for k, v in source.value if k.tag != _MERGE_TAG)
                yield from _merged(source, depth + 1)
