"""Keep-alive clients through a gateway restart: what each request sent around a SIGTERM got.

Each HTTP client is one `httpx.Client` holding one keep-alive connection, each gRPC client one
stock `tritonclient.grpc` client (one HTTP/2 channel); both send requests back to back in their
own thread. A prober opens a fresh connection for every `/readyz` call, to see when readiness
turns and when new connections are accepted. Every attempt is recorded as one of:

- `ok`: an answer with the expected status;
- `refused`: the connection could not be opened, so nothing was sent (the server had closed its
  listener; a real client would go to another replica);
- `failed`: the request was sent and got no answer, or a wrong one: a dropped request.

A client stops at its first refusal: its server is gone.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import httpx
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

Outcome = Literal["ok", "refused", "failed"]

MODEL = "langid_transformer"
PHRASE = "the weather is nice today"
RAW_INPUT = "TEXT"  # the gateway's raw-payload input of a text model (OIP)


@dataclass(frozen=True)
class Attempt:
    """One request as a client saw it (times: `time.monotonic()`)."""

    client: str
    sent: float
    done: float
    outcome: Outcome
    status: str  # HTTP status code or gRPC status name ("" when there was no answer)
    detail: str = ""
    connection_close: bool = False  # an HTTP answer said `Connection: close`


@dataclass
class RestartRecord:
    """Everything the clients saw around one SIGTERM."""

    signalled: float = 0.0
    exited: float = 0.0
    exit_code: int | None = None
    attempts: list[Attempt] = field(default_factory=list)
    after_signal: dict[str, object] = field(default_factory=dict)  # what `after_signal` saw

    def of(self, client: str) -> list[Attempt]:
        """The attempts of one client (`http-3`) or of a kind of client (`http`, `grpc`)."""
        return [a for a in self.attempts if a.client == client or a.client.startswith(f"{client}-")]

    def count(self, client: str, outcome: Outcome) -> int:
        return sum(1 for a in self.of(client) if a.outcome == outcome)


class _Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.attempts: list[Attempt] = []

    def add(self, attempt: Attempt) -> None:
        with self.lock:
            self.attempts.append(attempt)


def _http_client(
    url: str, name: str, recorder: _Recorder, stop: threading.Event, api_key: str | None
) -> None:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"inputs": [PHRASE], "top_k": 1}
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    with httpx.Client(base_url=url, timeout=30.0, limits=limits, headers=headers) as client:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                response = client.post(f"/v1/models/{MODEL}/predict", json=body)
            except httpx.ConnectError as exc:
                recorder.add(Attempt(name, sent, time.monotonic(), "refused", "", str(exc)))
                return
            except httpx.HTTPError as exc:
                detail = f"{type(exc).__name__}: {exc}"
                recorder.add(Attempt(name, sent, time.monotonic(), "failed", "", detail))
                continue
            closing = response.headers.get("connection", "").lower() == "close"
            outcome: Outcome = "ok" if response.status_code == 200 else "failed"
            detail = "" if outcome == "ok" else response.text[:200]
            status = str(response.status_code)
            recorder.add(Attempt(name, sent, time.monotonic(), outcome, status, detail, closing))


def _refused(exc: InferenceServerException) -> bool:
    """gRPC could not connect at all (nothing was sent), as opposed to an RPC that was cut."""
    message = exc.message() or ""
    return exc.status() == "StatusCode.UNAVAILABLE" and (
        "Connection refused" in message or "failed to connect" in message.lower()
    )


def _grpc_client(
    address: str, name: str, recorder: _Recorder, stop: threading.Event, api_key: str | None
) -> None:
    headers = {"authorization": f"Bearer {api_key}"} if api_key else None
    item = grpcclient.InferInput(RAW_INPUT, [1, 1], "BYTES")
    item.set_data_from_numpy(np.array([[PHRASE.encode()]], dtype=object))
    client = grpcclient.InferenceServerClient(address)
    try:
        while not stop.is_set():
            sent = time.monotonic()
            try:
                client.infer(MODEL, [item], headers=headers, client_timeout=30.0)
            except InferenceServerException as exc:
                outcome: Outcome = "refused" if _refused(exc) else "failed"
                recorder.add(
                    Attempt(name, sent, time.monotonic(), outcome, str(exc.status()), exc.message())
                )
                if outcome == "refused":
                    return
                continue
            recorder.add(Attempt(name, sent, time.monotonic(), "ok", "StatusCode.OK"))
    finally:
        client.close()


def _prober(
    url: str, recorder: _Recorder, stop: threading.Event, until: Callable[[], float]
) -> None:
    """`/readyz` on a fresh connection every 50 ms until `until()` (monotonic) or `stop`."""
    while not stop.is_set() and time.monotonic() < until():
        sent = time.monotonic()
        try:
            response = httpx.get(f"{url}/readyz", timeout=10.0)
        except httpx.ConnectError as exc:
            recorder.add(Attempt("probe", sent, time.monotonic(), "refused", "", str(exc)))
            return
        except httpx.HTTPError as exc:
            detail = f"{type(exc).__name__}: {exc}"
            recorder.add(Attempt("probe", sent, time.monotonic(), "failed", "", detail))
            continue
        outcome: Outcome = "ok" if response.status_code in (200, 503) else "failed"
        recorder.add(Attempt("probe", sent, time.monotonic(), outcome, str(response.status_code)))
        time.sleep(0.05)


def sigterm_under_load(
    process: subprocess.Popen[bytes],
    http_url: str,
    grpc_address: str,
    *,
    http_clients: int = 16,
    grpc_clients: int = 16,
    warmup_s: float = 2.0,
    probe_for_s: float | None = None,
    exit_timeout_s: float = 60.0,
    load_after_exit_s: float = 0.0,
    api_key: str | None = None,
    after_signal: Callable[[], dict[str, object]] | None = None,
) -> RestartRecord:
    """Run the clients for `warmup_s`, SIGTERM `process`, record until it exits.

    `after_signal` runs right after the signal (to ask readiness, say); its answer is kept.

    The prober keeps opening connections for `probe_for_s` seconds after the signal (default:
    until the first refusal), so a test can keep it clear of the instant the listener closes.
    With `load_after_exit_s`, the clients go on that long after the exit (behind a balancer,
    to show that the other replicas take over).
    """
    recorder = _Recorder()
    stop = threading.Event()
    record = RestartRecord()
    signalled = threading.Event()

    def probe_until() -> float:
        if probe_for_s is None or not signalled.is_set():
            return float("inf")
        return record.signalled + probe_for_s

    threads = [
        threading.Thread(target=_http_client, args=(http_url, f"http-{i}", recorder, stop, api_key))
        for i in range(http_clients)
    ]
    threads += [
        threading.Thread(
            target=_grpc_client, args=(grpc_address, f"grpc-{i}", recorder, stop, api_key)
        )
        for i in range(grpc_clients)
    ]
    threads.append(threading.Thread(target=_prober, args=(http_url, recorder, stop, probe_until)))
    for thread in threads:
        thread.start()
    try:
        time.sleep(warmup_s)
        record.signalled = time.monotonic()
        signalled.set()
        os.kill(process.pid, signal.SIGTERM)
        if after_signal is not None:
            record.after_signal = after_signal()
        try:
            record.exit_code = process.wait(timeout=exit_timeout_s)
        except subprocess.TimeoutExpired:
            record.exit_code = None
        record.exited = time.monotonic()
        time.sleep(load_after_exit_s)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    record.attempts = sorted(recorder.attempts, key=lambda a: a.sent)
    return record


@dataclass
class Backend:
    """One replica behind the balancer: where to connect, and where to ask readiness."""

    host: str
    port: int
    readiness_url: str
    ready: bool = False
    connections: int = 0  # opened to it so far


class ReadinessBalancer:
    """A layer-4 load balancer in a thread, as a Kubernetes Service or a cloud load balancer
    acts: each new TCP connection goes to the next backend whose readiness URL last answered
    200 (asked every `probe_s`); an open connection stays with its backend until either side
    closes it.
    """

    def __init__(self, backends: list[Backend], probe_s: float = 0.1) -> None:
        self.backends = backends
        self.probe_s = probe_s
        self.port = 0
        self._turn = itertools.count()
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._main(),))

    def __enter__(self) -> ReadinessBalancer:
        self._thread.start()
        if not self._started.wait(timeout=30):
            raise RuntimeError("the balancer did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with httpx.AsyncClient(timeout=1.0) as client:
            await self._probe(client)  # serve only once the backends' readiness is known
            server = await asyncio.start_server(self._connect, "127.0.0.1", 0)
            self.port = server.sockets[0].getsockname()[1]
            probing = asyncio.create_task(self._keep_probing(client))
            self._started.set()
            async with server:
                await self._stop.wait()
            # connections still open: cut them, as a stopping balancer does
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in [probing, *others]:
                task.cancel()
            await asyncio.gather(probing, *others, return_exceptions=True)

    async def _probe(self, client: httpx.AsyncClient) -> None:
        for backend in self.backends:
            try:
                response = await client.get(backend.readiness_url)
                backend.ready = response.status_code == 200
            except httpx.HTTPError:
                backend.ready = False

    async def _keep_probing(self, client: httpx.AsyncClient) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            await self._probe(client)

    async def _connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        ready = [b for b in self.backends if b.ready]
        if not ready:
            writer.close()
            return
        backend = ready[next(self._turn) % len(ready)]
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                backend.host, backend.port
            )
        except OSError:
            writer.close()
            return
        backend.connections += 1
        await asyncio.gather(
            self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer)
        )
        for side in (writer, upstream_writer):
            side.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy one direction; pass its end on (a half-close, or a close after an error)."""
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                writer.write_eof()
        except OSError:
            writer.close()
