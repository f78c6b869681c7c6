"""The user local script jobs run as, and what that user can reach of this filesystem.

A worker started as root would otherwise hand every script root: the worker's environment
(the Prefect credential), the FlowForge home, the launcher's `/proc/<pid>/environ`. Jobs run as
`FLOWFORGE_JOB_USER` instead (`nobody` by default when the worker is root); the executor hands
the job directory over to that user and, where the user cannot reach the worker's interpreter
or the installed helpers (a virtualenv under a private home), uses `python3` from PATH and
copies of the helpers.
"""

from __future__ import annotations

import functools
import os
import pwd
import stat
from dataclasses import dataclass
from pathlib import Path

#: Who a root worker's jobs run as when FLOWFORGE_JOB_USER is unset.
DEFAULT_JOB_USER = "nobody"


@dataclass(frozen=True)
class JobUser:
    uid: int
    gid: int
    name: str
    home: str

    def can_reach(self, path: str | os.PathLike[str], mode: int = os.R_OK) -> bool:
        """Whether this user may open `path` for `mode` (R_OK, X_OK): every directory on the
        way there, through symlinks too, must let it pass."""
        return _reachable(self.uid, self.gid, os.fspath(path), mode)

    def as_json(self) -> list[object]:
        return [self.uid, self.gid, self.name, self.home]

    @classmethod
    def from_json(cls, value: list[object] | None) -> JobUser | None:
        if value is None:
            return None
        uid, gid, name, home = value
        return cls(int(uid), int(gid), str(name), str(home))  # type: ignore[call-overload]


def _allows(st: os.stat_result, uid: int, gid: int, want: int) -> bool:
    """`want` as rwx bits (4, 2, 1) against the owner, group or other bits that apply."""
    if uid == 0:
        return True
    if st.st_uid == uid:
        bits = (st.st_mode >> 6) & 7
    elif st.st_gid == gid:
        bits = (st.st_mode >> 3) & 7
    else:
        bits = st.st_mode & 7
    return bits & want == want


@functools.lru_cache(maxsize=256)
def _reachable(uid: int, gid: int, path: str, mode: int) -> bool:
    want = (4 if mode & os.R_OK else 0) | (1 if mode & os.X_OK else 0)
    try:
        for candidate in {os.path.abspath(path), os.path.realpath(path)}:
            parts = Path(candidate).parts
            for depth in range(1, len(parts)):  # each directory above it: search permission
                if not _allows(os.stat(Path(*parts[:depth])), uid, gid, 1):
                    return False
        final = os.stat(path)
    except OSError:
        return False
    if stat.S_ISDIR(final.st_mode):
        want |= 1
    return _allows(final, uid, gid, want)


def resolve(setting: str | None, euid: int | None = None) -> JobUser | None:
    """The job user for FLOWFORGE_JOB_USER = `setting`, or None for "this process's own user".

    Unset means `nobody` for a root worker; a name or uid must exist (ValueError otherwise);
    empty means no change. A non-root worker cannot switch users: asking it to is an error.
    """
    euid = os.geteuid() if euid is None else euid
    if setting is None:
        if euid != 0:
            return None
        setting = DEFAULT_JOB_USER
    setting = setting.strip()
    if not setting:
        return None
    try:
        entry = pwd.getpwuid(int(setting)) if setting.isdigit() else pwd.getpwnam(setting)
    except (KeyError, ValueError):
        raise ValueError(f"FLOWFORGE_JOB_USER: no user {setting!r} on this machine") from None
    if entry.pw_uid == euid:
        return None
    if euid != 0:
        raise ValueError(f"FLOWFORGE_JOB_USER={setting}: only a worker running as root can run "
                         f"jobs as another user (this one runs as uid {euid})")
    return JobUser(entry.pw_uid, entry.pw_gid, entry.pw_name, entry.pw_dir)


@functools.lru_cache(maxsize=1)
def configured() -> JobUser | None:
    """This worker's job user, from its settings (read once per process)."""
    from flowforge.runtime.settings import WorkerSettings

    return resolve(WorkerSettings().job_user)


def hand_over(job_dir: Path, user: JobUser) -> None:
    """Give the freshly filled job directory (and what is in it) to the job user; nothing in
    it is a link yet, since the job has not started."""
    os.chown(job_dir, user.uid, user.gid)
    with os.scandir(job_dir) as entries:
        for entry in entries:
            os.chown(entry.path, user.uid, user.gid, follow_symlinks=False)
            if entry.is_dir(follow_symlinks=False):
                for name in os.listdir(entry.path):
                    os.chown(os.path.join(entry.path, name), user.uid, user.gid,
                             follow_symlinks=False)


__all__ = ["DEFAULT_JOB_USER", "JobUser", "configured", "hand_over", "resolve"]
