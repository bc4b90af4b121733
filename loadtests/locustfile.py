"""Locust users for modelgate, one class per SLA target (model x protocol).

    MODELGATE_SLA=loadtests/sla.yaml locust -f loadtests/locustfile.py --host http://localhost:8000

The SLA file (env `MODELGATE_SLA`, default `sla.yaml` next to this file) says
which targets run and with which weights, so a mixed traffic profile is a few
lines of YAML. Each target gets its own user class:

- `rest`    FastHttpUser posting held-out data to `/v1/models/{model}/predict`
- `v2_http` FastHttpUser posting OIP JSON tensors to `/v2/models/{model}/infer`
- `v2_grpc` a gevent-friendly tritonclient gRPC user calling ModelInfer

Request bodies are built once per process before the load starts (see
`loadtests.payloads`); users only pick one and send it.
"""

from __future__ import annotations

import logging
import os
import random
import re
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, ClassVar

import gevent
from locust import FastHttpUser, User, constant, events, task
from locust.env import Environment
from locust.runners import WorkerRunner

from loadtests import payloads
from loadtests.contract import (
    API_KEY_ENV,
    CAPACITY_STEPS_ENV,
    SLA_ENV,
    TARGETS_ENV,
    WARMUP_OVER,
)
from loadtests.sla import Sla, Target, load_sla

logger = logging.getLogger("modelgate.loadtest")

SLA_PATH = Path(os.environ.get(SLA_ENV) or Path(__file__).with_name("sla.yaml")).resolve()
SLA: Sla = load_sla(SLA_PATH)
SELECTED = {n.strip() for n in os.environ.get(TARGETS_ENV, "").split(",") if n.strip()}
TARGETS = [t for t in SLA.targets if not SELECTED or t.name in SELECTED]
if SELECTED - {t.name for t in TARGETS}:
    raise SystemExit(f"{TARGETS_ENV} names unknown targets: {sorted(SELECTED)}")

# A deployment with an API key: read from the environment, never from the SLA file.
AUTHORIZATION = (
    {"Authorization": f"Bearer {os.environ[API_KEY_ENV]}"} if os.environ.get(API_KEY_ENV) else {}
)

if any(t.protocol == "v2_grpc" for t in TARGETS):
    # gRPC's own threads would block gevent's loop; this makes its I/O cooperative.
    # It must run before the first channel is created.
    import grpc.experimental.gevent as grpc_gevent

    grpc_gevent.init_gevent()


def model_repository() -> Path:
    """Where the OIP users read `preprocessing.json` (relative paths: from the SLA file)."""
    if SLA.model_repository:
        return (SLA_PATH.parent / SLA.model_repository).resolve()
    return Path(__file__).resolve().parent.parent / "model_repository"


@cache
def rest_pool(target: Target) -> list[payloads.HttpBody]:
    return payloads.rest_bodies(target)


@cache
def v2_json_pool(target: Target) -> list[payloads.HttpBody]:
    return payloads.v2_json_bodies(target, model_repository())


@cache
def grpc_pool(target: Target) -> list[Any]:
    import tritonclient.grpc as grpcclient

    pool = []
    for request in payloads.tensor_requests(target, model_repository()):
        inputs = []
        for name, array in request.tensors:
            tensor = grpcclient.InferInput(name, list(array.shape), payloads.v2_datatype(array))
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        pool.append(inputs)
    return pool


class SlaTargetUser(User):
    """What every target's user shares: its target and when it is built."""

    abstract = True
    target: ClassVar[Target]
    wait_time = constant(SLA.load.think_time_s)


class HttpTargetUser(FastHttpUser, SlaTargetUser):
    """Posts one pooled body per task; any non-200 answer, or a body `check` rejects, fails."""

    abstract = True
    network_timeout = SLA.request_timeout_s
    connection_timeout = SLA.request_timeout_s

    def post(self, path: str, body: Any, check: Callable[[dict[str, Any]], str | None]) -> None:
        with self.client.post(
            path,
            data=body.body,  # bytes are sent as they are
            headers={"Content-Type": body.content_type, **AUTHORIZATION},
            name=self.target.name,
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
            elif (problem := check(response.json() or {})) is not None:
                response.failure(problem)


class RestPredictUser(HttpTargetUser):
    abstract = True

    @task
    def predict(self) -> None:
        body = random.choice(rest_pool(self.target))

        def check(answer: dict[str, Any]) -> str | None:
            predictions = answer.get("predictions")
            if not isinstance(predictions, list) or len(predictions) != body.items:
                return f"expected {body.items} predictions, got {predictions!r:.200}"
            return None

        self.post(f"/v1/models/{self.target.model}/predict", body, check)


class V2HttpInferUser(HttpTargetUser):
    abstract = True

    @task
    def infer(self) -> None:
        body = random.choice(v2_json_pool(self.target))
        self.post(
            f"/v2/models/{self.target.model}/infer",
            body,
            lambda answer: None if answer.get("outputs") else "response has no outputs",
        )


class V2GrpcInferUser(SlaTargetUser):
    """OIP over gRPC with tritonclient; Locust has no gRPC client, so it reports requests itself."""

    abstract = True

    def on_start(self) -> None:
        import tritonclient.grpc as grpcclient

        assert SLA.grpc_url is not None  # the SLA schema requires it for v2_grpc targets
        self.grpc = grpcclient.InferenceServerClient(url=SLA.grpc_url)

    def on_stop(self) -> None:
        self.grpc.close()

    @task
    def infer(self) -> None:
        inputs = random.choice(grpc_pool(self.target))
        started_at = time.time()
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        try:
            result = self.grpc.infer(
                self.target.model,
                inputs,
                client_timeout=SLA.request_timeout_s,
                headers={k.lower(): v for k, v in AUTHORIZATION.items()},
            )
            length = result.get_response().ByteSize()
        except Exception as exc:  # every failure is a failed request in the statistics
            exception = exc
        self.environment.events.request.fire(
            request_type="gRPC",
            name=self.target.name,
            response_time=(time.perf_counter() - started) * 1000.0,
            response_length=length,
            exception=exception,
            context={},
            start_time=started_at,
            url=SLA.grpc_url,
        )


_BASES: dict[str, type[SlaTargetUser]] = {
    "rest": RestPredictUser,
    "v2_http": V2HttpInferUser,
    "v2_grpc": V2GrpcInferUser,
}
_SUFFIX = {"rest": "Rest", "v2_http": "V2Http", "v2_grpc": "V2Grpc"}


def user_class(target: Target) -> type[SlaTargetUser]:
    """A concrete user class for one target, e.g. `DigitsCnnRestUser`."""
    stem = "".join(p.capitalize() for p in re.split(r"[^A-Za-z0-9]+", target.model) if p)
    name = f"{stem}{_SUFFIX[target.protocol]}User"
    namespace = {"target": target, "weight": target.weight, "__module__": __name__}
    return type(name, (_BASES[target.protocol],), namespace)


# Locust collects the user classes it finds among this module's globals.
globals().update({cls.__name__: cls for cls in map(user_class, TARGETS)})


@events.init.add_listener
def build_payload_pools(environment: Environment, **_kwargs: Any) -> None:
    """Encode every request body before the first user starts (not on a master)."""
    if environment.parsed_options is not None and environment.parsed_options.master:
        return
    started = time.perf_counter()
    builders = {"rest": rest_pool, "v2_http": v2_json_pool, "v2_grpc": grpc_pool}
    for target in TARGETS:
        builders[target.protocol](target)
    # Building blocked gevent's loop; without refreshing its cached clock, timers armed
    # next (such as --run-time) would measure from before the build and fire at once.
    gevent.get_hub().loop.update_now()
    logger.info("payload pools built in %.1f s", time.perf_counter() - started)


@events.test_start.add_listener
def schedule_warmup_reset(environment: Environment, **_kwargs: Any) -> None:
    """Reset the statistics when the warm-up ends, so Locust's report covers only the rest.

    A capacity run resets per step instead (loadtests/capacity_shape.py).
    """
    runner = environment.runner
    if runner is None or isinstance(runner, WorkerRunner) or os.environ.get(CAPACITY_STEPS_ENV):
        return

    def reset_after_warmup() -> None:
        gevent.sleep(SLA.load.warmup_s)
        runner.stats.reset_all()
        logger.info(WARMUP_OVER)

    gevent.spawn(reset_after_warmup)
