"""The coalescing transport: the writes of one loop step leave as one write, in order."""

from __future__ import annotations

import asyncio
from typing import Any

from service.http_protocol import CoalescingTransport


class RecordingTransport:
    """The part of an asyncio transport that CoalescingTransport uses, recording the calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str) -> Any:
        return ("127.0.0.1", 1234) if name == "peername" else None


async def _one_step() -> None:
    await asyncio.sleep(0)


def test_writes_of_one_step_leave_as_one_write_in_order() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"HTTP/1.1 200 OK\r\n\r\n")
        transport.write(memoryview(b"body"))
        assert real.calls == []  # held until the end of the step
        assert transport.get_write_buffer_size() == 7 + 19 + 4
        await _one_step()
        transport.write(b"next")
        await _one_step()
        return real.calls

    calls = asyncio.run(scenario())
    assert calls == [("write", b"HTTP/1.1 200 OK\r\n\r\nbody"), ("write", b"next")]


def test_close_sends_what_is_held_first_and_abort_drops_it() -> None:
    async def scenario() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        loop = asyncio.get_running_loop()
        closed, aborted = RecordingTransport(), RecordingTransport()
        for real, end in ((closed, "close"), (aborted, "abort")):
            transport = CoalescingTransport(real, loop)
            transport.writelines([b"a", b"b"])
            getattr(transport, end)()
        await _one_step()  # the scheduled flushes find nothing left to send
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(scenario())
    assert closed == [("write", b"ab"), ("close", None)]
    assert aborted == [("abort", None)]


def test_a_closing_transport_gets_no_write_and_other_calls_pass_through() -> None:
    async def scenario() -> list[tuple[str, Any]]:
        real = RecordingTransport()
        transport = CoalescingTransport(real, asyncio.get_running_loop())
        transport.write(b"late")
        real.closing = True  # the peer went away before the step ended
        await _one_step()
        assert transport.get_extra_info("peername") == ("127.0.0.1", 1234)
        return real.calls

    assert asyncio.run(scenario()) == []
