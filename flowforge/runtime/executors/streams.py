"""A job's output as lines, as every executor hands it to the Prefect log while the job runs."""

from __future__ import annotations

import os
import re
from collections import deque
from typing import Final

from flowforge.runtime.executors.base import LogFn

STDERR_TAIL_LINES: Final = 20
MAX_LINE_BYTES: Final = 64 * 1024
PROGRESS_LINE: Final = re.compile(r"^\[progress [0-9.]+%\]")


class Lines:
    """Splits one stream's bytes into text lines; UTF-8 boundaries always fall on b"\\n"."""

    def __init__(self, stream: str) -> None:
        self.stream = stream
        self.pending = b""

    def feed(self, data: bytes) -> list[str]:
        self.pending += data
        *lines, self.pending = self.pending.split(b"\n")
        if len(self.pending) > MAX_LINE_BYTES:  # a huge line without "\n": log it in pieces
            lines.append(self.pending)
            self.pending = b""
        return [decode(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self.pending = self.pending, b""
        return [decode(rest)] if rest else []


def decode(line: bytes) -> str:
    return line.decode("utf-8", errors="replace").removesuffix("\r")


class Output:
    """A job's stdout and stderr pipes as lines, each handed to `log` as it completes; the
    last stderr lines (progress reports aside) are kept for the error message."""

    def __init__(self, stdout: int, stderr: int, log: LogFn) -> None:
        self.pipes = {stdout: Lines("stdout"), stderr: Lines("stderr")}
        self.tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        self._log = log

    def read(self, fd: int) -> bool:
        """Read what pipe `fd` has (call when it is readable); False once it is at its end."""
        data = os.read(fd, 65536)
        lines = self.pipes[fd]
        self.emit(lines.stream, lines.feed(data) if data else lines.flush())
        return bool(data)

    def flush(self) -> None:
        """Log whatever is left without a final newline."""
        for lines in self.pipes.values():
            self.emit(lines.stream, lines.flush())

    def emit(self, stream: str, lines: list[str]) -> None:
        for line in lines:
            if stream == "stderr" and not PROGRESS_LINE.match(line):
                self.tail.append(line)
            self._log(stream, line)


__all__ = ["MAX_LINE_BYTES", "PROGRESS_LINE", "STDERR_TAIL_LINES", "Lines", "Output", "decode"]
