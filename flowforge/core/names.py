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
#: Prefect block document names: lowercase letters, digits and dashes.
SECRET_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")
#: Prefect's global concurrency limit names are free text; FlowForge keeps them slug-like so
#: they read the same in YAML, URLs and the Prefect UI.
LIMIT_NAME_RE: Final = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
#: Prefect variable names.
VARIABLE_NAME_RE: Final = re.compile(r"^[a-z0-9_-]{1,255}$")
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


def is_input_name(name: str) -> bool:
    return name.isidentifier() and not keyword.iskeyword(name) and name not in RESERVED_INPUTS


__all__ = [
    "ENV_NAME_RE",
    "JOB_NAME_RE",
    "LIMIT_NAME_RE",
    "RESERVED_ENV_PREFIXES",
    "RESERVED_INPUTS",
    "SECRET_NAME_RE",
    "SERVER_NAME_RE",
    "VARIABLE_NAME_RE",
    "WORKFLOW_NAME_RE",
    "is_input_name",
    "module_collision",
    "module_name",
]
