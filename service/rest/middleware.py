"""Pure ASGI middleware (cheaper than BaseHTTPMiddleware on the hot path)."""

from __future__ import annotations

import re

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.dataplane import new_request_id
from service.errors import PayloadTooLarge

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,64}$")


class RequestContext:
    """Gives each request an id (the client's `X-Request-ID` if sane) and caps the body size.

    The cap counts bytes as they arrive, so a chunked upload without Content-Length is cut off
    at the limit instead of being read whole; the endpoint also rejects a too-large
    Content-Length before reading anything.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                candidate = value.decode("latin-1")
                if _REQUEST_ID.match(candidate):
                    request_id = candidate
                break
        request_id = request_id or new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body larger than {limit} bytes")
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = message.setdefault("headers", [])
                if any(key.lower() == b"x-request-id" for key, _ in headers):
                    MutableHeaders(scope=message)["X-Request-ID"] = request_id
                else:  # the usual case: append without building a header object
                    message["headers"] = [*headers, (b"x-request-id", request_id.encode())]
            await send(message)

        await self.app(scope, limited_receive, send_with_id)
