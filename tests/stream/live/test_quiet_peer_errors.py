"""What aiortc's own tasks raise when a peer goes is one DEBUG line, not an ERROR with a traceback; any other
unhandled task error keeps asyncio's default handling (an ERROR with the traceback)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import OpenSSL.SSL
import pytest

from stream.live.serve import quiet_aiortc_task_errors


class RTCSctpTransport:
    """Stands in for aiortc's class only by name: the handler knows aiortc's tasks by their coroutine's name."""

    async def _transmit(self, error: Exception) -> None:
        raise error


async def some_task(error: Exception) -> None:
    raise error


async def _report_unretrieved(
    make_coroutine: Callable[[Exception], Coroutine[Any, Any, None]], error: Exception
) -> None:
    """Run a task that fails and report it as asyncio does for an exception nobody retrieved."""
    loop = asyncio.get_running_loop()
    quiet_aiortc_task_errors(loop)
    task = loop.create_task(make_coroutine(error))
    await asyncio.wait([task])
    loop.call_exception_handler(
        {"message": "Task exception was never retrieved", "exception": task.exception(), "future": task}
    )


@pytest.mark.parametrize(
    "error",
    [OpenSSL.SSL.Error([("SSL routines", "", "protocol is shutdown")]), ConnectionError("not connected")],
    ids=["ssl shutdown", "not connected"],
)
def test_an_sctp_task_failing_as_its_peer_closes_is_one_debug_line(
    error: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    asyncio.run(_report_unretrieved(RTCSctpTransport()._transmit, error))
    assert not [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert any("data channel stopped sending" in record.getMessage() for record in caplog.records)


def test_other_task_errors_keep_their_traceback(caplog: pytest.LogCaptureFixture) -> None:
    asyncio.run(_report_unretrieved(some_task, ConnectionError("not connected")))
    (record,) = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert "Task exception was never retrieved" in record.getMessage() and record.exc_info is not None
    # An aiortc SCTP task, but not with a shutdown error: possibly a bug, so it stays loud.
    asyncio.run(_report_unretrieved(RTCSctpTransport()._transmit, ValueError("a bug")))
    assert len([record for record in caplog.records if record.levelno >= logging.ERROR]) == 2
