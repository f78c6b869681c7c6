"""The flow run's console log handler: plain where no terminal shows colours, same text."""

from __future__ import annotations

import io
import logging
import os
from typing import TextIO

import pytest
from prefect.logging.formatters import PrefectFormatter
from prefect.logging.handlers import PrefectConsoleHandler

from flowforge.runtime.console import PlainConsoleHandler, plain_console

FORMAT = "%(levelname)-7s | %(name)s - %(message)s"
TASK_FORMAT = "%(levelname)-7s | Task run %(task_run_name)r - %(message)s"


def _records() -> list[logging.LogRecord]:
    plain = logging.LogRecord("prefect.task_runs", logging.INFO, __file__, 1,
                              "Finished in state %s", ("Completed()",), None)
    plain.task_run_name = "each[7]"
    # What rich would treat specially on a terminal: markup, emoji codes, a URL, long lines.
    odd = logging.LogRecord("prefect.flow_runs", logging.WARNING, __file__, 2,
                            "[bold]not markup[/bold] :smile: http://127.0.0.1:4200/runs " + "x" * 300,
                            (), None)
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("flowforge.test", logging.ERROR, __file__, 3, "failed",
                                   (), sys.exc_info())
    return [plain, odd, failed]


def _handler(stream: TextIO) -> PrefectConsoleHandler:
    handler = PrefectConsoleHandler(stream=stream, level=logging.INFO)
    handler.setFormatter(PrefectFormatter(format=FORMAT, task_run_fmt=TASK_FORMAT))
    return handler


def test_a_console_handler_on_a_pipe_becomes_plain_and_writes_the_same_text() -> None:
    rich_out, plain_out = io.StringIO(), io.StringIO()
    reference = _handler(rich_out)
    logger = logging.getLogger("flowforge.test.console.pipe")
    handler = _handler(plain_out)
    handler.addFilter(lambda record: record.levelno < logging.CRITICAL)
    logger.handlers = [logging.NullHandler(), handler]

    assert plain_console([logger]) == 1
    swapped = logger.handlers[1]
    assert isinstance(swapped, PlainConsoleHandler)
    assert isinstance(logger.handlers[0], logging.NullHandler)  # order and others kept
    assert swapped.stream is plain_out
    assert swapped.level == logging.INFO and swapped.filters == handler.filters
    for record in _records():
        reference.handle(record)
        swapped.handle(record)
    # The same text, bar one rich liberty: it turns emoji codes into emoji. The plain handler
    # writes what was logged, as the Prefect UI (the API handler) shows it.
    assert plain_out.getvalue() == rich_out.getvalue().replace("\N{SMILING FACE WITH OPEN MOUTH AND SMILING EYES}", ":smile:")
    assert "[bold]not markup[/bold] :smile:" in plain_out.getvalue()
    assert "Task run 'each[7]' - Finished in state Completed()" in plain_out.getvalue()
    assert "ValueError: boom" in plain_out.getvalue()

    assert plain_console([logger]) == 0  # idempotent


def test_a_console_handler_on_a_terminal_keeps_prefects_colours() -> None:
    primary, secondary = os.openpty()
    try:
        with open(secondary, "w", closefd=False) as tty:
            logger = logging.getLogger("flowforge.test.console.tty")
            handler = _handler(tty)
            logger.handlers = [handler]
            assert plain_console([logger]) == 0
            assert logger.handlers == [handler]
    finally:
        os.close(primary)
        os.close(secondary)


@pytest.mark.parametrize("closed", [True, False])
def test_a_stream_without_a_terminal_answer_counts_as_not_a_terminal(closed: bool) -> None:
    stream = io.StringIO()
    if closed:
        stream.close()
    logger = logging.getLogger(f"flowforge.test.console.closed{closed}")
    logger.handlers = [_handler(stream)]
    assert plain_console([logger]) == 1
