"""REST error bodies: every failure answers `{"error": {"code", "message"}, "request_id"}`."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import ModelGateError

log = logging.getLogger("service")


def error_response(
    status: int,
    code: str,
    message: str,
    request_id: str | None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The REST error body with its status (and headers such as Retry-After)."""
    body = {"error": {"code": code, "message": message}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def gateway_error(exc: ModelGateError, request_id: str | None) -> JSONResponse:
    """A gateway error as its REST answer."""
    return error_response(exc.http_status, exc.reason, exc.message, request_id, exc.headers)


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


def install_error_handlers(app: FastAPI) -> None:
    """Route every exception the framework sees to the REST error body."""

    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelGateError)
        return gateway_error(exc, _request_id(request))

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return error_response(422, "bad_input", f"invalid request: {details}", _request_id(request))

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return error_response(
            exc.status_code, code, str(exc.detail), _request_id(request), dict(exc.headers or {})
        )

    async def on_unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its trace here; the client only learns that it was our fault.
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return error_response(500, "internal", "internal server error", _request_id(request))

    app.add_exception_handler(ModelGateError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected_error)
