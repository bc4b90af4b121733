"""A FastAPI app whose hot routes skip the framework's per-request machinery.

Predict and infer are most of the traffic. Through FastAPI each request passes two framework
middlewares, a regex scan of every route, dependency solving and an exception wrapper before the
endpoint runs; on a small model that was a good part of the gateway's CPU per request. A fast
route calls the very same endpoint function with the same `Request`, inside the same user
middleware (request id, body cap), and turns exceptions into responses with the app's own
exception handlers, so answers and errors are identical. The routes stay registered with FastAPI
as well: they keep their OpenAPI documentation, and any method or path the fast table does not
match is answered by the framework as before.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

Endpoint = Callable[..., Awaitable[Response]]


class _FastRoute:
    """A path template such as `/v1/models/{model}/predict`, matched segment by segment."""

    __slots__ = ("endpoint", "params", "segments")

    def __init__(self, path: str, endpoint: Endpoint) -> None:
        self.segments = path.strip("/").split("/")
        self.params = {
            i: s[1:-1] for i, s in enumerate(self.segments) if s.startswith("{") and s.endswith("}")
        }
        self.endpoint = endpoint

    def match(self, parts: list[str]) -> dict[str, str] | None:
        if len(parts) != len(self.segments):
            return None
        values: dict[str, str] = {}
        for index, (want, got) in enumerate(zip(self.segments, parts, strict=True)):
            name = self.params.get(index)
            if name is not None:
                if not got:
                    return None
                values[name] = got
            elif want != got:
                return None
        return values


class FastPathApp(FastAPI):
    """FastAPI plus a small table of routes answered without routing and dependency solving."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._fast_routes: dict[str, list[_FastRoute]] = {}
        self._fast_stack: ASGIApp | None = None

    def add_fast_route(self, method: str, path: str, endpoint: Endpoint) -> None:
        """Answer `method path` by calling `endpoint(request=..., **path_params)` directly."""
        self._fast_routes.setdefault(method, []).append(_FastRoute(path, endpoint))

    def _match(self, scope: Scope) -> tuple[Endpoint, dict[str, str]] | None:
        routes = self._fast_routes.get(scope["method"])
        if not routes or scope.get("root_path"):
            return None
        parts = scope["path"].strip("/").split("/")
        for route in routes:
            params = route.match(parts)
            if params is not None:
                return route.endpoint, params
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match = self._match(scope)
            if match is not None:
                scope["app"] = self
                scope["fast_route"] = match
                if self._fast_stack is None:
                    self._fast_stack = self._build_fast_stack()
                await self._fast_stack(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _build_fast_stack(self) -> ASGIApp:
        app: ASGIApp = self._run_fast_route
        for middleware in reversed(self.user_middleware):
            cls, args, kwargs = middleware
            app = cls(app, *args, **kwargs)
        return app

    async def _run_fast_route(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint, params = scope["fast_route"]
        scope["path_params"] = params
        request = Request(scope, receive, send)
        try:
            response = await endpoint(request=request, **params)
        except Exception as exc:
            handler = self._exception_handler(exc)
            if handler is None:
                raise
            answer = handler(request, exc)  # the app's handlers are all coroutines
            response = await answer if inspect.isawaitable(answer) else answer
        await response(scope, receive, send)

    def _exception_handler(self, exc: Exception) -> Callable[..., Any] | None:
        for cls in type(exc).__mro__:
            handler = self.exception_handlers.get(cls)
            if handler is not None:
                return handler
        return None
