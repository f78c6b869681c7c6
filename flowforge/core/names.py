"""Names FlowForge gives or accepts, in one place: workflows, jobs, servers, secrets, limits.

Every name here travels somewhere stricter than a workflow document: into a Prefect object
name, a URL path, a Python module name or an environment variable. Checking them once, here,
is what lets every other module take a name as given.
"""

from __future__ import annotations

import keyword
import re
from typing import Final

WORKFLOW_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
JOB_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,99}$")
#: SSH servers and their tags: they become Prefect variable and block names.
SERVER_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Names of secrets (Prefect block documents): lowercase letters, digits and single dashes.
#: A double dash never appears in a name a user gives: it separates a namespace from a name in
#: Prefect (`team--token`).
SECRET_NAME_RE: Final = re.compile(r"^(?!.*--)[a-z0-9][a-z0-9-]{0,99}$")
#: Namespaces: a slug; `default` holds what existed before namespaces did. Not `flowforge`
#: nor `flowforge-...`: a namespace's secrets and variables are `<namespace>--<name>` in
#: Prefect, and `flowforge-server--x` would be read as a server record by its prefix.
NAMESPACE_RE: Final = re.compile(r"^(?!.*--)(?!flowforge(?:-|$))[a-z0-9][a-z0-9-]{0,40}$")
DEFAULT_NAMESPACE: Final = "default"
#: Namespaces no one may create: FlowForge's own records live under these words.
RESERVED_NAMESPACES: Final = frozenset({"flowforge", "prefect", "system"})
#: The start of every name FlowForge keeps for itself in Prefect (SSH server records, their
#: credentials, breaker states): no secret, variable or template of a user may name one.
INTERNAL_PREFIX: Final = "flowforge-"


def reserved_name_problem(name: str) -> str | None:
    if name.startswith(INTERNAL_PREFIX):
        return f"names starting with '{INTERNAL_PREFIX}' are FlowForge's own"
    return None
#: Prefect's global concurrency limit names are free text; FlowForge keeps them slug-like so
#: they read the same in YAML, URLs and the Prefect UI.
LIMIT_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
#: Variable keys: Prefect's variable names, less the double dash (see SECRET_NAME_RE).
VARIABLE_NAME_RE: Final = re.compile(r"^(?!.*--)[a-z0-9_-]{1,200}$")
ENV_NAME_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Environment variable prefixes of the service itself: never set by a document.
RESERVED_ENV_PREFIXES: Final = ("FLOWFORGE_", "PREFECT_")
#: Flow parameters FlowForge adds to every generated flow besides the workflow's inputs.
RESERVED_INPUTS: Final = frozenset({"flowforge_trigger", "flowforge_repair"})


def module_name(workflow: str) -> str:
    """The Python module (and flow function) a workflow compiles to: `flows/<module>.py`.

    Not injective (`a-b` and `a_b` both give `a_b`), so the API refuses a second workflow
    whose module another already has (`module_collision`).
    """
    ident = re.sub(r"[^0-9a-zA-Z_]", "_", workflow)
    if not ident or ident[0].isdigit() or keyword.iskeyword(ident):
        ident = f"wf_{ident}"
    return ident


def module_collision(workflow: str, others: list[str]) -> str | None:
    """The first of `others` (other workflows' names) that compiles to `workflow`'s module."""
    mine = module_name(workflow)
    return next((o for o in others if o != workflow and module_name(o) == mine), None)


def stored_name(namespace: str, name: str) -> str:
    """A secret's or variable's name in Prefect: bare in `default` (so what was stored before
    namespaces keeps its name), `<namespace>--<name>` elsewhere."""
    return name if namespace == DEFAULT_NAMESPACE else f"{namespace}--{name}"


def split_stored_name(stored: str) -> tuple[str, str] | None:
    """`(namespace, name)` of a name in Prefect, or None for one FlowForge keeps to itself."""
    if stored.startswith(INTERNAL_PREFIX):
        return None
    namespace, sep, name = stored.partition("--")
    if not sep:
        return DEFAULT_NAMESPACE, stored
    return (namespace, name) if "--" not in name else None


def is_input_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in RESERVED_INPUTS


__all__ = [
    "DEFAULT_NAMESPACE",
    "ENV_NAME_RE",
    "INTERNAL_PREFIX",
    "JOB_NAME_RE",
    "LIMIT_NAME_RE",
    "NAMESPACE_RE",
    "RESERVED_ENV_PREFIXES",
    "RESERVED_INPUTS",
    "RESERVED_NAMESPACES",
    "SECRET_NAME_RE",
    "SERVER_NAME_RE",
    "VARIABLE_NAME_RE",
    "WORKFLOW_NAME_RE",
    "is_input_name",
    "module_collision",
    "module_name",
    "reserved_name_problem",
    "split_stored_name",
    "stored_name",
]
