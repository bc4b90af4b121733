"""The FastAPI application factory."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.backends.base import InferenceBackend
from service.backends.embedded import EmbeddedBackend
from service.backends.triton import TritonBackend
from service.dataplane import DataPlane
from service.errors import ModelGateError
from service.metrics import Metrics
from service.oip import grpc_api, http_api
from service.repository import load_repository
from service.rest import endpoints
from service.rest.middleware import RequestContext
from service.settings import Settings

log = logging.getLogger("service")


def _error(
    status: int, code: str, message: str, request: Request, headers: dict[str, str] | None = None
) -> JSONResponse:
    request_id = getattr(request.state, "request_id", None)
    body = {"error": {"code": code, "message": message}, "request_id": request_id}
    return JSONResponse(body, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ModelGateError)
        return _error(exc.http_status, exc.reason, exc.message, request, exc.headers)

    async def validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        details = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        return _error(422, "bad_input", f"invalid request: {details}", request)

    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        return _error(exc.status_code, code, str(exc.detail), request, dict(exc.headers or {}))

    async def unexpected_error(request: Request, exc: Exception) -> JSONResponse:
        # Logged with its trace here; the client only learns that it was our fault.
        log.error("unhandled error on %s", request.url.path, exc_info=exc)
        return _error(500, "internal", "internal server error", request)

    app.add_exception_handler(ModelGateError, gateway_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway app; reads the repository now so a broken one fails at startup."""
    settings = settings if settings is not None else Settings()
    specs = load_repository(settings.model_repository)
    metrics = Metrics(specs)
    backend: InferenceBackend
    if settings.backend == "embedded":
        backend = EmbeddedBackend(list(specs.values()), threads=settings.embedded_threads)
    else:
        backend = TritonBackend(
            settings.triton_urls,
            settings.triton_protocol,
            settings.triton_timeout_s,
            metrics.triton_up,
        )
    dataplane = DataPlane(settings, specs, backend, metrics)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        readiness = await dataplane.ready()
        if not readiness.ready:
            log.warning("backend not ready yet: %s", readiness.reason)
        grpc_server = None
        try:
            if settings.grpc_enabled:  # OIP gRPC: same process, same event loop, same data plane
                grpc_server = await grpc_api.start_server(dataplane)
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop(settings.shutdown_grace_s)
            await dataplane.close()

    app = FastAPI(
        title="modelgate",
        version="0.1.0",
        description="Preprocessing, batching and metrics in front of Triton Inference Server.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dataplane = dataplane
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    _install_error_handlers(app)
    app.include_router(endpoints.router)
    app.include_router(http_api.router)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory`: each worker reads MODELGATE_* variables."""
    logging.basicConfig(level=Settings().log_level.upper())
    return create_app()
