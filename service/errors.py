"""One error model for every transport.

Each failure is a `ModelGateError` subclass carrying the HTTP status, the gRPC status code and a
short machine-readable `reason` (also the `reason` label of `modelgate_errors_total`). REST, OIP
HTTP and OIP gRPC only translate these; `from_upstream` is the one table that maps errors coming
back from Triton (tritonclient exceptions, gRPC codes, HTTP statuses, connection failures).
"""

from __future__ import annotations

import grpc
from tritonclient.utils import InferenceServerException


class ModelGateError(Exception):
    """Root of every error the gateway reports to a client."""

    http_status: int = 500
    grpc_code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    reason: str = "internal"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})


class BadInput(ModelGateError):
    """The payload cannot be used: wrong type, not an image, wrong shape or datatype."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "bad_input"


class InvalidRequest(BadInput):
    """The request body does not match the documented schema."""

    http_status = 422


class ModelNotFound(ModelGateError):
    """No such model (or version) in the repository."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND
    reason = "not_found"


class PayloadTooLarge(ModelGateError):
    """Body, image or message larger than allowed."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"


class UnsupportedMediaType(ModelGateError):
    """A content type the endpoint does not take."""

    http_status = 415
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "unsupported_media"


class Unauthorized(ModelGateError):
    """Missing or wrong API key."""

    http_status = 401
    grpc_code = grpc.StatusCode.UNAUTHENTICATED
    reason = "unauthorized"


class AdminDisabled(ModelGateError):
    """Repository control (load, unload, index) is switched off in the settings."""

    http_status = 403
    grpc_code = grpc.StatusCode.PERMISSION_DENIED
    reason = "forbidden"


class ModelLoadFailed(ModelGateError):
    """A model (version) could not be loaded: bad config, unreadable or mismatched ONNX, a
    backend that refused it, or no answer to its warm-up; what served before still serves."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "load_failed"


class Overloaded(ModelGateError):
    """The model's queue is full (or the gateway is shutting down): retry later."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "overload"

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message, headers={"Retry-After": str(retry_after_s)})


class DeadlineExceeded(ModelGateError):
    """The request's deadline passed before an answer was ready."""

    http_status = 504
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED
    reason = "timeout"


class UpstreamUnavailable(ModelGateError):
    """Triton cannot be reached or the model is not loaded there."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "upstream"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"Retry-After": "1"})


class UpstreamError(ModelGateError):
    """Triton answered with an error the client cannot fix."""

    http_status = 502
    grpc_code = grpc.StatusCode.INTERNAL
    reason = "upstream"


# Triton's status (gRPC code name or HTTP status as tritonclient reports it) -> gateway error.
_UPSTREAM_TABLE: dict[str, type[ModelGateError]] = {
    "StatusCode.INVALID_ARGUMENT": BadInput,
    "StatusCode.OUT_OF_RANGE": BadInput,
    "StatusCode.FAILED_PRECONDITION": BadInput,
    "StatusCode.NOT_FOUND": UpstreamUnavailable,  # the repository has it, Triton has not loaded it
    "StatusCode.UNAVAILABLE": UpstreamUnavailable,
    "StatusCode.CANCELLED": UpstreamUnavailable,
    "StatusCode.RESOURCE_EXHAUSTED": Overloaded,
    "StatusCode.DEADLINE_EXCEEDED": DeadlineExceeded,
    "StatusCode.UNAUTHENTICATED": UpstreamError,
    "StatusCode.PERMISSION_DENIED": UpstreamError,
    "StatusCode.UNIMPLEMENTED": UpstreamError,
    "StatusCode.INTERNAL": UpstreamError,
    "StatusCode.UNKNOWN": UpstreamError,
    "400": BadInput,
    "404": UpstreamUnavailable,
    "408": DeadlineExceeded,
    "429": Overloaded,
    "503": UpstreamUnavailable,
    "504": DeadlineExceeded,
}


def from_upstream(exc: BaseException) -> ModelGateError:
    """Map an exception raised while talking to the backend to the gateway's error model."""
    if isinstance(exc, ModelGateError):
        return exc
    if isinstance(exc, InferenceServerException):
        status = str(exc.status() or "")
        return _UPSTREAM_TABLE.get(status, UpstreamError)(f"inference server: {exc.message()}")
    if isinstance(exc, grpc.aio.AioRpcError):  # the gateway's own gRPC calls to Triton
        kind = _UPSTREAM_TABLE.get(str(exc.code()), UpstreamError)
        return kind(f"inference server: {exc.details()}")
    if isinstance(exc, TimeoutError):  # asyncio.TimeoutError is the same class since 3.11
        return DeadlineExceeded("inference server did not answer in time")
    if isinstance(exc, OSError):  # refused / reset connections (aiohttp errors derive from it)
        return UpstreamUnavailable(f"inference server unreachable: {exc}")
    return UpstreamError(f"inference server call failed: {type(exc).__name__}")
