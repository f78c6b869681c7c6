"""Webhook secrets: generated here, stored encrypted, shown to the caller exactly once.

HMAC verification needs the secret itself, so it cannot be stored as a one-way hash the way a
password is. It is stored Fernet-encrypted (AES-128-CBC + HMAC-SHA256) under a key that is not
in the database: `FLOWFORGE_SECRET_KEY` if set, else `<home>/secret.key` (created 0600 on first
use). A copied database file or dump alone does not reveal any webhook secret.
"""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from flowforge.controlplane.settings import ControlPlaneSettings as Settings
from flowforge.core.errors import FlowForgeError


class SecretKeyError(FlowForgeError):
    """The key that decrypts webhook secrets is missing or was changed (an operator's fix)."""

    code = "secret_key_error"


@lru_cache(maxsize=4)
def _fernet(key_path: str, env_key: str | None) -> Fernet:
    if env_key:
        return Fernet(env_key.encode())
    path = Path(key_path)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(Fernet.generate_key())
    return Fernet(path.read_bytes().strip())


def fernet(settings: Settings) -> Fernet:
    return _fernet(str(settings.home / "secret.key"), os.environ.get("FLOWFORGE_SECRET_KEY"))


def new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def seal(settings: Settings, secret: str) -> str:
    return fernet(settings).encrypt(secret.encode()).decode()


def unseal(settings: Settings, token: str) -> str:
    try:
        return fernet(settings).decrypt(token.encode()).decode()
    except InvalidToken as exc:
        raise SecretKeyError("a webhook secret cannot be decrypted: FLOWFORGE_SECRET_KEY or "
                             "<home>/secret.key changed; rotate the trigger's secret") from exc


__all__ = ["SecretKeyError", "fernet", "new_secret", "seal", "unseal"]
