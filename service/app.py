"""Assembly of the whole gateway: backend, data plane, the HTTP app (REST + OIP HTTP routes) and
the OIP gRPC server. It sits above the transports; no transport imports another."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

from fastapi import FastAPI

from service import __version__, drain
from service.backends.base import InferenceBackend
from service.backends.embedded import EmbeddedBackend
from service.backends.triton import TritonBackend
from service.dataplane import DataPlane
from service.fastpath import FastPathApp
from service.lifecycle import ModelManager
from service.metrics import Metrics
from service.oip import grpc_api, http_api, repository_http
from service.repository import ModelSpec, load_repository_versions
from service.rest import endpoints
from service.rest.errors import install_error_handlers
from service.rest.middleware import RequestContext
from service.settings import Settings
from service.workers import AdminLog, embedded_inline_us

if TYPE_CHECKING:
    from service.tracing import RequestTracing

log = logging.getLogger("service")


def create_backend(
    settings: Settings,
    specs: list[ModelSpec],
    metrics: Metrics,
    tracing: RequestTracing | None = None,
) -> InferenceBackend:
    """The backend the settings name."""
    if settings.backend == "embedded":
        return EmbeddedBackend(
            specs,
            threads=settings.embedded_threads,
            inline_rows=settings.embedded_inline_rows,
            inline_us=embedded_inline_us(settings),
        )
    return TritonBackend(
        settings.triton_urls,
        settings.triton_protocol,
        settings.triton_timeout_s,
        metrics.triton_up,
        trace_metadata=tracing.outgoing_metadata if tracing is not None else None,
        config_name=settings.triton_config_name,
    )


def create_tracing(settings: Settings) -> RequestTracing | None:
    """Request tracing when an OTLP endpoint is set; otherwise None, and OpenTelemetry is not
    even imported."""
    if settings.otlp_endpoint is None:
        return None
    from service.tracing import RequestTracing

    return RequestTracing(settings)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the gateway app; reads the repository now so a broken one fails at startup."""
    settings = settings if settings is not None else Settings()
    specs = load_repository_versions(settings.model_repository)
    metrics = Metrics(specs)
    tracing = create_tracing(settings)
    backend = create_backend(
        settings,
        [spec for versions in specs.values() for spec in versions.values()],
        metrics,
        tracing,
    )
    dataplane = DataPlane(settings, specs, backend, metrics, tracing)
    admin_log = (
        AdminLog(settings.admin_log, peers=settings.workers - 1)
        if settings.admin_log is not None and settings.workers > 1
        else None
    )
    manager = ModelManager(settings, dataplane, backend, metrics, admin_log)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await dataplane.start()
        await manager.start()
        readiness = await dataplane.ready()
        if not readiness.ready:
            log.warning("backend not ready yet: %s", readiness.reason)
        grpc_server = None
        try:
            if settings.grpc_enabled:  # OIP gRPC: same process, same event loop, same data plane
                grpc_server = await grpc_api.start_server(dataplane, manager)
            yield
        finally:
            await manager.close()
            if grpc_server is not None:
                await grpc_server.stop(drain.grace_left(settings.shutdown_grace_s))
            await dataplane.close()
            if tracing is not None:  # export what the last requests left queued
                tracing.shutdown()

    app = FastPathApp(
        title="modelgate",
        version=__version__,
        description="Preprocessing, batching and metrics in front of Triton Inference Server.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.dataplane = dataplane
    app.state.model_manager = manager
    app.add_middleware(RequestContext, max_body_bytes=settings.max_body_bytes)
    install_error_handlers(app)
    app.include_router(endpoints.router)
    app.include_router(repository_http.router)  # before http_api's catch-all /v2/...
    app.include_router(http_api.router)
    app.add_fast_route("POST", endpoints.PREDICT_PATH, endpoints.predict)
    app.add_fast_route("POST", endpoints.PREDICT_VERSION_PATH, endpoints.predict)
    app.add_fast_route("POST", http_api.INFER_PATH, http_api.infer)
    app.add_fast_route("POST", http_api.INFER_VERSION_PATH, http_api.infer)
    return app


def create_app_from_env() -> FastAPI:
    """Factory for `uvicorn --factory`: each worker reads MODELGATE_* variables."""
    logging.basicConfig(level=Settings().log_level.upper())
    return create_app()
