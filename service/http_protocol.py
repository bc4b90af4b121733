"""uvicorn's httptools protocol, sending each response in one socket write.

uvicorn writes a response's status line and headers, then its body, as two `transport.write`
calls. With TCP_NODELAY (asyncio's default) each is its own send() and its own TCP segment, so
every small JSON answer costs two system calls here and two wake-ups in the client. The
transport below holds the writes made during one event-loop step and sends them together at
the end of that step: the headers and the body of an answer, which uvicorn writes back to back,
leave as one segment. Nothing else changes: the writes keep their order, and a close or an
abort sends or drops what is held first.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Wraps a transport; writes of one loop step go out as one write at its end."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes | bytearray | memoryview] = []

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data)

    def writelines(self, lines: Any) -> None:
        for line in lines:
            self.write(line)

    def _flush(self) -> None:
        if not self._held:
            return
        data = self._held[0] if len(self._held) == 1 else b"".join(self._held)
        self._held.clear()
        if not self._transport.is_closing():
            self._transport.write(data)

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(len(d) for d in self._held)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held.clear()
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        # everything else (extra info, reading pauses, buffer limits) is the real transport's
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` over a `CoalescingTransport` (uvicorn's `http=` option)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses, so no isinstance check)
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
