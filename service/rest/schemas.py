"""Request and response bodies of the REST API (they also document the OpenAPI schema)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class PredictRequest(BaseModel):
    """JSON body of `POST /v1/models/{model}/predict`."""

    model_config = ConfigDict(extra="forbid")

    inputs: Any = Field(
        ...,
        description=(
            "Image models: a base64 string or a list of them. Text models: a string or a list. "
            "Sequence models: a list of timesteps (each a list of channel values) or a list "
            "of those."
        ),
        examples=[["bonjour tout le monde", "the weather is nice today"]],
    )
    top_k: int | None = Field(
        None, ge=1, le=1000, description="Labels per input (the query parameter wins)."
    )


class LabelScore(BaseModel):
    """One label and its probability."""

    label: str
    probability: float


class Prediction(BaseModel):
    """Answer for one input."""

    label: str
    probability: float
    top_k: list[LabelScore]
    ood_score: float | None = Field(
        None,
        description="How far the input lies from the model's training data (higher: further); "
        "absent when out-of-distribution monitoring is off.",
    )
    ood: bool | None = Field(
        None,
        description="True when `ood_score` is above the threshold calibrated on held-out data: "
        "the answer is likely meaningless for this input.",
    )


class PredictResponse(BaseModel):
    """Answer of a predict call: one prediction per input, in order."""

    model: str
    version: str
    request_id: str
    predictions: list[Prediction]


class ErrorDetail(BaseModel):
    """What went wrong, for a client to act on."""

    code: str = Field(
        ..., description="bad_input, not_found, too_large, unsupported_media, overload, ..."
    )
    message: str


class ErrorResponse(BaseModel):
    """Body of every error response."""

    error: ErrorDetail
    request_id: str | None = None


class ReadinessResponse(BaseModel):
    """Body of `GET /readyz`."""

    ready: bool
    reason: str = ""
    endpoints: dict[str, bool] = {}
