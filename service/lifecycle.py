"""Live model lifecycle: load, switch, drain and unload versions while requests keep flowing.

One `ModelManager` per gateway process owns every change of the served set; the transports
(OIP repository extension over HTTP and gRPC, `modelgate repository`) and the repository watch
only call it. Loading model M, whatever asked for it:

1. read and validate: config.pbtxt parses, preprocessing/labels/tokenizer are consistent
   (service/repository.py), every new or changed version's ONNX file opens in ONNX Runtime with
   the config's input and output names and shapes;
2. the backend loads the new versions beside the ones serving now (Triton: a load call with a
   `specific` version policy naming both), which keep answering meanwhile;
3. warm-up: one real inference per new version through the backend; a version that does not
   answer fails the load;
4. switch: the data plane serves the new set from the next request on (one table swap);
5. drain: the batchers of versions that left finish what they queued;
6. the backend drops what the policy no longer keeps.

With several worker processes an admin load or unload is made in every worker before it is
answered (service/workers.py `AdminLog`); the repository watch runs in each.

A failure at 1-3 leaves the serving versions untouched and is reported: a log line,
`modelgate_model_loads_total{outcome="failure"}`, `modelgate_model_load_failed` = 1 and the
error in the admin answer and the repository index. A version whose files vanished before the
backend could keep it (its directory deleted) is marked retiring first, so its unpinned requests
move to its successor instead of failing (service/dataplane.py `_rerouted`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from prometheus_client import Counter, Gauge

from service.backends.base import InferenceBackend
from service.dataplane import DataPlane
from service.errors import ModelGateError, ModelLoadFailed, ModelNotFound
from service.metrics import Metrics
from service.model_contract import example_inputs, is_model_dir, version_dirs
from service.repository import ModelSpec, RepositoryError, load_model_versions
from service.settings import Settings
from service.workers import AdminChange, AdminLog

log = logging.getLogger(__name__)

# Warm-up inputs: a short length for variable dims, like the repository's own warm-up files.
WARMUP_LENGTH = 8

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class VersionState:
    """One row of the repository index (the OIP repository extension's fields)."""

    name: str
    version: str
    state: str  # READY, UNAVAILABLE
    reason: str = ""

    def as_dict(self) -> dict[str, str]:
        return {
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "reason": self.reason,
        }


def fingerprint(model_dir: Path) -> Fingerprint:
    """Path, size and modification time of every file of a model directory: any write,
    rename or deletion inside it changes the fingerprint (no file is read)."""
    entries = []
    for root, dirs, files in os.walk(model_dir):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(root, name)
            try:
                stat = os.stat(path)
            except OSError:  # removed while walking: the next look sees the settled state
                continue
            entries.append((os.path.relpath(path, model_dir), stat.st_size, stat.st_mtime_ns))
    return tuple(entries)


def validate_onnx(spec: ModelSpec) -> None:
    """The version's ONNX file opens in ONNX Runtime and has the config's inputs and outputs
    (names, ranks, fixed dims); raises `ModelLoadFailed` with what is wrong."""
    where = f"model {spec.name} version {spec.version}"
    try:
        session = ort.InferenceSession(str(spec.onnx_path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ModelLoadFailed(f"{where}: {spec.onnx_path.name} does not load: {exc}") from exc
    for kind, declared, actual in (
        ("input", spec.inputs, session.get_inputs()),
        ("output", spec.outputs, session.get_outputs()),
    ):
        found = {a.name: a.shape for a in actual}
        for tensor in declared:
            shape = found.get(tensor.name)
            if shape is None:
                raise ModelLoadFailed(
                    f"{where}: config {kind} {tensor.name} is not in the ONNX file "
                    f"(it has {sorted(found)})"
                )
            if len(shape) != len(tensor.dims) + 1:
                raise ModelLoadFailed(
                    f"{where}: {kind} {tensor.name} has shape {shape} in the ONNX file, "
                    f"the config says [batch, {', '.join(map(str, tensor.dims))}]"
                )
            for want, got in zip(tensor.dims, shape[1:], strict=True):
                if want >= 0 and isinstance(got, int) and got != want:
                    raise ModelLoadFailed(
                        f"{where}: {kind} {tensor.name} has shape {shape} in the ONNX file, "
                        f"the config says [batch, {', '.join(map(str, tensor.dims))}]"
                    )


class ModelManager:
    """Loads, switches and unloads model versions for one gateway process (see module doc)."""

    def __init__(
        self,
        settings: Settings,
        dataplane: DataPlane,
        backend: InferenceBackend,
        metrics: Metrics,
        admin_log: AdminLog | None = None,
    ) -> None:
        self.settings = settings
        self.admin_log = admin_log  # with several workers: where they share admin changes
        self.root = settings.model_repository
        self.dataplane = dataplane
        self.backend = backend
        self._locks: dict[str, asyncio.Lock] = {}
        self._failures: dict[str, str] = {}  # model -> why its last load failed
        self._unloaded: set[str] = set()  # models unloaded on request (until loaded again)
        self._loaded: dict[str, Fingerprint] = {}  # model -> files it was last loaded from
        self._seen: dict[str, Fingerprint] = {}  # model -> files at the watch's last look
        self._watch: asyncio.Task[None] | None = None
        self._follow: asyncio.Task[None] | None = None
        self.loads = Counter(
            "modelgate_model_loads",
            "Model loads by outcome (success, failure).",
            ["model", "outcome"],
            registry=metrics.registry,
        )
        self.load_failed = Gauge(
            "modelgate_model_load_failed",
            "1 while the model's last load failed (the versions before it still serve).",
            ["model"],
            registry=metrics.registry,
            multiprocess_mode="max",
        )
        for name in self._model_names():
            self._loaded[name] = self._seen[name] = fingerprint(self.root / name)
            self.load_failed.labels(model=name).set(0)

    # -- watch --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Apply what the other workers changed before this one started (an unload stays an
        unload across a worker's restart), follow their changes from now on, and start
        watching the repository (when `watch_interval_s` > 0)."""
        if self.admin_log is not None and self._follow is None:
            for name, op in self.admin_log.catch_up().items():
                if op == "unload" and self.dataplane.served_versions(name):
                    await self._unload_here(name)
            self.admin_log.confirm_caught_up()
            self._follow = asyncio.create_task(
                self.admin_log.follow(self._apply), name="admin-log-follow"
            )
        if self.settings.watch_interval_s > 0 and self._watch is None:
            self._watch = asyncio.create_task(self._watch_loop(), name="repository-watch")

    async def close(self) -> None:
        """Stop watching and following."""
        for task in (self._watch, self._follow):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._watch = self._follow = None

    async def _watch_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.watch_interval_s)
            try:
                await self.poll()
            except Exception:  # the watch must outlive any one bad look
                log.exception("repository watch failed")

    async def poll(self) -> list[str]:
        """One look at the repository: load every model whose files changed and then held
        still for one interval (a copy in progress is not loaded half-written), unload models
        whose directory is gone. Returns the models acted on."""
        names = set(self._model_names())
        acted = []
        for name in sorted(names | set(self._seen)):
            now = await asyncio.to_thread(fingerprint, self.root / name) if name in names else ()
            settled = self._seen.get(name) == now
            self._seen[name] = now
            if not settled or now == self._loaded.get(name, ()):
                continue
            acted.append(name)
            try:
                if now:  # every worker watches the same files: no need to tell the others
                    await self._load_here(name)
                else:
                    await self._unload_here(name)
            except ModelGateError as exc:
                log.warning("repository watch: %s: %s", name, exc.message)
                if not now:  # gone and not served: nothing more to do for it
                    self._loaded[name] = now
        return acted

    # -- admin operations -----------------------------------------------------------------------

    def _model_names(self) -> list[str]:
        try:
            return sorted(d.name for d in self.root.iterdir() if is_model_dir(d))
        except OSError:
            return []

    def _lock(self, name: str) -> asyncio.Lock:
        return self._locks.setdefault(name, asyncio.Lock())

    def index(self) -> list[VersionState]:
        """Every version on disk with its state (the OIP repository index)."""
        rows = []
        for name in sorted(set(self._model_names()) | set(self._failures)):
            served = self.dataplane.served_versions(name)
            model_dir = self.root / name
            on_disk = [str(v) for v in version_dirs(model_dir)] if model_dir.is_dir() else []
            failure = self._failures.get(name, "") or ("unloaded" if name in self._unloaded else "")
            for version in sorted(set(on_disk) | set(served), key=int):
                if version in served:
                    rows.append(VersionState(name, version, "READY"))
                else:
                    rows.append(
                        VersionState(
                            name, version, "UNAVAILABLE", failure or "not in the served set"
                        )
                    )
            if not on_disk and not served:
                rows.append(VersionState(name, "", "UNAVAILABLE", failure or "no version"))
        return rows

    async def load(self, name: str) -> list[str]:
        """Load (or reload) model `name` from the repository, in every worker; returns the
        versions it serves.

        Raises `ModelLoadFailed` (what served before still serves) or `ModelNotFound`.
        """
        versions = await self._load_here(name)
        await self._share("load", name)
        return versions

    async def unload(self, name: str) -> None:
        """Stop serving every version of model `name`, in every worker."""
        await self._unload_here(name)
        await self._share("unload", name)

    async def _share(self, op: str, name: str) -> None:
        """Have the other workers make the change this one made, and wait until they have."""
        if self.admin_log is None:
            return
        change = self.admin_log.publish(op, name)
        # a peer may be loading something else first: give it one load's time more
        problems = await self.admin_log.confirmations(change, 2 * self.settings.load_timeout_s)
        if problems:
            raise ModelLoadFailed(
                f"model {name}: {op} done in worker {self.admin_log.worker}, not in every "
                f"other: {'; '.join(problems)}"
            )

    async def _apply(self, change: AdminChange) -> str | None:
        """A change another worker made, made here; None when done, else why not."""
        try:
            if change.op == "load":
                await self._load_here(change.model)
            else:
                await self._unload_here(change.model)
        except ModelGateError as exc:
            if change.op == "unload" and isinstance(exc, ModelNotFound):
                return None  # not served here either: nothing to stop
            return exc.message
        return None

    async def _load_here(self, name: str) -> list[str]:
        """`load` in this worker only."""
        if not is_model_dir(self.root / name):
            raise ModelNotFound(f"model {name!r} is not in the repository {self.root}")
        async with self._lock(name):
            started = time.monotonic()
            files = await asyncio.to_thread(fingerprint, self.root / name)
            try:
                versions = await asyncio.wait_for(
                    self._load(name, files), self.settings.load_timeout_s
                )
            except (ModelGateError, TimeoutError) as exc:
                error = (
                    exc
                    if isinstance(exc, ModelGateError)
                    else ModelLoadFailed(
                        f"model {name}: loading took over {self.settings.load_timeout_s} s"
                    )
                )
                self._failures[name] = error.message
                self.loads.labels(model=name, outcome="failure").inc()
                self.load_failed.labels(model=name).set(1)
                self._loaded[name] = files  # the same broken files are not retried by the watch
                log.error("loading %s failed, serving what served before: %s", name, error.message)
                if error is exc:
                    raise
                raise error from exc
            self._failures.pop(name, None)
            self._unloaded.discard(name)
            self._loaded[name] = files
            self.loads.labels(model=name, outcome="success").inc()
            self.load_failed.labels(model=name).set(0)
            log.info(
                "model %s serves versions %s (loaded in %.2f s)",
                name,
                ", ".join(versions),
                time.monotonic() - started,
            )
            return versions

    async def _load(self, name: str, files: Fingerprint) -> list[str]:
        try:
            specs = await asyncio.to_thread(load_model_versions, self.root / name)
        except RepositoryError as exc:
            raise ModelLoadFailed(f"model {name}: {exc}") from exc
        serving = self.dataplane.served_versions(name)
        previous = self._loaded.get(name, ())
        # A version whose spec and files are unchanged keeps its spec object, so the data plane
        # keeps its runtime and batcher (if only the served set around it changed, it gets a
        # runtime with the new spec, but the backend keeps it loaded); the others are new or
        # changed ("fresh") and are validated, loaded and warmed.
        fresh: dict[str, ModelSpec] = {}
        for version, spec in specs.items():
            old = serving.get(version)
            unchanged = (
                old is not None
                and dataclasses.replace(old, versions=spec.versions) == spec
                and _files_of(spec, files) == _files_of(spec, previous)
            )
            if not unchanged:
                fresh[version] = spec
            elif old is not None and old.versions == spec.versions:
                specs[version] = old
        for spec in fresh.values():
            await asyncio.to_thread(validate_onnx, spec)

        dropped = [v for v in serving if v not in specs]
        # A version whose directory is gone cannot stay loaded in the backend once it is
        # asked to load anything: announce it, so its unpinned requests wait for the successor.
        vanished = [v for v in dropped if not (self.root / name / v).is_dir()]
        keep: list[str] = []
        if fresh:
            self.dataplane.mark_retiring(name, vanished)
            keep = [v for v in dropped if v not in vanished]
            await self.backend.load(name, list(specs.values()), keep)
            for spec in fresh.values():
                await self._warm(spec)
        retired = self.dataplane.serve(name, specs)
        await self.dataplane.drain(retired)
        if dropped and (not fresh or keep):  # the backend still holds versions no longer served
            await self.backend.load(name, list(specs.values()), [])
        return list(specs)

    async def _warm(self, spec: ModelSpec) -> None:
        """One real inference through the backend; the version must answer before it serves."""
        inputs = example_inputs(spec.inputs, batch=1, length=WARMUP_LENGTH, seed=0)
        try:
            outputs = await self.backend.infer(spec, inputs)
        except ModelGateError as exc:
            raise ModelLoadFailed(
                f"model {spec.name} version {spec.version} did not answer its warm-up: "
                f"{exc.message}"
            ) from exc
        logits = outputs[spec.output]
        if not np.all(np.isfinite(logits)):
            raise ModelLoadFailed(
                f"model {spec.name} version {spec.version} answered its warm-up with "
                "non-finite values"
            )

    async def _unload_here(self, name: str) -> None:
        """Stop serving model `name` in this worker: drain its batchers, then unload it from the
        backend."""
        if not self.dataplane.served_versions(name):
            raise ModelNotFound(f"model {name!r} is not served")
        async with self._lock(name):
            retired = self.dataplane.remove(name)
            await self.dataplane.drain(retired)
            try:
                await self.backend.unload(name)
            except ModelGateError as exc:
                log.warning("unloading %s from the backend: %s", name, exc.message)
            self._loaded[name] = await asyncio.to_thread(fingerprint, self.root / name)
            self._failures.pop(name, None)
            self._unloaded.add(name)
            log.info("model %s unloaded", name)


def _files_of(spec: ModelSpec, print_: Fingerprint) -> Fingerprint:
    """The entries of `print_` a version is made of: its own directory and, for a text model,
    the tokenizer it reads (possibly the model-level one). Config, preprocessing and labels are
    compared through the spec itself."""
    wanted = f"{spec.version}{os.sep}"
    tokenizer = (
        os.path.relpath(spec.artifact(spec.text.tokenizer_file), spec.path)
        if spec.text is not None
        else None
    )
    return tuple(e for e in print_ if e[0].startswith(wanted) or e[0] == tokenizer)
