"""Several worker processes of one gateway: how many by default, and how they share admin loads.

`modelgate serve` runs `MODELGATE_WORKERS` processes on one port (service/drain.py supervises
them). Each holds its own copy of every model, batcher and metric, so two things need care:

- How many. `worker_count`: the setting when it is above 0, otherwise what fits the machine.
  With the embedded backend the gateway is all the work, so one worker per core it may use
  (affinity and cgroup quota). In front of Triton, half of them: Triton needs cores when it is
  beside the gateway, and every worker batches only its own requests, so more workers send
  Triton more, smaller batches (measured in service/README.md, "Worker processes").
- Where the embedded backend runs a batch (`embedded_inline_us`): in a thread only where a
  core is left over for it.
- Admin loads and unloads. A request reaches one worker. `AdminLog` is an append-only file of
  JSON lines in a directory `modelgate serve` creates for the workers: the worker that did a
  load or unload writes it there, every other worker applies it on its next look (every
  `ADMIN_POLL_S`) and writes back that it did, or why it could not; the first worker answers its
  client once all have, so a 200 means every worker serves the change. A worker started later (a
  restart after a crash) reads the whole file first, unloads what was last unloaded, and
  confirms the changes still waiting.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import math
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from service.backends.embedded import INLINE_US
from service.settings import Settings

log = logging.getLogger(__name__)

# Most workers chosen without the setting: each one loads every model and keeps its own batch
# queue, so past a handful memory grows and batches thin out faster than throughput rises.
AUTO_WORKERS_MAX = 8

# How often a worker looks at the admin log: one stat() call, so an admin change reaches every
# worker within a tenth of a second of its load finishing, at no cost a request would notice.
ADMIN_POLL_S = 0.05

# Longest error text one confirmation carries (a line of the log must stay one small write).
_ERROR_CHARS = 1000

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def available_cores(cpu_max: Path = CGROUP_CPU_MAX) -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup v2 CPU quota
    (`cpu.max`, what `docker run --cpus` and Kubernetes CPU limits set), rounded down; at
    least 1."""
    cores = len(os.sched_getaffinity(0))
    try:
        quota, period = cpu_max.read_text().split()[:2]
        if quota != "max":
            cores = min(cores, int(quota) // int(period))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota here: the affinity stands
    return max(1, cores)


def worker_count(settings: Settings, cores: int | None = None) -> int:
    """Worker processes to run: `settings.workers`, or when 0 what fits the machine (module doc)."""
    if settings.workers > 0:
        return settings.workers
    cores = available_cores() if cores is None else cores
    wanted = cores if settings.backend == "embedded" else cores // 2
    return max(1, min(wanted, AUTO_WORKERS_MAX))


def embedded_inline_us(settings: Settings, cores: int | None = None) -> float:
    """The embedded backend's limit for running a batch on the event loop (µs expected): the
    setting when set; else the backend's `INLINE_US` while there are more cores than workers,
    and no limit when every core has a worker, since a thread would only add the hop (two
    workers on two cores, always inline: language id 1.72x the hand-written server against
    1.53x with the 400 µs rule; service/README.md)."""
    if settings.embedded_inline_us is not None:
        return settings.embedded_inline_us
    cores = available_cores() if cores is None else cores
    return INLINE_US if cores > max(1, settings.workers) else math.inf


@dataclass(frozen=True)
class AdminChange:
    """One admin load or unload, as the log holds it."""

    id: str
    op: str  # "load" or "unload"
    model: str
    worker: str  # who did it first


class _Pending:
    """One of this worker's own changes while it waits for the others' confirmations."""

    def __init__(self) -> None:
        self.confirmed: dict[str, str | None] = {}  # worker -> error (None: done)
        self.all_in = asyncio.Event()


# Applies a peer's change in this worker; returns None when done, else why it could not.
ApplyChange = Callable[[AdminChange], Awaitable[str | None]]


class AdminLog:
    """The admin changes of one gateway's workers, shared through one append-only file.

    Every line is one small `write` to a file opened with O_APPEND, so lines from several
    processes never interleave. Reading happens only in `follow`'s loop (and `catch_up` before
    it starts): a line is acted on once."""

    def __init__(self, path: Path, peers: int, worker: str | None = None) -> None:
        self.path = path
        self.peers = peers  # the other workers, each of which confirms every change
        self.worker = worker if worker is not None else str(os.getpid())
        self._ids = itertools.count(1)
        # change ids stay unique if a later worker gets a pid an earlier one had
        self._id_prefix = f"{self.worker}-{os.urandom(4).hex()}"
        self._offset = 0
        self._partial = b""
        self._pending: dict[str, _Pending] = {}  # change id -> its confirmations so far
        self._unconfirmed: list[str] = []  # changes found waiting as this worker started

    def _append(self, record: dict[str, object]) -> None:
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def _confirm(self, change_id: str, error: str | None) -> None:
        self._append(
            {
                "confirms": change_id,
                "worker": self.worker,
                "error": error[:_ERROR_CHARS] if error else None,
            }
        )

    def _read_new(self) -> list[dict[str, object]]:
        """The complete lines written since the last look (a half-written one waits)."""
        try:
            if self.path.stat().st_size <= self._offset:
                return []
            with self.path.open("rb") as file:
                file.seek(self._offset)
                data = file.read()
        except FileNotFoundError:
            return []
        self._offset += len(data)
        *lines, self._partial = (self._partial + data).split(b"\n")
        records = []
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                log.warning("admin log %s: skipping an unreadable line", self.path)
                continue
            if isinstance(record, dict):
                records.append(record)
        return records

    def catch_up(self) -> dict[str, str]:
        """Read the log from the start; the last change (`load`/`unload`) of each model in it.
        A worker calls this once as it starts, before it follows the log; once it has made
        those changes, `confirm_caught_up` answers the ones still waiting for confirmations."""
        last: dict[str, str] = {}
        confirmations: dict[str, int] = {}
        changes: list[AdminChange] = []
        for record in self._read_new():
            if "confirms" in record:
                key = str(record["confirms"])
                confirmations[key] = confirmations.get(key, 0) + 1
                continue
            change = _change(record)
            if change is not None:
                last[change.model] = change.op
                changes.append(change)
        # A worker that started while another's change waited (it replaces one that died and
        # never confirmed) serves that change now: without its word the wait would time out.
        self._unconfirmed = [
            c.id
            for c in changes
            if c.worker != self.worker and confirmations.get(c.id, 0) < self.peers
        ]
        return last

    def confirm_caught_up(self) -> None:
        """Confirm the changes `catch_up` found still waiting; this worker has made them."""
        for change_id in self._unconfirmed:
            self._confirm(change_id, None)
        self._unconfirmed = []

    def publish(self, op: str, model: str) -> AdminChange:
        """Record a change this worker has made; the others apply it (`follow`)."""
        change = AdminChange(f"{self._id_prefix}-{next(self._ids)}", op, model, self.worker)
        self._pending[change.id] = _Pending()
        self._append({"id": change.id, "op": op, "model": model, "worker": self.worker})
        return change

    async def confirmations(self, change: AdminChange, timeout_s: float) -> list[str]:
        """Wait until every other worker has applied `change` (or `timeout_s`); returns what
        went wrong, one message per worker that failed or did not answer (empty: all did)."""
        pending = self._pending[change.id]
        try:
            await asyncio.wait_for(pending.all_in.wait(), timeout_s)
        except TimeoutError:
            pass
        finally:
            del self._pending[change.id]
        confirmed = pending.confirmed
        problems = [f"worker {w}: {error}" for w, error in sorted(confirmed.items()) if error]
        missing = self.peers - len(confirmed)
        if missing > 0:
            problems.append(
                f"{missing} of {self.peers} other worker(s) did not confirm within {timeout_s:g} s"
            )
        return problems

    async def follow(self, apply: ApplyChange) -> None:
        """Apply every change the other workers publish, and confirm it; collect confirmations
        of this worker's own changes. Runs until cancelled."""
        while True:
            await asyncio.sleep(ADMIN_POLL_S)
            for record in self._read_new():
                await self._handle(record, apply)

    async def _handle(self, record: dict[str, object], apply: ApplyChange) -> None:
        if "confirms" in record:
            pending = self._pending.get(str(record["confirms"]))
            if pending is not None:
                error = record.get("error")
                pending.confirmed[str(record.get("worker"))] = str(error) if error else None
                if len(pending.confirmed) >= self.peers:
                    pending.all_in.set()
            return
        change = _change(record)
        if change is None or change.worker == self.worker:
            return
        try:
            error = await apply(change)
        except Exception as exc:  # a confirmation must go back whatever happened
            log.exception("%s of %s from worker %s", change.op, change.model, change.worker)
            error = f"{type(exc).__name__}: {exc}"
        self._confirm(change.id, error)


def _change(record: dict[str, object]) -> AdminChange | None:
    op, model = record.get("op"), record.get("model")
    if op not in ("load", "unload") or not isinstance(model, str):
        return None
    return AdminChange(str(record.get("id")), str(op), model, str(record.get("worker")))
