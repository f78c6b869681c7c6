"""The FlowForge home: private to its owner, and the Prefect credential kept in it.

Everything under the home is 0600 (directories 0700): the databases hold the definitions,
Prefect's block encryption key and its runs, `admin.key` the first API key, `prefect-auth` the
Prefect server's credential. The one exception is the project directory (generated flows),
which docker-pool flow runs read as a non-root user; it holds no secret.
"""

from __future__ import annotations

import os
import secrets
import stat
from pathlib import Path

from flowforge.controlplane.settings import PREFECT_AUTH_FILE
from flowforge.stack.settings import StackSettings

PREFECT_USER = "flowforge"


def _private(path: Path) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        return
    if stat.S_IMODE(mode) & 0o077:
        path.chmod(0o700 if stat.S_ISDIR(mode) else 0o600)


def secure_home(settings: StackSettings) -> None:
    """Make the home private (creating it), leaving the project directory readable."""
    home = settings.home
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    project = settings.project.resolve()
    for directory in (home, home / "logs", home / "run", settings.prefect_home):
        directory.mkdir(mode=0o700, exist_ok=True)
    for root, dirs, files in os.walk(home):
        here = Path(root)
        if here.resolve() == project:
            dirs[:] = []  # the project stays as it is: flow runs in containers read it
            continue
        _private(here)
        for name in files:
            _private(here / name)
    if project.exists():
        project.chmod(0o755)


def prefect_auth(settings: StackSettings) -> str:
    """The credential of the Prefect server `up` starts (`user:password`, Prefect's basic
    auth), made on first start and kept 0600 in the home."""
    path = settings.home / PREFECT_AUTH_FILE
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    value = f"{PREFECT_USER}:{secrets.token_urlsafe(24)}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value


__all__ = ["PREFECT_AUTH_FILE", "prefect_auth", "secure_home"]
