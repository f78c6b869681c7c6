"""Webhook signatures: FlowForge's own scheme and the GitHub, Stripe and Slack ones, natively.

Each scheme answers two questions about a delivery: is it signed by a secret we hold, and
which id names it, so a replay is the same delivery (Prefect's idempotency key
`webhook:{trigger}:{delivery}` then answers with the run it already started). A delivery id
counts only when the signature covers it: an unsigned id could be changed by whoever
captured the request, which is how a resent delivery used to start a second run.

    flowforge  X-FlowForge-Signature: sha256=<hex HMAC-SHA256(secret, "{ts}.{delivery}.{body}")>
               X-FlowForge-Timestamp: <unix seconds>, X-FlowForge-Delivery: <id>
    github     X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>; GitHub signs no
               time and not X-GitHub-Delivery, so the id is the body's SHA-256 (a redelivery
               is the same body, a new event never is)
    stripe     Stripe-Signature: t=<ts>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>[,v1=...];
               the id is the event's `id` in the (signed) body
    slack      X-Slack-Signature: v0=<hex HMAC-SHA256(secret, "v0:{ts}:{body}")>,
               X-Slack-Request-Timestamp: <ts>; the id is the body's `event_id`, else the
               SHA-256 of the signed text

Timestamps outside the tolerance (`FLOWFORGE_WEBHOOK_TOLERANCE`, 300 s) are refused,
so a captured delivery cannot be replayed later; every comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Literal

Scheme = Literal["flowforge", "github", "stripe", "slack"]
SCHEMES: Final = ("flowforge", "github", "stripe", "slack")

#: Headers that carry a signature: never shown to a trigger's `inputs` templates.
SIGNATURE_HEADERS: Final = frozenset({
    "x-flowforge-signature", "x-hub-signature-256", "x-hub-signature", "stripe-signature",
    "x-slack-signature",
})


class SignatureError(Exception):
    """Why a delivery is not accepted as signed (said to the sender; never names a secret)."""


@dataclass(frozen=True)
class Verified:
    delivery_id: str


def _mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def _matches(secrets: Iterable[str], message: bytes, given: Iterable[str]) -> bool:
    offered = [g.strip().lower().encode() for g in given if g.strip()]
    found = False
    for secret in secrets:  # every pair is compared: the time taken says nothing of which
        expected = _mac(secret, message).encode()
        for candidate in offered:
            found |= hmac.compare_digest(expected, candidate)
    return found


def _fresh(timestamp: str | None, tolerance: float, now: float, header: str) -> None:
    if not timestamp or not timestamp.strip().isdigit():
        raise SignatureError(f"{header} is missing or not a unix time in seconds")
    skew = abs(now - int(timestamp))
    if skew > tolerance:
        raise SignatureError(f"{header} is {skew:.0f}s away from this server's clock (more than "
                             f"the {tolerance:g}s allowed): a delayed or replayed delivery")


def _json_field(body: bytes, name: str) -> str | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    field = value.get(name) if isinstance(value, dict) else None
    return field if isinstance(field, str) and 0 < len(field) <= 200 else None


def verify(scheme: str, secrets: list[str], body: bytes, headers: Mapping[str, str],
           tolerance: float, now: float | None = None) -> Verified:
    """The delivery's id if `body` + `headers` are signed with one of `secrets`; else
    SignatureError saying what is wrong."""
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in headers.items()}
    if not secrets:
        raise SignatureError("this webhook has no secret yet: rotate it to make one")
    if scheme == "github":
        given = h.get("x-hub-signature-256", "")
        if not given.startswith("sha256=") or not _matches(
                secrets, body, [given.removeprefix("sha256=")]):
            raise SignatureError("missing or wrong X-Hub-Signature-256 (sha256=<hex HMAC-SHA256 "
                                 "of the raw body>)")
        return Verified("github-" + hashlib.sha256(body).hexdigest())
    if scheme == "stripe":
        parts = [p.split("=", 1) for p in h.get("stripe-signature", "").split(",") if "=" in p]
        stamp = next((v for k, v in parts if k.strip() == "t"), None)
        _fresh(stamp, tolerance, now, "Stripe-Signature t=")
        v1 = [v for k, v in parts if k.strip() == "v1"]
        if not _matches(secrets, f"{stamp}.".encode() + body, v1):
            raise SignatureError("wrong Stripe-Signature (no v1 matches the webhook's secret)")
        event = _json_field(body, "id")
        return Verified(event or "stripe-" + hashlib.sha256(body).hexdigest())
    if scheme == "slack":
        stamp = h.get("x-slack-request-timestamp")
        _fresh(stamp, tolerance, now, "X-Slack-Request-Timestamp")
        given = h.get("x-slack-signature", "")
        signed = f"v0:{stamp}:".encode() + body
        if not given.startswith("v0=") or not _matches(secrets, signed,
                                                       [given.removeprefix("v0=")]):
            raise SignatureError("missing or wrong X-Slack-Signature (v0=<hex HMAC-SHA256 of "
                                 "'v0:{timestamp}:{body}'>)")
        event = _json_field(body, "event_id")
        return Verified(event or "slack-" + hashlib.sha256(signed).hexdigest())
    stamp = h.get("x-flowforge-timestamp")
    _fresh(stamp, tolerance, now, "X-FlowForge-Timestamp")
    delivery = (h.get("x-flowforge-delivery") or "").strip()
    if not delivery or len(delivery) > 200:
        raise SignatureError("X-FlowForge-Delivery is missing (a unique id per delivery, at "
                             "most 200 characters; it is signed)")
    given = h.get("x-flowforge-signature", "")
    message = f"{stamp}.{delivery}.".encode() + body
    if not given.startswith("sha256=") or not _matches(secrets, message,
                                                       [given.removeprefix("sha256=")]):
        raise SignatureError("missing or wrong X-FlowForge-Signature (expected sha256=<hex "
                             "HMAC-SHA256 of '{timestamp}.{delivery}.{body}' with the "
                             "webhook's secret>)")
    return Verified(delivery)


def sign(secret: str, body: bytes, delivery: str, timestamp: int | None = None) -> dict[str, str]:
    """The headers of a FlowForge-signed delivery (for senders written in Python, and tests)."""
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-FlowForge-Timestamp": stamp, "X-FlowForge-Delivery": delivery,
            "X-FlowForge-Signature": "sha256=" + _mac(
                secret, f"{stamp}.{delivery}.".encode() + body)}


__all__ = ["SCHEMES", "SIGNATURE_HEADERS", "Scheme", "SignatureError", "Verified", "sign",
           "verify"]
