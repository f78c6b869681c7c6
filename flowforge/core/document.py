"""Parsing a workflow document's text: JSON or YAML, read with YAML 1.2's plain scalars.

PyYAML implements YAML 1.1, where a bare `on:` key is the boolean True, `10:30` is 630 and
`2024-01-01` is a date object; in a workflow document each of those silently changes meaning
(`needs: [{job: x, on: failure}]` loses its edge). This loader reads them as YAML 1.2 does.

A document is also bounded before anything walks it: YAML aliases share nodes, so a
470-byte "billion laughs" document parses at once and then expands to billions of values
for whatever reads it (41.7 s and 1.78 GB of validation); and a document nested 1,000 deep
overflowed the parsers' recursion. `parse_document` refuses both with a 422 naming the limit,
as the Kubernetes API server bounds alias expansion.
"""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any, Final

import yaml

from flowforge.core.errors import SpecError

# libyaml's parser where PyYAML was built with it (several times faster on large documents);
# the resolvers and constructors below are Python either way.
_Base: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Yaml12Loader(_Base):
    """SafeLoader with the YAML 1.2 core schema's plain scalars.

    Only true/false are booleans (so `on:` and `yes` stay strings); `10:30` and `1_000` stay
    strings and `017` is decimal (YAML 1.1 read them as sexagesimal 630, 1000 and octal 15); and
    `2024-01-01` stays a string instead of a `datetime.date`, which is not JSON.
    """


_YAML_1_1_ONLY = {"tag:yaml.org,2002:" + t for t in ("bool", "int", "float", "timestamp")}
_Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, rx) for tag, rx in resolvers if tag not in _YAML_1_1_ONLY]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(  # before float, so "1" is an int
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
    list("-+0123456789"),
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+.0123456789"),
)


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    return int(text, 0) if text.startswith(("0o", "0x")) else int(text, 10)


_Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _core_int)


#: How deep a document may nest (a workflow needs a dozen levels; params a few more).
MAX_DEPTH: Final = 64
#: How many values a document may hold once its aliases are expanded: a 10,000-job document
#: holds about 100,000.
MAX_VALUES: Final = 1_000_000


def _refused(message: str) -> SpecError:
    return SpecError([{"field": "", "message": message}])


def parse_document(text: str | bytes, syntax: str | None = None) -> Any:
    """Parse a workflow document given as JSON or YAML text (JSON is a subset of YAML 1.2),
    refusing one nested deeper than `MAX_DEPTH` or expanding past `MAX_VALUES`.

    `syntax` is what the sender declared: "json" is read as JSON only, "yaml" as YAML; None
    reads a document that looks like JSON as JSON first (the JSON parser is C, the YAML one
    mostly Python: a generated 10,000-job document took seconds to read as YAML).
    """
    data: Any = None
    parsed = False
    try:
        if syntax == "json":
            try:
                data = json.loads(text)
            except ValueError as exc:
                raise _refused(f"not valid JSON: {exc}") from exc
            parsed = True
        elif syntax is None and text.lstrip()[:1] in ("{", b"{"):
            # YAML's flow style (`{name: x}`) is not JSON: that is read as YAML below
            with contextlib.suppress(ValueError):
                data, parsed = json.loads(text), True
        if not parsed:
            data = yaml.load(text, Loader=_Yaml12Loader)
    except RecursionError:
        raise _refused(f"the document is nested deeper than {MAX_DEPTH} levels") from None
    except yaml.YAMLError as exc:
        if "maximum nesting depth" in str(exc):  # libyaml's own limit, met before ours
            raise _refused(f"the document is nested deeper than {MAX_DEPTH} levels") from None
        raise _refused(f"not valid JSON or YAML: {exc}") from exc
    check_bounds(data)
    return data


def check_bounds(data: Any) -> None:
    """`SpecError` when `data` nests deeper than `MAX_DEPTH` or holds more than `MAX_VALUES`
    values, counting a shared (aliased) value at every place it appears, or refers to itself.

    Each container is visited once and its expanded size remembered, so a bomb is measured in
    as many steps as the document has distinct containers, not values.
    """
    measured: dict[int, tuple[int, int]] = {}  # id(container) -> (values, depth)
    open_: set[int] = set()
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, children_done = stack.pop()
        if not isinstance(node, dict | list):
            continue
        key = id(node)
        children = list(node.values()) if isinstance(node, dict) else node
        if children_done:
            size, depth = 1, 1
            for child in children:
                child_size, child_depth = (measured[id(child)] if isinstance(child, dict | list)
                                           else (1, 0))
                size += child_size
                depth = max(depth, child_depth + 1)
            if depth > MAX_DEPTH:
                raise _refused(f"the document is nested deeper than {MAX_DEPTH} levels")
            if size > MAX_VALUES:
                raise _refused(f"the document holds more than {MAX_VALUES:,} values once its "
                               "YAML aliases are expanded (an alias bomb?)")
            measured[key] = (size, depth)
            open_.discard(key)
        elif key not in measured:
            if key in open_:
                raise _refused("a YAML alias in the document refers to a value that contains it")
            open_.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children
                         if isinstance(c, dict | list) and id(c) not in measured)


__all__ = ["MAX_DEPTH", "MAX_VALUES", "check_bounds", "parse_document"]
