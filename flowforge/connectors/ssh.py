"""Opening one SSH connection safely: host key always verified, bounded in time, breaker-guarded.

asyncssh does the verification: the record's host key is the only trusted key, and when there is
none the client's `validate_host_public_key` hook decides (yes only under `accept-new`, which then
hands the key back to be pinned). Every asyncssh or socket error is translated here, once, into
an `SshError` whose `reason` the API's `/servers/{name}/test` reports as it is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncssh

from flowforge.connectors.servers import ServerDirectory
from flowforge.core.errors import SshError
from flowforge.core.servers import BreakerState, Credential, ServerRecord

_KEY_TYPES = ("ssh-", "ecdsa-", "sk-")


def parse_host_key(text: str) -> asyncssh.SSHKey:
    """A public key from `ssh-ed25519 AAAA… [comment]` or a known_hosts line (`host keytype key`)."""
    fields = text.split()
    if fields and fields[0].startswith("@"):
        raise ValueError("known_hosts markers (@cert-authority, @revoked) are not supported")
    start = next((i for i, f in enumerate(fields) if f.startswith(_KEY_TYPES)), None)
    if start is None or len(fields) < start + 2:
        raise ValueError("expected a public key such as 'ssh-ed25519 AAAA…' or a known_hosts line")
    try:
        return asyncssh.import_public_key(" ".join(fields[start:start + 2]))
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"not a valid public key: {exc}") from exc


def client_keys(credential: Credential) -> list[asyncssh.SSHKey]:
    """The private key to log in with; ValueError when it cannot be read (or the passphrase is wrong)."""
    if not credential.private_key:
        return []
    try:
        return [asyncssh.import_private_key(credential.private_key, credential.passphrase)]
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ValueError(f"the private key could not be read: {exc}") from exc


def _openssh(key: asyncssh.SSHKey) -> str:
    """`keytype base64`, without the comment, as a record's host_key holds it."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


class _HostKeyCheck(asyncssh.SSHClient):
    """Remembers the key the server offered when it was not the trusted one."""

    def __init__(self, accept_new: bool) -> None:
        self.accept_new = accept_new
        self.offered: asyncssh.SSHKey | None = None

    def validate_host_public_key(self, host: str, addr: str, port: int,
                                 key: asyncssh.SSHKey) -> bool:
        self.offered = key
        return self.accept_new


@dataclass
class Connected:
    connection: asyncssh.SSHClientConnection
    #: The host key to pin (first contact under `accept-new`), else None.
    new_host_key: str | None
    latency: float


async def connect(record: ServerRecord, credential: Credential, *, timeout: float) -> Connected:
    """Connect and log in, or raise `SshError` saying exactly what went wrong."""
    where = f"server '{record.name}' ({record.host}:{record.port})"
    try:
        pinned = parse_host_key(record.host_key) if record.host_key else None
        keys = client_keys(credential)
    except ValueError as exc:
        raise SshError("auth_failed" if "private key" in str(exc) else "host_key_mismatch",
                       f"{where}: {exc}") from exc
    check = _HostKeyCheck(accept_new=pinned is None and record.host_key_policy == "accept-new")
    options: dict[str, Any] = {
        "port": record.port, "username": record.username,
        "known_hosts": ([pinned] if pinned else [], [], []),
        "client_keys": keys, "password": credential.password,
        # Nothing from this machine's ~/.ssh, agent or config may change who we log in as.
        "agent_path": None, "config": [], "preferred_auth": _auth_order(credential),
        "connect_timeout": timeout, "keepalive_interval": 15, "keepalive_count_max": 3,
    }
    started = time.monotonic()
    try:
        connection = await asyncssh.connect(record.host, client_factory=lambda: check, **options)
    except asyncssh.HostKeyNotVerifiable as exc:
        offered = (f"; the server offered {_openssh(check.offered)} "
                   f"({check.offered.get_fingerprint()})" if check.offered else "")
        if pinned is None:
            raise SshError("host_key_unknown", f"{where}: unknown host key: the server record "
                           "has no host_key and its host_key_policy is strict" + offered
                           + " (set host_key, or host_key_policy: accept-new)") from exc
        raise SshError("host_key_mismatch", f"{where}: host key mismatch: expected "
                       f"{pinned.get_fingerprint()}" + offered + "; if the server was really "
                       "re-keyed, update the record's host_key") from exc
    except asyncssh.PermissionDenied as exc:
        raise SshError("auth_failed", f"{where}: authentication failed for user "
                       f"'{record.username}': {exc.reason}") from exc
    except TimeoutError as exc:
        raise SshError("timeout", f"{where}: connect timed out after {timeout:g}s") from exc
    except ConnectionRefusedError as exc:
        raise SshError("refused", f"{where}: connection refused") from exc
    except asyncssh.Error as exc:
        raise SshError("unreachable", f"{where}: {exc.reason}") from exc
    except OSError as exc:
        raise SshError("unreachable", f"{where}: {exc.strerror or exc}") from exc
    new_key = _openssh(check.offered) if pinned is None and check.offered else None
    return Connected(connection, new_key, time.monotonic() - started)


def _auth_order(credential: Credential) -> str:
    methods = (["publickey"] if credential.private_key else []) + \
        (["password", "keyboard-interactive"] if credential.password else [])
    return ",".join(methods) or "none"


def breaker_view(state: BreakerState, threshold: int) -> dict[str, Any]:
    """The breaker as `/servers/{name}` shows it."""
    now = time.time()
    status = ("open" if state.is_open(now)
              else "half_open" if state.failures >= threshold else "closed")
    until = (datetime.fromtimestamp(state.open_until, UTC).isoformat()
             if status == "open" and state.open_until else None)
    return {"state": status, "consecutive_failures": state.failures, "open_until": until,
            "last_error": state.last_error}


class Breaker:
    """Per-server circuit breaker over `connect`: after `threshold` failed connects in a row,
    connects fail at once for `cooldown` seconds; then one try is let through (half-open), and
    a success closes it. State lives in the directory, so it outlives one flow-run process."""

    def __init__(self, directory: ServerDirectory, threshold: int, cooldown: float) -> None:
        self.directory = directory
        self.threshold = threshold
        self.cooldown = cooldown

    async def connect(self, record: ServerRecord, credential: Credential, *,
                      timeout: float) -> Connected:
        state = await self.directory.breaker(record.name)
        if state.is_open():
            view = breaker_view(state, self.threshold)
            raise SshError("circuit_open", f"server '{record.name}': circuit breaker open after "
                           f"{state.failures} failed connects in a row, failing fast until "
                           f"{view['open_until']} (last error: {state.last_error})")
        try:
            connected = await connect(record, credential, timeout=timeout)
        except SshError as exc:
            failures = state.failures + 1
            await self.directory.save_breaker(record.name, BreakerState(
                failures=failures, last_error=exc.message,
                open_until=time.time() + self.cooldown if failures >= self.threshold else None))
            raise
        if state.failures or state.open_until:
            await self.directory.save_breaker(record.name, BreakerState())
        if connected.new_host_key and record.host_key_policy == "accept-new":
            await self.directory.pin_host_key(record.name, connected.new_host_key)
        return connected


__all__ = ["Breaker", "Connected", "breaker_view", "client_keys", "connect", "parse_host_key"]
