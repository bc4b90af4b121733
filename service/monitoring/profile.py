"""The reference profile of one model version: binned distributions of its input and output
features, and the population stability index (PSI) that compares a live window with them.

Written by `modelgate build` / `modelgate profile` (training/profile.py) as
`<model>/<version>/reference_profile.json`; read by the gateway's drift monitor. Needs numpy
only. Format (schema_version 1):

    {"schema_version": 1, "model": ..., "version": "1", "kind": "image",
     "distance": "psi", "reference": "held_out", "reference_items": 450,
     "features": [{"name": "intensity_mean", "source": "input", "edges": [...],
                   "counts": [...], "training_counts": [...]}, ...],
     "noise": {"window_items": 500, "psi_p99": {"intensity_mean": 0.03, ...}},
     "training_psi": {"intensity_mean": 0.41, ...}}

A value x falls in bin `searchsorted(edges, x, side="left")` (the number of edges below x), so
`len(edges) + 1` bins; the first and last bin hold what lies below / above every reference value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SCHEMA_VERSION = 1
# Quantile levels of the reference sample that become bin edges (deciles).
QUANTILES = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2).tolist())
# Added to every bin count before proportions are taken (Jeffreys-style smoothing), so a bin
# empty on one side gives a large but finite PSI term instead of infinity.
SMOOTHING = 0.5


class ProfileError(ValueError):
    """A reference profile that cannot be used; the message names the file and the problem."""


def quantile_edges(values: np.ndarray) -> np.ndarray:
    """Bin edges of a continuous feature: the reference's deciles plus just-below-minimum and
    maximum, deduplicated (a constant feature still separates below / equal / above)."""
    values = np.asarray(values, dtype=np.float64)
    low = np.nextafter(values.min(), -np.inf)
    return np.unique(np.concatenate([[low], np.quantile(values, QUANTILES), [values.max()]]))


def category_edges(categories: int) -> np.ndarray:
    """Edges that put integer category k in bin k (0..categories-1)."""
    return np.arange(categories - 1, dtype=np.float64) + 0.5


def bin_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """How many of `values` fall in each of the `len(edges) + 1` bins."""
    bins = np.searchsorted(edges, np.asarray(values, dtype=np.float64), side="left")
    return np.bincount(bins, minlength=len(edges) + 1)


def psi(counts: np.ndarray, reference: np.ndarray) -> float:
    """Population stability index of live bin counts against reference bin counts:
    sum over bins of (p - q) * ln(p / q), both proportions smoothed by SMOOTHING."""
    p = (counts + SMOOTHING) / (counts.sum() + SMOOTHING * len(counts))
    q = (reference + SMOOTHING) / (reference.sum() + SMOOTHING * len(reference))
    return float(np.sum((p - q) * np.log(p / q)))


@dataclass(frozen=True)
class FeatureProfile:
    """One feature's bins and its reference counts (and the training data's, for comparison)."""

    name: str
    source: str  # "input" or "output"
    edges: np.ndarray
    counts: np.ndarray
    training_counts: np.ndarray | None = None
    labels: tuple[str, ...] | None = None  # categorical outputs: the class names

    def to_json(self) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "name": self.name,
            "source": self.source,
            "edges": [float(e) for e in self.edges],
            "counts": [int(c) for c in self.counts],
        }
        if self.training_counts is not None:
            entry["training_counts"] = [int(c) for c in self.training_counts]
        if self.labels is not None:
            entry["labels"] = list(self.labels)
        return entry


@dataclass(frozen=True)
class ReferenceProfile:
    """A model version's reference: every feature's bins, in the order the gateway measures."""

    model: str
    version: str
    kind: str
    reference: str
    features: tuple[FeatureProfile, ...]
    noise_window_items: int
    noise_psi_p99: dict[str, float]
    training_psi: dict[str, float]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def names_of(self, source: str) -> tuple[str, ...]:
        return tuple(f.name for f in self.features if f.source == source)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "model": self.model,
            "version": self.version,
            "kind": self.kind,
            "distance": "psi",
            "reference": self.reference,
            "reference_items": int(self.features[0].counts.sum()),
            "features": [f.to_json() for f in self.features],
            "noise": {"window_items": self.noise_window_items, "psi_p99": self.noise_psi_p99},
            "training_psi": self.training_psi,
        }

    def dumps(self) -> str:
        return json.dumps(self.to_json(), indent=1) + "\n"


def load_profile(path: Path) -> ReferenceProfile:
    """Read and check a reference_profile.json; ProfileError names the file and the fault."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("schema_version") != SCHEMA_VERSION:
            raise ProfileError(f"schema_version {data.get('schema_version')!r} is not 1")
        features = []
        for entry in data["features"]:
            edges = np.asarray(entry["edges"], dtype=np.float64)
            counts = np.asarray(entry["counts"], dtype=np.int64)
            if len(counts) != len(edges) + 1 or np.any(np.diff(edges) <= 0):
                raise ProfileError(f"feature {entry['name']!r}: edges and counts do not match")
            training = entry.get("training_counts")
            labels = entry.get("labels")
            features.append(
                FeatureProfile(
                    name=str(entry["name"]),
                    source=str(entry["source"]),
                    edges=edges,
                    counts=counts,
                    training_counts=None if training is None else np.asarray(training, np.int64),
                    labels=None if labels is None else tuple(labels),
                )
            )
        noise = data.get("noise", {})
        return ReferenceProfile(
            model=str(data["model"]),
            version=str(data["version"]),
            kind=str(data["kind"]),
            reference=str(data.get("reference", "")),
            features=tuple(features),
            noise_window_items=int(noise.get("window_items", 0)),
            noise_psi_p99={k: float(v) for k, v in noise.get("psi_p99", {}).items()},
            training_psi={k: float(v) for k, v in data.get("training_psi", {}).items()},
        )
    except ProfileError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ProfileError(f"{path}: {type(exc).__name__}: {exc}") from exc
