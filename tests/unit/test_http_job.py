"""The http executor against a real HTTP server on 127.0.0.1: outputs, statuses, retries,
timeouts, auth, size cap."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator

import pytest

from flowforge.core.errors import JobError
from flowforge.runtime.kinds.http import MAX_BODY_BYTES, HttpRequest, send, status_expected
from tests.conftest import free_port
from tests.receivers import HttpTarget


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    server = HttpTarget()
    yield server
    server.close()


def call(**kwargs: object) -> dict[str, object]:
    lines: list[str] = []
    request = HttpRequest(**{"method": "GET", **kwargs})  # type: ignore[arg-type]
    out = send(request, lines.append, allow="127.0.0.1")  # the receiver's address
    out["_log"] = lines
    return out


def test_json_echo_with_headers_query_and_json_body(target: HttpTarget) -> None:
    out = call(method="POST", url=f"{target.url}/echo", headers={"X-Trace": "t1"},
               query={"page": "2"}, json_body={"rows": [1, 2]}, has_json=True)
    assert out["status"] == 200
    body = out["body"]
    assert isinstance(body, dict)  # parsed because the answer is application/json
    assert body["method"] == "POST" and body["query"] == {"page": "2"}
    assert body["json"] == {"rows": [1, 2]} and body["headers"]["x-trace"] == "t1"
    assert out["headers"]["content-type"] == "application/json"  # type: ignore[index]


def test_text_body_stays_text_and_raw_body_is_sent(target: HttpTarget) -> None:
    assert call(url=f"{target.url}/text")["body"] == "plain words"
    echoed = call(method="PUT", url=f"{target.url}/echo", body="a=1&b=2")["body"]
    assert echoed["body"] == "a=1&b=2" and echoed["json"] is None  # type: ignore[index]


def test_unexpected_status_fails_with_status_and_body_head_without_retrying(target: HttpTarget) -> None:
    before = len(target.requests)
    with pytest.raises(JobError) as info:
        call(url=f"{target.url}/status/404", retries=3, retry_delay=0.01)
    assert "answered 404 (expected 2xx)" in info.value.message
    assert '{"status": 404}' in info.value.message
    assert len(target.requests) - before == 1  # a 4xx is never retried


def test_expect_status_codes_and_classes(target: HttpTarget) -> None:
    assert call(url=f"{target.url}/status/404", expect_status=["4xx"])["status"] == 404
    assert call(url=f"{target.url}/status/201", expect_status=[201, 204])["status"] == 201
    with pytest.raises(JobError, match="expected 200"):
        call(url=f"{target.url}/status/201", expect_status=[200])
    assert status_expected(503, "5xx") and not status_expected(200, [201, "3xx"])


def test_flaky_503s_are_retried_with_backoff(target: HttpTarget) -> None:
    started = time.monotonic()
    out = call(url=f"{target.url}/flaky/unit-a/2", retries=2, retry_delay=0.1)
    assert out["status"] == 200 and out["body"] == {"attempts": 3}
    assert time.monotonic() - started >= 0.3  # waited 0.1 then 0.2
    assert any("retrying in 0.2s" in line for line in out["_log"])  # type: ignore[union-attr]


def test_retries_run_out_on_5xx(target: HttpTarget) -> None:
    with pytest.raises(JobError, match=r"answered 503 \(expected 2xx\): .*try later"):
        call(url=f"{target.url}/flaky/unit-b/5", retries=1, retry_delay=0.01)
    assert target.flaky["unit-b"] == 2  # the first try and one retry


def test_connection_errors_are_retried_then_fail() -> None:
    with pytest.raises(JobError, match=r"after 2 attempt\(s\): connection error"):
        call(url=f"http://127.0.0.1:{free_port()}/x", retries=1, retry_delay=0.01)


def test_slow_response_times_out(target: HttpTarget) -> None:
    started = time.monotonic()
    with pytest.raises(JobError, match=r"timed out after 0\.3s"):
        call(url=f"{target.url}/slow/3", timeout=0.3)
    assert time.monotonic() - started < 2.5


def test_basic_and_bearer_auth(target: HttpTarget) -> None:
    basic = call(url=f"{target.url}/echo", auth={"type": "basic", "username": "u", "password": "p"})
    assert basic["body"]["headers"]["authorization"] == "Basic " + base64.b64encode(b"u:p").decode()  # type: ignore[index]
    bearer = call(url=f"{target.url}/echo", auth={"type": "bearer", "token": "tok"})
    assert bearer["body"]["headers"]["authorization"] == "Bearer tok"  # type: ignore[index]


def test_large_bodies_are_capped(target: HttpTarget) -> None:
    out = call(url=f"{target.url}/big")
    assert out["truncated"] is True and len(out["body"]) == MAX_BODY_BYTES  # type: ignore[arg-type]


def test_a_url_that_renders_invalid_fails_at_once() -> None:
    with pytest.raises(JobError, match=r"ftp://127\.0\.0\.1/x"):
        call(url="ftp://127.0.0.1/x", retries=3, retry_delay=5)
