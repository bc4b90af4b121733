"""Live drift: per model version, a sliding window of the last N items' input features and model
outputs, compared with the version's reference profile by the population stability index.

The request path only appends: each item's features (a few floats, computed from what the
preprocessor already holds) and the batch's logits go into fixed-size ring buffers. Binning and
the PSI are computed when `/metrics` is rendered (and, with several worker processes, on a timer
in every worker), never per request. The window counts items, not seconds: its sample size, and
so the PSI's noise floor, is the same at 1 and at 1,000 requests a second, so one threshold fits
every model and every traffic level (docs/monitoring.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from service.metrics import multiprocess_dir
from service.model_contract import REFERENCE_PROFILE_FILE
from service.monitoring import features
from service.monitoring.profile import ProfileError, ReferenceProfile, bin_counts, load_profile, psi
from service.repository import ModelSpec

log = logging.getLogger(__name__)


class DriftWindow:
    """The last `capacity` items one model version answered: input features and logits."""

    def __init__(
        self,
        spec: ModelSpec,
        profile: ReferenceProfile,
        capacity: int,
        extract: features.InputFeatures,
    ) -> None:
        expected_inputs = features.input_feature_names(spec)
        if (
            profile.names_of("input") != expected_inputs
            or profile.names_of("output") != features.OUTPUT_FEATURES
        ):
            raise ProfileError(
                f"{spec.path / spec.version / REFERENCE_PROFILE_FILE}: features "
                f"{list(profile.names)} are not this gateway's "
                f"{[*expected_inputs, *features.OUTPUT_FEATURES]}; re-run `modelgate profile`"
            )
        self.model = spec.name
        self.version = spec.version
        self.profile = profile
        self.capacity = capacity
        self.extract = extract
        self._inputs = np.zeros((capacity, len(expected_inputs)), dtype=np.float64)
        self._logits = np.zeros((capacity, max(1, len(spec.labels))), dtype=np.float32)
        self._next = 0  # ring position of the next item
        self.items = 0  # items in the window (up to capacity)
        self._failed = False

    def features(self, decoded: Any, tensors: Mapping[str, np.ndarray]) -> list[float] | None:
        """The input features of one preprocessed item; None (logged once) if they cannot be
        computed: monitoring must never fail a request the model can answer."""
        try:
            return self.extract(decoded, tensors)
        except Exception:
            if not self._failed:
                self._failed = True
                log.exception("%s: drift features failed; such items are left out", self.model)
            return None

    def add(self, rows: list[list[float] | None], logits: np.ndarray) -> None:
        """Append one request's items: their input features and output rows (same order).
        A request with an item whose features failed is left out whole."""
        n = len(rows)
        if n == 0 or None in rows:
            return
        if n > self.capacity:  # only the newest fit
            rows, logits, n = rows[-self.capacity :], logits[-self.capacity :], self.capacity
        start = self._next
        end = start + n
        if end <= self.capacity:
            self._inputs[start:end] = rows
            self._logits[start:end] = logits
        else:  # wraps around
            split = self.capacity - start
            self._inputs[start:] = rows[:split]
            self._logits[start:] = logits[:split]
            self._inputs[: end - self.capacity] = rows[split:]
            self._logits[: end - self.capacity] = logits[split:]
        self._next = end % self.capacity
        self.items = min(self.capacity, self.items + n)

    def values(self) -> np.ndarray:
        """(items, features) of the window, in the profile's feature order (order of arrival
        does not matter to a distribution)."""
        n = self.items
        outputs = features.output_features(self._logits[:n])
        return np.concatenate([self._inputs[:n], outputs], axis=1)

    def distances(self) -> dict[str, float]:
        """PSI of each feature's window distribution against the reference."""
        values = self.values()
        return {
            feature.name: psi(bin_counts(values[:, i], feature.edges), feature.counts)
            for i, feature in enumerate(self.profile.features)
        }


class DriftMonitor:
    """Every served version's window, and the gauges that publish their distances."""

    def __init__(
        self,
        registry: CollectorRegistry,
        window_items: int,
        min_items: int,
        refresh_s: float,
    ) -> None:
        self.window_items = window_items
        self.min_items = min(min_items, window_items)
        self.refresh_s = refresh_s
        self.windows: dict[tuple[str, str], DriftWindow] = {}
        self._task: asyncio.Task[None] | None = None
        self.psi = Gauge(
            "modelgate_drift_psi",
            "Population stability index of the last window of items against the model "
            "version's reference profile, per input or output feature (NaN until the window "
            "holds enough items).",
            ["model", "version", "feature"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.window_fill = Gauge(
            "modelgate_drift_window_items",
            "Items in the model version's drift window.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="max",
        )

    def window_for(self, spec: ModelSpec, tokenizer: Any = None) -> DriftWindow | None:
        """The window of one served version; None (drift off for it) when the version directory
        has no reference profile. A profile that does not fit raises ProfileError."""
        path = spec.path / spec.version / REFERENCE_PROFILE_FILE
        if not path.is_file():
            log.warning(
                "%s version %s has no %s: no drift monitoring for it (run `modelgate profile`)",
                spec.name,
                spec.version,
                REFERENCE_PROFILE_FILE,
            )
            return None
        window = DriftWindow(
            spec, load_profile(path), self.window_items, features.extractor(spec, tokenizer)
        )
        self.windows[(spec.name, spec.version)] = window
        self.window_fill.labels(spec.name, spec.version).set(0)
        if multiprocess_dir() is None:  # workers' NaNs would not merge: series appear when set
            for name in window.profile.names:
                self.psi.labels(spec.name, spec.version, name).set(math.nan)
        return window

    def forget(self, window: DriftWindow) -> None:
        """Stop publishing a retired version's window (its last PSI would otherwise stay
        exported, and an alert on it firing, forever). A window since replaced by a newer
        runtime of the same version is left alone."""
        key = (window.model, window.version)
        if self.windows.get(key) is not window:
            return
        del self.windows[key]
        with contextlib.suppress(KeyError):
            self.window_fill.remove(*key)
        for name in window.profile.names:
            with contextlib.suppress(KeyError):
                self.psi.remove(*key, name)

    def refresh(self) -> None:
        """Recompute every window's distances into the gauges."""
        for (model, version), window in self.windows.items():
            self.window_fill.labels(model, version).set(window.items)
            if window.items < self.min_items:
                continue
            for name, value in window.distances().items():
                self.psi.labels(model, version, name).set(value)

    def snapshot(self) -> Mapping[tuple[str, str], Mapping[str, float]]:
        """Current distances per (model, version), for logs and tests."""
        return {key: w.distances() for key, w in self.windows.items() if w.items}

    def start(self) -> None:
        """With several worker processes each keeps its own window and refreshes its gauges on
        a timer (the scrape reaches only one worker); a single process refreshes per scrape."""
        if multiprocess_dir() is not None and self.windows:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_s)
            try:
                self.refresh()
            except Exception:  # a bad window must not stop the others' refreshes
                log.exception("drift refresh failed")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
