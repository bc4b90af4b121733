"""The one error table: statuses, gRPC codes and the mapping of upstream failures."""

from __future__ import annotations

import grpc
import pytest
from tritonclient.utils import InferenceServerException

from service import errors


@pytest.mark.parametrize(
    ("status", "kind", "http", "code"),
    [
        ("StatusCode.INVALID_ARGUMENT", errors.BadInput, 400, grpc.StatusCode.INVALID_ARGUMENT),
        ("StatusCode.UNAVAILABLE", errors.UpstreamUnavailable, 503, grpc.StatusCode.UNAVAILABLE),
        ("StatusCode.NOT_FOUND", errors.UpstreamUnavailable, 503, grpc.StatusCode.UNAVAILABLE),
        (
            "StatusCode.DEADLINE_EXCEEDED",
            errors.DeadlineExceeded,
            504,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ),
        ("StatusCode.RESOURCE_EXHAUSTED", errors.Overloaded, 503, grpc.StatusCode.UNAVAILABLE),
        ("StatusCode.INTERNAL", errors.UpstreamError, 502, grpc.StatusCode.INTERNAL),
        ("400", errors.BadInput, 400, grpc.StatusCode.INVALID_ARGUMENT),
        ("503", errors.UpstreamUnavailable, 503, grpc.StatusCode.UNAVAILABLE),
        ("500", errors.UpstreamError, 502, grpc.StatusCode.INTERNAL),
        (None, errors.UpstreamError, 502, grpc.StatusCode.INTERNAL),
    ],
)
def test_triton_statuses_map_through_the_table(
    status: str | None, kind: type[errors.ModelGateError], http: int, code: grpc.StatusCode
) -> None:
    mapped = errors.from_upstream(InferenceServerException("details", status=status))
    assert type(mapped) is kind
    assert (mapped.http_status, mapped.grpc_code) == (http, code)
    assert "details" in mapped.message


def test_transport_failures() -> None:
    refused = errors.from_upstream(ConnectionRefusedError(111, "Connection refused"))
    assert isinstance(refused, errors.UpstreamUnavailable) and refused.http_status == 503
    assert refused.headers["Retry-After"] == "1"
    assert isinstance(errors.from_upstream(TimeoutError()), errors.DeadlineExceeded)
    assert isinstance(errors.from_upstream(RuntimeError("x")), errors.UpstreamError)
    own = errors.BadInput("mine")
    assert errors.from_upstream(own) is own


def test_every_error_class_has_a_distinct_status_and_reason() -> None:
    table = {
        errors.BadInput: (400, "bad_input"),
        errors.InvalidRequest: (422, "bad_input"),
        errors.Unauthorized: (401, "unauthorized"),
        errors.ModelNotFound: (404, "not_found"),
        errors.PayloadTooLarge: (413, "too_large"),
        errors.UnsupportedMediaType: (415, "unsupported_media"),
        errors.Overloaded: (503, "overload"),
        errors.UpstreamUnavailable: (503, "upstream"),
        errors.DeadlineExceeded: (504, "timeout"),
    }
    for cls, (status, reason) in table.items():
        assert issubclass(cls, errors.ModelGateError)
        assert (cls.http_status, cls.reason) == (status, reason)
