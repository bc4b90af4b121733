"""Request checks every transport applies in the same way (REST, OIP HTTP, OIP gRPC).

Each transport reads the header or metadata value it has and passes the plain string here, so the
rule and its error message are written once.
"""

from __future__ import annotations

import secrets

from service.errors import AdminDisabled, BadInput, PayloadTooLarge, Unauthorized
from service.settings import Settings


def check_api_key(settings: Settings, authorization: str | None) -> None:
    """Raise `Unauthorized` unless `authorization` is `Bearer <api_key>` (no key set: open)."""
    if settings.api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    expected = settings.api_key.get_secret_value()
    # compare_digest on bytes: constant time, and no TypeError on non-ASCII input
    if scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), expected.encode()):
        # gRPC metadata keys are lower case; HTTP headers match case-insensitively
        raise Unauthorized("missing or invalid API key (send `authorization: Bearer <key>`)")


def check_admin(settings: Settings, authorization: str | None) -> None:
    """Repository control: refused when switched off, else the API key as for inference."""
    if not settings.admin_enabled:
        raise AdminDisabled(
            "repository control is switched off on this gateway (MODELGATE_ADMIN_ENABLED=false)"
        )
    check_api_key(settings, authorization)


def check_declared_size(settings: Settings, content_length: str | None) -> None:
    """Reject a declared body size above `max_body_bytes` before any byte is read.

    No declaration (chunked upload) passes: the HTTP middleware counts the bytes as they arrive.
    """
    if content_length is None:
        return
    if not content_length.isascii() or not content_length.isdigit():
        raise BadInput("invalid Content-Length header")
    size = int(content_length)
    limit = settings.max_body_bytes
    if size > limit:
        raise PayloadTooLarge(f"request body of {size} bytes exceeds the limit of {limit} bytes")
