"""Real receivers on 127.0.0.1 for job-type tests: an HTTP server and an SMTP server.

`HttpTarget` answers by path:

| path | answer |
|---|---|
| `/status/<code>` | that status, body `{"status": code}` |
| `/echo` | 200 with `{"method", "path", "query", "headers", "json", "body"}` of the request |
| `/slow/<seconds>` | sleeps, then 200 |
| `/flaky/<key>/<n>` | 503 for the first `n` requests with that key, then 200 `{"attempts": k}` |
| `/text` | 200 `text/plain` |
| `/big` | 200, 600 KB of text |
| `/redirect?to=<url>` | 302 to that URL |
| anything else | 200 and the request is recorded in `posts` (what apprise `json://` sends) |

`SmtpTarget` is aiosmtpd's controller with a handler keeping every delivered message.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class HttpTarget:
    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.flaky: Counter[str] = Counter()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _reply(self, status: int, body: Any, content_type: str = "application/json") -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                raw = self.rfile.read(length) if length else b""
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                try:
                    parsed: Any = json.loads(raw) if raw else None
                except ValueError:
                    parsed = None
                seen = {"method": self.command, "path": url.path,
                        "query": {k: v[0] for k, v in parse_qs(url.query).items()},
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "json": parsed, "body": raw.decode(errors="replace")}
                outer.requests.append(seen)
                if parts[0] == "status":
                    self._reply(int(parts[1]), {"status": int(parts[1])})
                elif parts[0] == "echo":
                    self._reply(200, seen)
                elif parts[0] == "slow":
                    time.sleep(float(parts[1]))
                    self._reply(200, {"slept": float(parts[1])})
                elif parts[0] == "flaky":
                    outer.flaky[parts[1]] += 1
                    if outer.flaky[parts[1]] <= int(parts[2]):
                        self._reply(503, {"error": "try later"})
                    else:
                        self._reply(200, {"attempts": outer.flaky[parts[1]]})
                elif parts[0] == "text":
                    self._reply(200, b"plain words", "text/plain; charset=utf-8")
                elif parts[0] == "redirect":
                    self.send_response(302)
                    self.send_header("Location", seen["query"]["to"])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                elif parts[0] == "big":
                    self._reply(200, b"x" * 600_000, "text/plain")
                else:
                    outer.posts.append(parsed if isinstance(parsed, dict) else {"raw": seen["body"]})
                    self._reply(200, {"ok": True})

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class SmtpTarget:
    """A real SMTP server (aiosmtpd) on 127.0.0.1 keeping every delivered message."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        from tests.conftest import free_port

        self.messages: list[Message] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
                outer.messages.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def wait(self, count: int = 1, timeout: float = 10) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(self.messages) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.messages

    def close(self) -> None:
        self.controller.stop()
