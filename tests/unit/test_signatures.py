"""Webhook signature schemes: FlowForge's (timestamp and delivery id signed), GitHub's,
Stripe's and Slack's, each computed here the way its sender documents it."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from api.services.signatures import SignatureError, sign, verify

NOW = 1_800_000_000
BODY = json.dumps({"id": "evt_123", "event_id": "Ev0001", "x": 1}).encode()


def mac(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def test_flowforge_signs_timestamp_delivery_and_body() -> None:
    headers = sign("s3cret-s3cret-s3", BODY, "d-1", timestamp=NOW)
    assert headers["X-FlowForge-Signature"] == "sha256=" + mac("s3cret-s3cret-s3",
                                                              f"{NOW}.d-1.".encode() + BODY)
    assert verify("flowforge", ["s3cret-s3cret-s3"], BODY, headers, 300, NOW).delivery_id == "d-1"
    for changed, message in [
        ({"X-FlowForge-Delivery": "d-2"}, "X-FlowForge-Signature"),  # a new id: not signed
        ({"X-FlowForge-Timestamp": str(NOW + 1)}, "X-FlowForge-Signature"),
        ({"X-FlowForge-Signature": "sha256=00"}, "X-FlowForge-Signature"),
        ({"X-FlowForge-Delivery": ""}, "X-FlowForge-Delivery is missing"),
        ({"X-FlowForge-Timestamp": "soon"}, "not a unix time"),
    ]:
        with pytest.raises(SignatureError, match=message):
            verify("flowforge", ["s3cret-s3cret-s3"], BODY, {**headers, **changed}, 300, NOW)
    with pytest.raises(SignatureError, match="X-FlowForge-Signature"):
        verify("flowforge", ["s3cret-s3cret-s3"], BODY + b" ", headers, 300, NOW)


def test_a_delivery_outside_the_tolerance_is_refused_as_a_replay() -> None:
    headers = sign("k" * 16, BODY, "d-1", timestamp=NOW - 301)
    with pytest.raises(SignatureError, match=r"301s away .* replayed"):
        verify("flowforge", ["k" * 16], BODY, headers, 300, NOW)
    assert verify("flowforge", ["k" * 16], BODY, headers, 400, NOW).delivery_id == "d-1"


def test_either_secret_of_a_rotation_verifies() -> None:
    old, new = "old-secret-0123456", "new-secret-0123456"
    headers = sign(old, BODY, "d-1", timestamp=NOW)
    assert verify("flowforge", [new, old], BODY, headers, 300, NOW)
    with pytest.raises(SignatureError):
        verify("flowforge", [new], BODY, headers, 300, NOW)
    with pytest.raises(SignatureError, match="no secret yet"):
        verify("flowforge", [], BODY, headers, 300, NOW)


def test_github_x_hub_signature_256() -> None:
    headers = {"X-Hub-Signature-256": "sha256=" + mac("gh-secret", BODY),
               "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958"}
    got = verify("github", ["gh-secret"], BODY, headers, 300, NOW)
    # GitHub signs neither a time nor its delivery header: the body names the delivery
    assert got.delivery_id == "github-" + hashlib.sha256(BODY).hexdigest()
    with pytest.raises(SignatureError, match="X-Hub-Signature-256"):
        verify("github", ["gh-secret"], BODY, {"X-Hub-Signature-256": "sha256=" + "0" * 64},
               300, NOW)


def test_stripe_signature_header() -> None:
    v1 = mac("whsec_stripe", f"{NOW}.".encode() + BODY)
    headers = {"Stripe-Signature": f"t={NOW},v1={'0' * 64},v1={v1},v0=abc"}
    assert verify("stripe", ["whsec_stripe"], BODY, headers, 300, NOW).delivery_id == "evt_123"
    with pytest.raises(SignatureError, match="away from this server's clock"):
        verify("stripe", ["whsec_stripe"], BODY, headers, 300, NOW + 1000)
    with pytest.raises(SignatureError, match="no v1 matches"):
        verify("stripe", ["other"], BODY, headers, 300, NOW)


def test_slack_v0_signature() -> None:
    signed = f"v0:{NOW}:".encode() + BODY
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": "v0=" + mac("sl", signed)}
    assert verify("slack", ["sl"], BODY, headers, 300, NOW).delivery_id == "Ev0001"
    form = b"command=%2Fdeploy&text=prod"
    signed = f"v0:{NOW}:".encode() + form
    headers = {"X-Slack-Request-Timestamp": str(NOW), "X-Slack-Signature": "v0=" + mac("sl", signed)}
    assert verify("slack", ["sl"], form, headers, 300, NOW).delivery_id == \
        "slack-" + hashlib.sha256(signed).hexdigest()
    with pytest.raises(SignatureError, match="X-Slack-Signature"):
        verify("slack", ["sl"], form + b"&x=1", headers, 300, NOW)
