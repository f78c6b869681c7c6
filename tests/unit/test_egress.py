"""The egress guard of http and message jobs, with real sockets, real receivers on 127.0.0.1
and real name resolution (/etc/hosts): loopback, private, link-local and metadata addresses
are refused after DNS and on every redirect, unless the allow-list names them."""

from __future__ import annotations

import ipaddress
import urllib.request
from collections.abc import Iterator

import pytest

from flowforge.connectors import egress
from flowforge.core.errors import JobError
from flowforge.runtime.kinds.http import HttpRequest, send
from flowforge.runtime.kinds.message import send_message
from tests.receivers import HttpTarget


@pytest.fixture(scope="module")
def targets() -> Iterator[tuple[HttpTarget, HttpTarget]]:
    first, second = HttpTarget(), HttpTarget()
    yield first, second
    first.close()
    second.close()


def get(url: str, allow: str | None = None, **kwargs: object) -> dict[str, object]:
    return send(HttpRequest(method="GET", url=url, **kwargs), lambda line: None,  # type: ignore[arg-type]
                allow=allow)


@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.2", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("169.254.169.254", "link-local"), ("10.1.2.3", "private"), ("192.168.0.1", "private"),
    ("fd00:ec2::254", "private"), ("0.0.0.0", "unspecified"), ("100.64.0.1", "reserved"),
    ("224.0.0.1", "multicast"),
])
def test_what_is_refused(address: str, kind: str) -> None:
    assert kind in (egress.why_refused(ipaddress.ip_address(address)) or "")


def test_public_addresses_pass() -> None:
    for address in ("1.1.1.1", "8.8.8.8", "2606:4700:4700::1111"):
        assert egress.why_refused(ipaddress.ip_address(address)) is None


def test_loopback_is_refused_naming_the_address(targets: tuple[HttpTarget, HttpTarget]) -> None:
    first, _ = targets
    before = len(first.requests)
    with pytest.raises(JobError, match=r"egress to 127\.0\.0\.1 \(a loopback address\)"):
        get(f"{first.url}/echo")
    with pytest.raises(JobError, match="FLOWFORGE_EGRESS_ALLOW"):
        get(f"{first.url}/echo", retries=2, retry_delay=0.01)
    assert len(first.requests) == before  # refused before any connection


def test_cloud_metadata_is_refused() -> None:
    with pytest.raises(JobError, match=r"169\.254\.169\.254 \(a link-local address"):
        get("http://169.254.169.254/latest/meta-data/", timeout=2)


def test_a_name_resolving_to_loopback_is_refused(targets: tuple[HttpTarget, HttpTarget]) -> None:
    first, _ = targets
    with pytest.raises(JobError, match=r"localhost, which resolves to 127\.0\.0\.1"):
        get(f"http://localhost:{first.port}/echo")
    assert get(f"http://localhost:{first.port}/echo", allow="localhost")["status"] == 200


def test_a_redirect_to_a_refused_address_is_refused(targets: tuple[HttpTarget, HttpTarget]) -> None:
    first, second = targets
    before = len(second.requests)
    hop = f"{first.url}/redirect?to={second.url}/echo"
    allow_first = f"127.0.0.1:{first.port}"
    assert get(hop, allow=allow_first, expect_status=302)["status"] == 302  # not followed
    # unless asked
    with pytest.raises(JobError, match=r"egress to 127\.0\.0\.1 .*refused"):
        get(hop, allow=allow_first, follow_redirects=True)
    assert len(second.requests) == before
    both = f"{allow_first}, 127.0.0.1:{second.port}"
    assert get(hop, allow=both, follow_redirects=True)["status"] == 200


def test_the_allow_list_takes_addresses_networks_and_names() -> None:
    rules = egress.parse_allow("127.0.0.1, 10.0.0.0/8:8080, hooks.internal, [::1]:9000")
    assert [(str(r.network) if r.network else r.host, r.port) for r in rules] == [
        ("127.0.0.1/32", None), ("10.0.0.0/8", 8080), ("hooks.internal", None),
        ("::1/128", 9000)]
    for bad in ("10.0.0.0/8:99999", "not a host!", "a:b"):
        with pytest.raises(ValueError, match="FLOWFORGE_EGRESS_ALLOW"):
            egress.parse_allow(bad)


def test_message_jobs_are_guarded_too(targets: tuple[HttpTarget, HttpTarget]) -> None:
    first, _ = targets
    url = f"json://127.0.0.1:{first.port}/notify"
    before = len(first.posts)
    with pytest.raises(JobError, match=r"egress to 127\.0\.0\.1 \(a loopback address\)"):
        send_message([url], "exfiltrate")
    assert len(first.posts) == before
    assert send_message([url], "allowed", allow="127.0.0.1") == {"delivered": [url]}
    assert len(first.posts) == before + 1


def test_the_guard_is_scoped_to_its_block(targets: tuple[HttpTarget, HttpTarget]) -> None:
    """Prefect's client in the same process (and thread, after the job) is not guarded."""
    first, _ = targets
    with egress.guarded(""), pytest.raises(OSError, match="refused"):
        urllib.request.urlopen(f"{first.url}/echo", timeout=5)
    with urllib.request.urlopen(f"{first.url}/echo", timeout=5) as answer:
        assert answer.status == 200
