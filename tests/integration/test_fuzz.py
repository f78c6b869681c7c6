"""Schemathesis over every operation of the live API, with an admin key: no 5xx, ever.

A stack of its own (what the fuzzer defines must not meet the other tests), examples bounded
so the suite stays within its time. It found, before they were fixed: `GET /servers` answering
500 over a server record that was not one, offsets passed on to Prefect unbounded, and a
document that referred to a schema it did not define.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.conftest import Stack, start_stack

pytestmark = pytest.mark.integration

#: Examples per operation: enough to reach every body field once or twice, bounded for CI.
EXAMPLES = 6


@pytest.fixture(scope="module")
def fuzz_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("fuzz")) as started:
        yield started


def test_no_operation_answers_a_server_error(fuzz_stack: Stack) -> None:
    """Every operation of the API's own OpenAPI document, fuzzed (schemathesis generates the
    cases, hypothesis drives them; the pytest plugin does not run on this pytest)."""
    document = httpx.get(f"{fuzz_stack.api_url}/openapi.json", timeout=60).json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {fuzz_stack.admin_key}"}
    failures: list[str] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  phases=[Phase.explicit, Phase.generate],
                  suppress_health_check=list(HealthCheck))
        def call(case: Any) -> None:
            response = case.call(base_url=fuzz_stack.api_url, headers=headers, timeout=180)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} -> {response.status_code}: "
                                f"{response.text[:300]}")

        call()
    assert operations >= 45
    assert not failures, "\n".join(failures)
