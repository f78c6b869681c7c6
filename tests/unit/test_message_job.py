"""The message executor with a real SMTP server (aiosmtpd) and redaction of credentials."""

from __future__ import annotations

import pytest

from flowforge.core.errors import JobError
from flowforge.runtime.kinds.message import redact_url, send_message
from tests.conftest import free_port
from tests.receivers import SmtpTarget


def test_mailto_delivers_a_real_mail() -> None:
    smtp = SmtpTarget()
    try:
        url = f"mailto://127.0.0.1:{smtp.port}?from=ff@example.com&to=ops@example.com"
        out = send_message([url], "the body", "the title", allow="127.0.0.1")
        assert out == {"delivered": [url]}  # nothing secret in it, nothing redacted
        mail = smtp.wait(1)[0]
        assert mail["Subject"] == "the title" and mail["From"] == "ff@example.com"
        assert smtp.envelopes == [("ff@example.com", ["ops@example.com"])]
    finally:
        smtp.close()


def test_smtp_refusal_fails_with_the_providers_reason() -> None:
    url = f"mailto://127.0.0.1:{free_port()}?from=ff@example.com&to=ops@example.com"
    with pytest.raises(JobError, match="message delivery failed"):
        send_message([url], "x", allow="127.0.0.1")


def test_credentials_are_redacted_from_urls() -> None:
    assert redact_url("json://user:pw@127.0.0.1/x") == "json://***@127.0.0.1/x"
    assert redact_url("mailto://h?user=a&pass=hunter2&to=b@c.d") == "mailto://h?user=a&pass=***&to=b@c.d"
    assert redact_url("mailto://127.0.0.1:25?from=a@b.c") == "mailto://127.0.0.1:25?from=a@b.c"
