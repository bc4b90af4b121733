"""OIP repository extension over HTTP: index, load and unload models in a running gateway.

Thin: authorisation (service/checks.py) and the protocol's JSON in and out; the work is done by
service/lifecycle.py. Errors are the protocol's `{"error": "<message>"}` with the status of the
gateway's error table, so tritonclient's `load_model`, `unload_model` and
`get_model_repository_index` raise `InferenceServerException` with the message.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from service import checks
from service.errors import BadInput, ModelGateError
from service.lifecycle import ModelManager

router = APIRouter(tags=["open inference protocol: repository"])


def _manager(request: Request) -> ModelManager:
    manager: ModelManager = request.app.state.model_manager
    return manager


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def _error(exc: ModelGateError) -> JSONResponse:
    return JSONResponse({"error": exc.message}, status_code=exc.http_status, headers=exc.headers)


@router.post("/v2/repository/index", summary="Every model version in the repository, with state")
async def repository_index(request: Request) -> Response:
    """`[{"name", "version", "state", "reason"}]`; `{"ready": true}` lists only READY ones."""
    try:
        manager = _manager(request)
        checks.check_admin(manager.settings, request.headers.get("authorization"))
        ready_only = bool((await _body(request)).get("ready", False))
    except ModelGateError as exc:
        return _error(exc)
    rows = [r.as_dict() for r in manager.index() if not ready_only or r.state == "READY"]
    return Response(orjson.dumps(rows), media_type="application/json")


@router.post("/v2/repository/models/{model}/load", summary="Load or reload a model")
async def repository_load(model: str, request: Request) -> Response:
    """Validate, load, warm and switch to the model's versions on disk (service/lifecycle.py);
    200 once they serve, 400 with the reason when they do not (the previous versions serve)."""
    try:
        manager = _manager(request)
        checks.check_admin(manager.settings, request.headers.get("authorization"))
        parameters = (await _body(request)).get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadInput("parameters must be a JSON object")
        overrides = sorted(k for k in parameters if k == "config" or k.startswith("file:"))
        if overrides:
            raise BadInput(
                f"load overrides {overrides} are not supported: write the files into the "
                "repository and load again"
            )
        await manager.load(model)
    except ModelGateError as exc:
        return _error(exc)
    return JSONResponse({})


@router.post("/v2/repository/models/{model}/unload", summary="Unload a model")
async def repository_unload(model: str, request: Request) -> Response:
    """Stop serving every version of the model once their queued requests are answered."""
    try:
        manager = _manager(request)
        checks.check_admin(manager.settings, request.headers.get("authorization"))
        await _body(request)
        await manager.unload(model)
    except ModelGateError as exc:
        return _error(exc)
    return JSONResponse({})
