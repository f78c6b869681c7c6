"""The `flowforge` command: thin Typer wrappers over plain library functions.

Each command builds its settings (options override FLOWFORGE_* variables), calls one plain
function and turns its result into an exit code. Heavy imports (Prefect) stay inside the
commands so `flowforge --help` is fast. The CLI stands on top of every layer but the API,
which it reaches over HTTP like any client.
"""

from flowforge.cli import parts, project, stack, sync
from flowforge.cli._app import app

__all__ = ["app", "parts", "project", "stack", "sync"]
