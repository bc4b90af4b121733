"""Gateway settings: one pydantic-settings class, read from `MODELGATE_*` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the gateway can be told; invalid values fail at startup with the field name."""

    model_config = SettingsConfigDict(
        env_prefix="MODELGATE_",
        use_attribute_docstrings=True,
        extra="forbid",
        validate_default=True,
    )

    model_repository: Path = Path("model_repository")
    """Triton model repository the gateway reads configs, preprocessing files and labels from."""

    backend: Literal["triton", "embedded"] = "triton"
    """Where inference runs: `triton` (a Triton server) or `embedded` (in-process ONNX Runtime)."""

    triton_url: str = "localhost:8001"
    """Triton endpoint(s) as host:port; several (comma-separated) share batches round-robin."""

    triton_protocol: Literal["grpc", "http"] = "grpc"
    """Protocol used to talk to Triton (the URL must be that protocol's port)."""

    triton_timeout_s: float = Field(default=10.0, gt=0)
    """Upper bound for one call to Triton, in seconds."""

    triton_config_name: str | None = None
    """Triton's `--model-config-name` (e.g. `gpu`): when the gateway has Triton load a model it
    sends `<model>/configs/<name>.pbtxt` where the model has one, config.pbtxt otherwise."""

    host: str = "127.0.0.1"
    """Interface the REST server binds to."""

    port: int = Field(default=8080, ge=0, le=65535)
    """Port the REST server (REST API, OIP HTTP, health, metrics) listens on. Not Triton's 8000:
    gateway and Triton often share a host."""

    grpc_enabled: bool = True
    """Also serve the Open Inference Protocol over gRPC (same process, port `grpc_port`)."""

    grpc_port: int = Field(default=8081, ge=1, le=65535)
    """Port of the OIP gRPC server (the HTTP port + 1, as Triton pairs 8000/8001)."""

    grpc_max_message_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest gRPC message received or sent in bytes (larger: RESOURCE_EXHAUSTED)."""

    workers: int = Field(default=0, ge=0, le=64)
    """uvicorn worker processes; 0 (the default): what fits the machine, one per core the process
    may use with the embedded backend and half of them in front of Triton, at most 8
    (service/workers.py). Above 1, metrics use Prometheus multiprocess mode and admin loads and
    unloads reach every worker (`admin_log`)."""

    max_batch_size: int | None = Field(default=None, ge=1)
    """Largest gateway batch in rows; default: the model's `max_batch_size` from config.pbtxt."""

    max_batch_delay_ms: float | None = Field(default=None, ge=0)
    """Longest the oldest queued request waits for a batch to fill; default: the model's
    `max_queue_delay_microseconds` (0 means: send whatever has queued as soon as a slot is free)."""

    batch_concurrency: int = Field(default=1, ge=1, le=64)
    """Batches in flight to the backend at once, per model and per Triton endpoint. One keeps
    the backend busy with larger batches: on a CPU-bound host each call to Triton costs the
    gateway a good part of what handling a request costs, so fewer, fuller batches serve more
    (raise it for a Triton with several model instances or GPUs)."""

    length_buckets: bool = False
    """Pad variable-length inputs (tokens, sequence steps) to multiples of 8 so that batches
    share shapes, which Triton's dynamic batcher needs to merge batches from several gateway
    workers, replicas or direct clients. Off, each batch is padded to its longest row only:
    less model work, and faster in every measured setup, with Triton too (service/README.md)."""

    max_queue_size: int = Field(default=256, ge=1)
    """Rows that may wait in one model's queue; beyond that requests get 503 with Retry-After."""

    request_timeout_s: float = Field(default=5.0, gt=0)
    """Deadline of one request from arrival; past it the request gets 504 (and leaves the queue)."""

    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    """Largest accepted request body in bytes (413 above, checked before the body is read)."""

    max_items_per_request: int = Field(default=64, ge=1)
    """Most payloads (images, texts, sequences) in one predict request."""

    max_image_pixels: int = Field(default=16_000_000, ge=1)
    """Largest decoded image (width x height); larger images are rejected as decompression bombs."""

    default_top_k: int = Field(default=5, ge=1)
    """Labels returned per input when the request does not say."""

    api_key: SecretStr | None = None
    """When set, inference and model routes (`/v1/...`, `/v2/models/...`, gRPC model calls) need
    `Authorization: Bearer <api_key>` (gRPC: `authorization` metadata); unset means open."""

    admin_enabled: bool = True
    """Serve repository control (OIP `/v2/repository/...` over HTTP and gRPC, `modelgate
    repository`): index, load and unload models. They need the API key when one is set; off,
    they answer 403 / PERMISSION_DENIED."""

    watch_interval_s: float = Field(default=2.0, ge=0)
    """How often the gateway looks for changed models in the repository (file sizes and
    modification times) and loads what changed; 0 turns the watch off (admin calls only)."""

    load_timeout_s: float = Field(default=120.0, gt=0)
    """Upper bound for loading one model (validation, the backend's load, warm-up)."""

    admin_log: Path | None = None
    """With several workers: the file through which they share admin loads and unloads, so
    that each is made in every worker before it is answered. `modelgate serve` sets it to a
    fresh file for its workers; leave it unset."""

    protect_metrics: bool = False
    """Also require the API key on `/metrics` (health endpoints stay open)."""

    shutdown_grace_s: float = Field(default=10.0, ge=0)
    """On shutdown, how long in-flight and queued requests may take to finish."""

    drain_s: float = Field(default=5.0, ge=0)
    """After SIGTERM, how long the gateway reports not-ready yet keeps serving and accepting
    connections, so load balancers stop routing to it before it closes (with several workers,
    each drains, and their windows end together). The process then exits within `drain_s` +
    `shutdown_grace_s`; deployments must allow that much (terminationGracePeriodSeconds,
    stop_grace_period). 0: close at once."""

    grpc_max_connection_age_s: float | None = Field(default=None, gt=0)
    """OIP gRPC connections older than this get a graceful GOAWAY and clients reconnect (no
    call fails). Long-lived HTTP/2 connections otherwise stay on a draining gateway until it
    closes them; below `drain_s` they move to other replicas within the drain window. Unset:
    connections live until the gateway stops."""

    embedded_threads: int = Field(default=1, ge=1, le=64)
    """ONNX Runtime intra-op threads per model for the embedded backend."""

    embedded_inline_rows: int = Field(default=16, ge=0, le=4096)
    """Embedded backend: batches of more rows than this run in a worker thread, never on the
    event loop. 0: always a thread."""

    embedded_inline_us: float | None = Field(default=None, ge=0)
    """Embedded backend: a batch expected to take at most this many microseconds (the model
    version's measured time per row, a moving average, times the rows) runs on the event loop
    itself, as handing it to a thread and back would cost the loop about as much; a longer one
    runs in a worker thread while the loop serves other requests. 0: always a thread. Unset: 400
    while the machine has more cores than there are workers (the thread runs on a spare one),
    otherwise no limit by time (every core has a worker already; service/workers.py)."""

    ood_enabled: bool = True
    """Score every input for how far it lies from the model's training data and flag those past
    the calibrated threshold (`ood_score`/`ood` in answers, `modelgate_ood_*` metrics; needs the
    version's ood.json, written by `modelgate build`). Off: no scoring and no such fields."""

    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    """Log level of the gateway and uvicorn."""

    access_log: bool = False
    """One uvicorn log line per HTTP request. Off by default: it costs CPU on the hot path, and
    the metrics and `X-Request-ID` already account for every request."""

    otlp_endpoint: str | None = None
    """OpenTelemetry collector that receives a trace of each request over OTLP: for `grpc`
    `http://host:4317`, for `http/protobuf` `http://host:4318/v1/traces` (https: TLS). Unset or
    empty: no tracing at all (no tracer, no spans, client `traceparent` headers not read)."""

    otlp_protocol: Literal["grpc", "http/protobuf"] = "grpc"
    """OTLP transport of `otlp_endpoint`."""

    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)
    """Share of requests traced when the client sends no `traceparent`; a client's
    `traceparent` decides for its own requests (parent-based sampling)."""

    trace_service_name: str = Field(default="modelgate", min_length=1)
    """`service.name` of the gateway's spans (Triton's are `triton` in the shipped setups)."""

    @field_validator("otlp_endpoint")
    @classmethod
    def _check_otlp_endpoint(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None  # an empty variable (compose's `${VAR:-}`) means off
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError(
                f"OTLP endpoint {value!r} must be a URL such as http://otel-collector:4317"
            )
        return value

    routing_reload_s: float = Field(default=1.0, gt=0, le=3600)
    """How often the gateway checks each model's routing.json for changes (mtime), in seconds:
    a `modelgate rollout` step is in force within this long. The request path never reads it."""

    shadow_max_inflight: int = Field(default=32, ge=1, le=4096)
    """Shadow copies (routing.json `shadow`) running at once per gateway process; a copy beyond
    this is dropped, never queued, so shadow work cannot pile up behind real requests."""

    shadow_queue_fraction: float = Field(default=0.5, gt=0, le=1)
    """A shadow copy is dropped when the primary's or the shadow version's batch queue holds more
    than this fraction of `max_queue_size` rows: shadow traffic gives way first under load."""

    drift_monitoring: bool = True
    """Compare each model version's recent inputs and outputs with its reference profile
    (`reference_profile.json`) and export the distances as `modelgate_drift_psi`. Off: no
    feature is computed and nothing is stored per request."""

    drift_window_items: int = Field(default=500, ge=10, le=1_000_000)
    """Items (not requests) in each model version's sliding drift window: the last N answered."""

    drift_min_items: int = Field(default=300, ge=1)
    """Items a window needs before its distances are published (NaN until then). Smaller
    windows are noisier: on held-out data the largest feature PSI reads up to about 0.4 at 100
    items, 0.11 at 300, 0.06 at 500 (docs/monitoring.md)."""

    drift_refresh_s: float = Field(default=5.0, gt=0)
    """With several worker processes: how often each recomputes its drift gauges (a single
    process recomputes them on every scrape of `/metrics`)."""

    @field_validator("triton_url")
    @classmethod
    def _check_urls(cls, value: str) -> str:
        urls = [u.strip() for u in value.split(",") if u.strip()]
        if not urls:
            raise ValueError("at least one Triton endpoint is needed (host:port)")
        for url in urls:
            if "://" in url or ":" not in url:
                raise ValueError(f"Triton endpoint {url!r} must be host:port without a scheme")
        return ",".join(urls)

    @model_validator(mode="after")
    def _check_repository(self) -> Settings:
        if not self.model_repository.is_dir():
            raise ValueError(f"model_repository {str(self.model_repository)!r} is not a directory")
        return self

    @property
    def triton_urls(self) -> list[str]:
        """The Triton endpoints as a list."""
        return self.triton_url.split(",")
