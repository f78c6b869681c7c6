"""Parsing a workflow document's text: JSON or YAML, read with YAML 1.2's plain scalars.

PyYAML implements YAML 1.1, where a bare `on:` key is the boolean True, `10:30` is 630 and
`2024-01-01` is a date object; in a workflow document each of those silently changes meaning
(`needs: [{job: x, on: failure}]` loses its edge). This loader reads them as YAML 1.2 does.
"""

from __future__ import annotations

import json
import re
from typing import Any

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


def parse_document(text: str | bytes) -> Any:
    """Parse a workflow document given as JSON or YAML text (JSON is a subset of YAML 1.2).

    A document that looks like JSON is read as JSON first: the JSON parser is C, the YAML one
    mostly Python, and a generated 10,000-job document took seconds to read as YAML.
    """
    if text.lstrip()[:1] in ("{", b"{"):
        try:
            return json.loads(text)
        except ValueError:
            pass  # YAML's flow style (`{name: x}`) is not JSON: read it as YAML
    try:
        return yaml.load(text, Loader=_Yaml12Loader)
    except yaml.YAMLError as exc:
        raise SpecError([{"field": "", "message": f"not valid JSON or YAML: {exc}"}]) from exc


__all__ = ["parse_document"]
