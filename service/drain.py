"""Graceful restarts: on SIGTERM the gateway drains before it stops, so no request is dropped.

uvicorn's own shutdown closes the listener at once and closes every idle keep-alive connection
at once. A client that is just writing its next request on such a connection loses it, and a load
balancer that has not yet noticed the restart keeps routing to a closed port. Here, on the first
SIGTERM (or SIGINT):

1. readiness turns false at once (`/readyz` 503, OIP `/v2/health/ready` 400, gRPC `ServerReady`
   false: all three ask `DataPlane.ready`, which asks `draining()`);
2. for `drain_s` seconds everything else goes on as before: requests are served and new
   connections accepted, while load balancers take the instance out of rotation;
3. then new connections are refused (the listener closes), every response from then on carries
   `Connection: close` (uvicorn closes the connection after sending it), and a connection with
   no request in flight is closed once it has been idle for `IDLE_CLOSE_S`;
4. uvicorn's lifespan shutdown follows: the OIP gRPC server stops (GOAWAY; RPCs in flight finish),
   queued batches finish, and the process exits with code 0. Steps 3 and 4 share one budget,
   `shutdown_grace_s` from the window's end (`grace_left`).
   grpc-core cancels calls that reach a server whose shutdown has begun, so gRPC clients should
   be gone by then: `grpc_max_connection_age_s` below `drain_s` sends each connection a
   graceful GOAWAY during the window, and the clients reconnect elsewhere.

A second SIGTERM or SIGINT during the drain window ends the window at once (step 3 starts, no
request in flight is given up); a SIGINT after that forces the exit as uvicorn does.

With several worker processes (`run_workers`) each worker drains this way; their supervisor
passes the signals on at once and the workers end their windows together (`_Supervisor`).
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import signal
import socket
import sys
import time
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import multiprocess

log = logging.getLogger(__name__)

# A client that sends continuously reuses its connection within milliseconds of the previous
# answer. One that has been silent this long is not sending; closing its connection is what
# uvicorn's keep-alive timeout would do anyway. Until then the connection stays open, so a
# request written after the drain window gets its answer (with `Connection: close`) instead
# of meeting a closed socket.
IDLE_CLOSE_S = 1.0

# How often the closing phase looks at the open connections.
_CLOSE_POLL_S = 0.02

_CONNECTION_CLOSE = (b"connection", b"close")

# With several workers, how long each waits after closing its listener before it tells clients
# to close their connections: longer than uvicorn's 0.1 s between the checks that notice the
# window's end, so every worker has closed its listener by then.
_WORKERS_SETTLE_S = 0.3


class _WorkerWindow:
    """The drain window of a supervisor's workers. `ends` (monotonic seconds, 0 until a stop
    signal) lives in shared memory: every worker ends its window at the same instant, however
    late the signal reached it."""

    def __init__(self, drain_s: float) -> None:
        self.drain_s = drain_s
        # uvicorn spawns its workers; a value of that context can travel to them.
        self.ends = multiprocessing.get_context("spawn").Value("d", 0.0, lock=False)


class _DrainState:
    """Whether this process is draining, and when its shutdown must be over (monotonic seconds,
    None until the shutdown starts). Process-wide, as the signal that starts it is."""

    def __init__(self) -> None:
        self.draining = False
        self.shutdown_ends: float | None = None


_state = _DrainState()


def draining() -> bool:
    """True from the first SIGTERM/SIGINT on: the instance must be taken out of rotation."""
    return _state.draining


def grace_left(grace_s: float) -> float:
    """How long the next shutdown step may take: `grace_s`, or less once the server's shutdown
    has started, so that all its steps together (closing connections, stopping the gRPC server,
    finishing queued batches) end within one grace period, as the deployments' stop budgets
    assume (drain window + shutdown grace)."""
    ends = _state.shutdown_ends
    if ends is None:
        return grace_s
    return max(0.0, min(grace_s, ends - time.monotonic()))


def _busy(connection: Any) -> bool:
    """Whether an HTTP connection (uvicorn's httptools or h11 protocol) has a request in flight."""
    cycle = getattr(connection, "cycle", None)
    return cycle is not None and not cycle.response_complete


class DrainingServer(uvicorn.Server):
    """`uvicorn.Server` with a drain window between the stop signal and its shutdown."""

    def __init__(
        self, config: uvicorn.Config, drain_s: float, workers: _WorkerWindow | None = None
    ) -> None:
        super().__init__(config)
        self.drain_s = drain_s
        self._workers = workers  # the shared window, when this is one of several workers
        self._drain_ends: float | None = None
        self._announced = False

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Runs as a signal handler: only sets flags, which `on_tick` acts on (as uvicorn's does).
        # The signal is not recorded for re-raising: a drained shutdown is a clean exit, code 0.
        if self._drain_ends is None:
            _state.draining = True
            shared = self._workers.ends.value if self._workers is not None else 0.0
            self._drain_ends = shared if shared > 0 else time.monotonic() + self.drain_s
        elif not self.should_exit:
            self._drain_ends = time.monotonic()  # a second signal cuts the drain window short
        elif sig == signal.SIGINT:
            self.force_exit = True

    async def on_tick(self, counter: int) -> bool:
        if self._drain_ends is not None:
            remaining = self._drain_ends - time.monotonic()
            if not self._announced:
                self._announced = True
                log.warning(
                    "stop signal received: not ready; serving for %.1f s more, then closing "
                    "connections (a second signal shortens the wait)",
                    max(remaining, 0.0),
                )
            if remaining <= 0:
                self.should_exit = True
        return await super().on_tick(counter)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        _state.draining = True  # also when uvicorn stops for a reason of its own
        limit = self.config.timeout_graceful_shutdown
        if limit is not None:  # one budget for every step from here on (`grace_left`)
            _state.shutdown_ends = time.monotonic() + limit
        for server in self.servers:  # new connections are refused from now on
            server.close()
        for sock in sockets or []:
            sock.close()
        if self._workers is not None:
            # The workers share one listening socket, and each notices the window's end on its
            # own next tick. Telling clients to reconnect before every worker has closed it
            # would send them to a socket about to close under them (reset, not refused).
            await asyncio.sleep(_WORKERS_SETTLE_S)
        # Default headers are one list object shared by every request cycle created since
        # uvicorn last refreshed them (once a second), started responses excepted: appending
        # to it puts `Connection: close` on every response not yet begun.
        self.server_state.default_headers.append(_CONNECTION_CLOSE)
        for connection in list(self.server_state.connections):
            if _busy(connection):
                connection.shutdown()  # a cycle older than the list: close after its response
        await self._close_connections()
        # uvicorn's own shutdown does the rest: waits for tasks, then the lifespan shutdown
        # (whose steps ask `grace_left`); its wait gets what is left of the grace, not all of it.
        if limit is not None:
            self.config.timeout_graceful_shutdown = int(grace_left(limit))
        await super().shutdown(sockets)

    async def _close_connections(self) -> None:
        """Let each connection finish; close the idle ones; give up after the shutdown grace."""
        ends = _state.shutdown_ends
        give_up = ends if ends is not None else float("inf")
        idle_since: dict[Any, float] = {}
        connections = self.server_state.connections
        if connections:
            log.info("closing %d connection(s)", len(connections))
        while connections and not self.force_exit and time.monotonic() < give_up:
            now = time.monotonic()
            for connection in list(connections):
                if _busy(connection):
                    idle_since.pop(connection, None)
                elif now - idle_since.setdefault(connection, now) >= IDLE_CLOSE_S:
                    connection.shutdown()  # idle: uvicorn closes the transport
            await asyncio.sleep(_CLOSE_POLL_S)


def run(config: uvicorn.Config, drain_s: float) -> None:
    """Serve `config` (one worker process) until a stop signal, then drain and exit."""
    if config.workers != 1:
        raise ValueError("one worker process here; `run_workers` supervises several")
    _state.draining = False
    _state.shutdown_ends = None
    server = DrainingServer(config, drain_s)
    server.run()
    if not server.started:
        sys.exit(STARTUP_FAILURE)


class _DrainingWorker(multiprocess.Process):
    """A worker process of uvicorn's supervisor whose server is a `DrainingServer`.

    The worker is a spawned process: this object travels to it pickled, with the window."""

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        assert _Supervisor.window is not None, "workers are started by `run_workers`"
        self.window = _Supervisor.window

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = DrainingServer(self.config, self.window.drain_s, self.window)
        return self._server


class _Supervisor(multiprocess.Multiprocess):
    """uvicorn's worker supervisor, with each worker draining on a stop signal.

    uvicorn's supervisor notices a signal on its next half-second check, then stops its workers
    with SIGTERM. Here a stop signal goes on to every worker at once, so readiness turns false
    as with one process, and each worker drains as `run` does; a second signal goes on too and
    cuts their windows short. When it stops its workers the supervisor closes its own copy of the
    listening socket: the workers keep theirs through the window, and once they close them the
    kernel must not go on accepting connections that nobody would serve."""

    # The window of the workers it starts, read as each is created (uvicorn creates them).
    window: _WorkerWindow | None = None

    def __init__(self, config: uvicorn.Config, sockets: list[socket.socket]) -> None:
        super().__init__(config, sockets)
        self._signalled: set[int] = set()  # worker pids that have been sent a stop signal
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._on_stop_signal)

    def _on_stop_signal(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit.is_set() and self.window is not None:
            self.window.ends.value = time.monotonic() + self.window.drain_s
        self.should_exit.set()
        self._signal_workers(sig)

    def _signal_workers(self, sig: int) -> None:
        for worker in list(self.processes):
            pid = worker.pid
            if pid is not None and worker.process.is_alive():
                os.kill(pid, sig)
                self._signalled.add(pid)

    def terminate_all(self) -> None:
        for sock in self.sockets:
            sock.close()
        for worker in list(self.processes):  # one started as the signal came may have missed it
            if worker.pid not in self._signalled and worker.process.is_alive():
                worker.terminate()


def run_workers(config: uvicorn.Config, drain_s: float) -> None:
    """Serve `config` with `config.workers` worker processes, each draining as `run` does."""
    if config.workers < 2:
        raise ValueError("several worker processes here; `run` serves one")
    _Supervisor.window = _WorkerWindow(drain_s)
    sock = config.bind_socket()
    # uvicorn's supervisor creates every worker (at start, when one dies, on SIGHUP or SIGTTIN)
    # from its module's `Process`; while this supervisor runs, that is the draining worker.
    plain = multiprocess.Process
    multiprocess.Process = _DrainingWorker  # type: ignore[misc]
    try:
        _Supervisor(config, sockets=[sock]).run()
    finally:
        multiprocess.Process = plain  # type: ignore[misc]
        sock.close()
