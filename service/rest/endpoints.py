"""REST routes: a thin translation between HTTP and the data plane."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException

from service import checks
from service.dataplane import DataPlane
from service.errors import BadInput, InvalidRequest, UnsupportedMediaType
from service.rest.schemas import ErrorResponse, PredictRequest, PredictResponse, ReadinessResponse
from service.routing import CLIENT_HEADER

router = APIRouter()

PREDICT_PATH = "/v1/models/{model}/predict"
PREDICT_VERSION_PATH = "/v1/models/{model}/versions/{version}/predict"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": text}
    for code, text in {
        400: "invalid input (not decodable, wrong shape, too many inputs)",
        401: "missing or wrong API key (only when one is configured)",
        404: "unknown model or version not served",
        413: "body or image too large",
        415: "unsupported media type",
        422: "body does not match the schema",
        503: "overloaded (see Retry-After) or Triton unavailable",
        504: "request deadline passed",
    }.items()
}

_PREDICT_BODY: dict[str, Any] = {
    # top_k is read from the query string by hand (cheaper than a validated dependency on the
    # hot path) and documented here.
    "parameters": [
        {
            "name": "top_k",
            "in": "query",
            "required": False,
            "description": "labels per input (1-1000); overrides `top_k` in the JSON body",
            "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
        }
    ],
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "files": {
                            "type": "array",
                            "items": {"type": "string", "format": "binary"},
                            "description": "one or several image files (image models)",
                        }
                    },
                    "required": ["files"],
                }
            },
        },
    },
}


def _dataplane(request: Request) -> DataPlane:
    dataplane: DataPlane = request.app.state.dataplane
    return dataplane


def check_api_key(request: Request) -> None:
    """`service.checks.check_api_key` on this request's Authorization header."""
    checks.check_api_key(request.app.state.settings, request.headers.get("authorization"))


def _query_top_k(request: Request) -> int | None:
    if not request.scope["query_string"]:  # the common case: no query to parse
        return None
    raw = request.query_params.get("top_k")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise InvalidRequest(f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= value <= 1000:
        raise InvalidRequest(f"top_k must be between 1 and 1000, got {value}")
    return value


async def _payloads(
    request: Request, dataplane: DataPlane, model: str, version: str | None
) -> tuple[list[Any], int | None]:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "application/json":
        body = await request.body()
        try:
            parsed = PredictRequest.model_validate_json(body)
        except ValidationError as exc:
            details = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidRequest(f"invalid JSON body: {details}") from None
        return dataplane.payloads_from_json(model, parsed.inputs, version), parsed.top_k
    if content_type == "multipart/form-data":
        if dataplane.model(model).kind != "image":
            raise UnsupportedMediaType(
                f"model {model} takes JSON; multipart uploads are for image models"
            )
        limit = dataplane.settings.max_items_per_request
        try:
            form = await request.form(max_files=limit, max_fields=limit)
        except StarletteHTTPException as exc:
            raise BadInput(f"invalid multipart body: {exc.detail}") from None
        files = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
        if not files:
            raise BadInput("multipart requests carry their images in the field `files`")
        payloads = [await f.read() for f in files]
        await form.close()
        return payloads, None
    raise UnsupportedMediaType(
        f"content type {content_type or '(none)'} is not supported; "
        "send application/json or multipart/form-data"
    )


@router.post(
    PREDICT_PATH,
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    summary="Predict labels from raw payloads (images, text or sequences)",
    tags=["inference"],
)
@router.post(
    PREDICT_VERSION_PATH,
    response_model=PredictResponse,
    responses=_ERRORS,
    openapi_extra=_PREDICT_BODY,
    summary="Predict with one served version of the model",
    tags=["inference"],
)
async def predict(model: str, request: Request, version: str | None = None) -> Response:
    """Decode, preprocess, batch, infer and return the top-k labels for each input; `version`
    in the answer is the version that produced it."""
    dataplane = _dataplane(request)
    headers = request.headers
    async with dataplane.track(
        model, "predict", "rest", request.state.request_id, headers
    ) as scope:
        checks.check_api_key(dataplane.settings, headers.get("authorization"))
        dataplane.model(model, version)  # 404 before anything is read
        if model in dataplane.routing:  # only a routing policy can use the client's id
            scope.client_key = headers.get(CLIENT_HEADER)
        checks.check_declared_size(dataplane.settings, headers.get("content-length"))
        top_k = _query_top_k(request)
        payloads, body_top_k = await _payloads(request, dataplane, model, version)
        result = await dataplane.predict(
            model, payloads, top_k or body_top_k, scope=scope, version=version
        )
    return Response(
        orjson.dumps(
            {
                "model": result.model,
                "version": result.version,
                "request_id": result.request_id,
                "predictions": result.predictions,
            }
        ),
        media_type="application/json",
    )


@router.get("/v1/models", summary="List the models and their input contracts", tags=["models"])
async def list_models(request: Request) -> dict[str, Any]:
    """Every model in the repository with what it takes and returns."""
    check_api_key(request)
    return {"models": [spec.contract() for spec in _dataplane(request).models()]}


@router.get(
    "/v1/models/{model}", responses=_ERRORS, summary="One model's input contract", tags=["models"]
)
async def get_model(model: str, request: Request) -> dict[str, Any]:
    """The model's input contract, labels and served versions (at its newest version)."""
    check_api_key(request)
    return _dataplane(request).model(model).contract()


@router.get(
    "/v1/models/{model}/versions/{version}",
    responses=_ERRORS,
    summary="One served version's input contract",
    tags=["models"],
)
async def get_model_version(model: str, version: str, request: Request) -> dict[str, Any]:
    """The input contract and labels of one served version."""
    check_api_key(request)
    return _dataplane(request).model(model, version).contract()


@router.get("/healthz", summary="Liveness: the process answers", tags=["health"])
async def healthz() -> dict[str, str]:
    """Always 200 while the process runs."""
    return {"status": "alive"}


@router.get(
    "/readyz",
    response_model=ReadinessResponse,
    responses={
        503: {"model": ReadinessResponse, "description": "backend unreachable or models not loaded"}
    },
    summary="Readiness: Triton reachable and every model loaded",
    tags=["health"],
)
async def readyz(request: Request) -> JSONResponse:
    """200 when the backend can serve every model, 503 with the reason otherwise."""
    readiness = await _dataplane(request).ready()
    body = {"ready": readiness.ready, "reason": readiness.reason, "endpoints": readiness.endpoints}
    return JSONResponse(body, status_code=200 if readiness.ready else 503)


@router.get("/metrics", summary="Prometheus metrics", tags=["health"], response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus text exposition format."""
    if _dataplane(request).settings.protect_metrics:
        check_api_key(request)
    content, content_type = _dataplane(request).metrics.render()
    return Response(content, media_type=content_type)
