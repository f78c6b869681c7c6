"""What authentication costs an API request, with 1,000 keys stored (the bar: p99 <= 1 ms).

Three measurements, side by side in one run, in one process:

    flowforge  the API's own `security.authenticate` on a request scope: the failed-auth
               rate-limit check for the client, the key's SHA-256, one indexed lookup in the
               API's SQLite database (`api.services.keys.KeyReader`: a read-only sqlite3
               connection of its own, queried on the event loop; the async engine only when
               that read fails, e.g. locked past its 200 ms busy timeout), the revocation
               and expiry checks
    request    a whole authenticated request through the ASGI app in process (httpx's
               ASGITransport): GET /namespaces/default, which is authentication plus one
               primary-key read, against GET /healthz-like public work it does not have;
               the figure says what a caller sees around the authentication
    prefect    Prefect's way: the server's basic-auth middleware (one shared password;
               prefect/server/api/server.py `token_validation`): base64-decode the header
               and compare it in constant time, no lookup

and prints p50 / p99 / max of each and the ratio of FlowForge's to Prefect's. Run by hand:

    .venv/bin/python bench/auth.py --keys 1000 --calls 5000
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hmac
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from api import security  # noqa: E402
from api.main import create_app  # noqa: E402
from api.schemas.access import KeyCreate  # noqa: E402
from api.services import keys  # noqa: E402
from api.settings import ApiSettings  # noqa: E402


def quantiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return statistics.median(ordered), p99, ordered[-1]


def show(label: str, samples: list[float]) -> float:
    p50, p99, top = quantiles(samples)
    print(f"{label:<10} p50 {p50 * 1e3:7.3f} ms   p99 {p99 * 1e3:7.3f} ms   "
          f"max {top * 1e3:7.3f} ms   ({len(samples)} calls)")
    return p99


def prefect_check(header: str, auth_string: str) -> bool:
    """Prefect's `token_validation`, step for step."""
    scheme, creds = header.split()
    assert scheme == "Basic"
    decoded = base64.b64decode(creds).decode("utf-8")
    return hmac.compare_digest(decoded, auth_string)


async def main(n_keys: int, calls: int) -> None:
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "0")
    with tempfile.TemporaryDirectory() as home:
        settings = ApiSettings(home=Path(home), prefect_api_url="http://127.0.0.1:9/api",
                               sync_interval=3600, rate_limit_auth="1000000/minute")
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            async with app.state.sessionmaker() as session:
                made = [await keys.create(session, None, KeyCreate(
                    name=f"k{i}", role="viewer", namespaces=["*"])) for i in range(n_keys - 1)]
            key = made[len(made) // 2].key
            print(f"{n_keys} keys stored; {calls} calls each, after 200 to warm up")
            scope = {"type": "http", "headers": [(b"authorization", f"Bearer {key}".encode())],
                     "client": ("127.0.0.1", 50000), "app": app, "path": "/workflows"}
            for _ in range(200):
                await security.authenticate(scope)
            ours = []
            for _ in range(calls):
                t = time.perf_counter()
                await security.authenticate(scope)
                ours.append(time.perf_counter() - t)

            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
                headers = {"Authorization": f"Bearer {key}"}
                for _ in range(100):
                    await client.get("/namespaces/default", headers=headers)
                whole = []
                for _ in range(min(calls, 2000)):
                    t = time.perf_counter()
                    answer = await client.get("/namespaces/default", headers=headers)
                    whole.append(time.perf_counter() - t)
                    assert answer.status_code == 200, answer.text

    auth_string = "flowforge:" + "x" * 32
    header = "Basic " + base64.b64encode(auth_string.encode()).decode()
    theirs = []
    for _ in range(calls):
        t = time.perf_counter()
        prefect_check(header, auth_string)
        theirs.append(time.perf_counter() - t)

    p99 = show("flowforge", ours)
    show("request", whole)
    prefect_p99 = show("prefect", theirs)
    print(f"ratio flowforge/prefect at p99: {p99 / prefect_p99:.0f}x   "
          f"(bar: flowforge p99 <= 1 ms: {'met' if p99 <= 1e-3 else 'NOT met'})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--calls", type=int, default=5000)
    args = parser.parse_args()
    asyncio.run(main(args.keys, args.calls))
