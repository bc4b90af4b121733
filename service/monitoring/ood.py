"""Per-request out-of-distribution score: numpy on tensors the request already has.

A detector is a weighted sum of standardised components, each computed from the model's input
tensors (as sent to Triton) and its logits, so scoring needs no extra model call:

- `energy`: -logsumexp(logits) (Liu et al., 2020); high when no class fits.
- `pixel_distance` (image models): Mahalanobis distance, in the top principal components of the
  training inputs, from the input to the training mean of the class the model predicts.
- `image_stats` (image models): Mahalanobis distance of five summary statistics of the
  model-ready image (mean, spread, mean absolute change between neighbouring pixels across and
  down, share of bright pixels) from the training images' distribution.
- `token_bigram` (text models): minus the best per-language mean log-likelihood of the input's
  token bigrams under bigram models of each training language (interpolated with unigrams).
- `background_ratio` (text models): the input's mean token-bigram log-likelihood under a
  background model of other languages minus the best of the training languages': a
  likelihood ratio, high when the input reads more like some other language than like any of
  the model's (outlier exposure, Hendrycks et al., 2019).
- `token_bigram_total`, `background_ratio_total` (text models): the same for the whole text
  (times its token count): the log-likelihood ratio of the text itself, so a long phrase that
  reads like another language weighs more than one ambiguous word (docs/out-of-distribution.md).
- `sequence_stats` (sequence models): Mahalanobis distance of per-channel mean, spread and mean
  absolute frame-to-frame change, plus log length, from the training sequences' distribution.

Each component is standardised with its mean and standard deviation on the training data; the
score is their weighted sum and the flag is `score > threshold`, the threshold calibrated on
held-out in-distribution data (training/ood.py fits and calibrates; docs/out-of-distribution.md
says why).
The detector lives in `<model>/<version>/ood.json` (method, weights, threshold, figures) with
its arrays in `ood.npz` beside it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from service.model_contract import OOD_ARRAYS_FILE, OOD_FILE
from service.monitoring import kernels

# 2: the token-bigram table is stored sparse (only pairs seen in training).
SCHEMA_VERSION = 2
log = logging.getLogger(__name__)


def whitening(precision: np.ndarray) -> np.ndarray:
    """L with L @ L.T == precision, so that |delta @ L|^2 is the squared Mahalanobis distance:
    one product per row instead of two (float64; callers fold it into their own products)."""
    return np.linalg.cholesky(np.asarray(precision, dtype=np.float64))


def sequence_features(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """[N, T, C] normalised frames and [N, T] mask -> [N, 3C + 1] summary features (float32).

    Per channel: mean, standard deviation and mean absolute change between consecutive real
    frames; then log(length). Padding (mask 0) is ignored.
    """
    return kernels.sequence_features(
        np.ascontiguousarray(values, dtype=np.float32), np.ascontiguousarray(mask, dtype=np.float32)
    )


def image_stats(images: np.ndarray) -> np.ndarray:
    """[N, ...] model-ready images (one channel) -> [N, 5] summary features (float32): mean and
    standard deviation of the pixel values, mean absolute difference between horizontal and
    between vertical neighbours, and the share of pixels above mean + standard deviation."""
    side = images.shape[-1]
    return kernels.image_stats(
        np.ascontiguousarray(images.reshape(len(images), -1, side), dtype=np.float32)
    )


def _rows32(array: np.ndarray) -> np.ndarray:
    """[N, ...] -> [N, rest] float32, C order (what the kernels take)."""
    return np.ascontiguousarray(array.reshape(len(array), -1), dtype=np.float32)


def bigram_keys(ids: np.ndarray, start_id: int, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """(previous token, token) pairs of padded [N, T] ids as flat keys prev * vocab + id; the
    first token's previous one is `start_id`. Ids are clipped into the vocabulary."""
    current = np.clip(ids, 0, vocab - 1)
    previous = np.empty_like(current)
    previous[:, 0] = start_id
    previous[:, 1:] = current[:, :-1]
    return previous * vocab + current, current


Tensors = Mapping[str, np.ndarray]
# A term adds scale * its value per row into the score ([N] float64), from the batch's input
# tensors and its logits ([N, classes] float32, C order).
Term = Callable[[Tensors, np.ndarray, float, np.ndarray], None]


@dataclass(frozen=True)
class Component:
    """One standardised term of the score."""

    name: str
    weight: float
    mean: float
    std: float


# The token-likelihood components: (background ratio?, whole text rather than per token?).
LIKELIHOOD_TERMS: dict[str, tuple[bool, bool]] = {
    "token_bigram": (False, False),
    "background_ratio": (True, False),
    "token_bigram_total": (False, True),
    "background_ratio_total": (True, True),
}


class TokenLikelihood:
    """Mean log-likelihood of each row's tokens under per-language token-bigram models, and
    under a background model of other languages when the detector has one.

    Stored sparse: log p(token | previous, language) at the sorted keys of the pairs seen in
    training ([languages, pairs]); any other pair has the language's unigram term
    log((1 - share) p(token)) ([languages, vocab]). One table [vocab + pairs, languages
    (+ background)] and one index per token make it one gather. The last batch's result is kept,
    so the components that read it pay for one gather per batch.
    """

    def __init__(
        self,
        arrays: Mapping[str, np.ndarray],
        *,
        vocab: int,
        start_id: int,
        ids_name: str,
        mask_name: str,
    ) -> None:
        self._seen = np.ascontiguousarray(arrays["bigram_keys"], dtype=np.int64)
        rows = [
            np.concatenate(
                [arrays["unigram_log_probability"], arrays["bigram_log_probability"]], axis=1
            )
        ]
        self.languages = len(rows[0])
        self.has_background = "background_bigram_log_probability" in arrays
        if self.has_background:
            rows.append(
                np.concatenate(
                    [
                        arrays["background_unigram_log_probability"],
                        arrays["background_bigram_log_probability"],
                    ]
                )[None]
            )
        # Row-major by token index ([vocab + pairs, languages]): a token's values for every
        # language lie side by side (36 bytes), so a gather touches one or two cache lines per
        # token instead of one per language (the table is several MB).
        self._table = np.ascontiguousarray(np.concatenate(rows).astype(np.float32).T)
        self._vocab, self._start = vocab, start_id
        self._ids_name, self._mask_name = ids_name, mask_name
        self._cached: tuple[np.ndarray | None, np.ndarray] = (None, np.zeros(0))

    def per_language(self, tensors: Mapping[str, np.ndarray]) -> np.ndarray:
        """[languages (+ 1 background) + 1, rows]: the mean log-likelihood of each row's real
        tokens per group, then its count of real tokens."""
        ids = tensors[self._ids_name]
        cached_ids, cached = self._cached  # one read: safe if another thread replaces it
        if cached_ids is ids:
            return cached
        result = kernels.token_likelihood(
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(tensors[self._mask_name], dtype=np.float32),
            self._seen,
            self._table,
            self._vocab,
            self._start,
        )
        # the ids array is kept alive with its result, so identity cannot be reused
        self._cached = (ids, result)
        return result


class OodDetector:
    """Scores rows of one model version; built from its ood.json and ood.npz."""

    def __init__(self, record: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
        if record.get("schema_version") != SCHEMA_VERSION:
            raise ValueError(f"ood.json schema_version must be {SCHEMA_VERSION}")
        self.record = dict(record)
        self.threshold = float(record["threshold"])
        # The share of in-distribution requests flagged at the threshold (held-out, measured):
        # what the OOD-rate alert compares live traffic against.
        self.expected_rate = float(record["expected_rate"])
        self.inputs: dict[str, str] = dict(record["inputs"])
        self.components = [Component(**c) for c in record["components"]]
        self._likelihood: TokenLikelihood | None = None
        self._terms = [(c, self._term(c.name, arrays, record)) for c in self.components]
        # sum of weight * (term - mean) / std == sum of scale * term + offset
        self._scaled_terms = [(c.weight / c.std, term) for c, term in self._terms]
        self._offset = -sum(c.weight * c.mean / c.std for c in self.components)

    @classmethod
    def load(cls, version_dir: Path) -> OodDetector | None:
        """The detector of a version directory; None when it has none."""
        path = version_dir / OOD_FILE
        if not path.is_file():
            return None
        record = json.loads(path.read_text(encoding="utf-8"))
        with np.load(version_dir / OOD_ARRAYS_FILE) as stored:
            arrays = {k: stored[k] for k in stored.files}
        return cls(record, arrays)

    def _term(self, name: str, arrays: Mapping[str, np.ndarray], record: Mapping[str, Any]) -> Term:
        # Every term runs once per batch on the request path, so the stored arrays are folded
        # ahead into as few float32 matrices as possible, and each term adds its scaled value
        # into the score in its last compiled call: no numpy call between terms
        # (benchmarks/monitoring_overhead.py).
        inputs = self.inputs
        if name == "energy":

            def add_energy(_tensors: Tensors, logits: np.ndarray, scale: float, out: Any) -> None:
                kernels.add_energy(logits, scale, out)

            return add_energy
        if name == "pixel_distance":
            # |(x - mean) @ C.T - class_mean| under the precision = |x @ W - offset[class]|^2
            # with W = C.T @ L and offset = (mean @ C.T + class_mean) @ L, L @ L.T = precision.
            components = arrays["pixel_components"].astype(np.float64)  # [k, pixels]
            lower = whitening(arrays["pixel_precision"])
            weights = (components.T @ lower).astype(np.float32)
            offsets = (
                (arrays["pixel_mean"].astype(np.float64) @ components.T)[None]
                + arrays["pixel_class_means"].astype(np.float64)
            ) @ lower
            offsets32 = np.ascontiguousarray(offsets, dtype=np.float32)
            image = inputs["image"]

            def pixel_distance(
                tensors: Tensors, logits: np.ndarray, scale: float, out: Any
            ) -> None:
                z = tensors[image].reshape(len(logits), -1) @ weights
                kernels.add_class_distance(_rows32(z), logits, offsets32, scale, out)

            return pixel_distance
        if name == "image_stats":
            stats_lower = whitening(arrays["image_stats_precision"])
            stats_weights = np.ascontiguousarray(stats_lower, dtype=np.float32)
            stats_center = np.ascontiguousarray(
                arrays["image_stats_mean"].astype(np.float64) @ stats_lower, dtype=np.float32
            )
            stats_image = inputs["image"]

            def image_stats_distance(
                tensors: Tensors, _logits: np.ndarray, scale: float, out: Any
            ) -> None:
                stats = image_stats(tensors[stats_image])
                kernels.add_whitened_distance(stats, stats_weights, stats_center, scale, out)

            return image_stats_distance
        if name in LIKELIHOOD_TERMS:
            ratio, total = LIKELIHOOD_TERMS[name]
            likelihood = self._token_likelihood(arrays, record)
            if ratio and not likelihood.has_background:
                raise ValueError(f"{name} needs the background_* arrays in ood.npz")

            def likelihood_term(
                tensors: Tensors, _logits: np.ndarray, scale: float, out: Any
            ) -> None:
                rows = likelihood.per_language(tensors)
                kernels.add_likelihood_term(rows, likelihood.languages, ratio, total, scale, out)

            return likelihood_term
        if name == "sequence_stats":
            lower = whitening(arrays["sequence_precision"])
            sequence_weights = np.ascontiguousarray(lower, dtype=np.float32)
            center = np.ascontiguousarray(
                arrays["sequence_mean"].astype(np.float64) @ lower, dtype=np.float32
            )
            values_name, mask_name = inputs["sequence"], inputs["mask"]

            def sequence_stats(
                tensors: Tensors, _logits: np.ndarray, scale: float, out: Any
            ) -> None:
                features = sequence_features(tensors[values_name], tensors[mask_name])
                kernels.add_whitened_distance(features, sequence_weights, center, scale, out)

            return sequence_stats
        raise ValueError(f"unknown OOD component {name!r}")

    def _token_likelihood(
        self, arrays: Mapping[str, np.ndarray], record: Mapping[str, Any]
    ) -> TokenLikelihood:
        # the likelihood components read the same table: built once, and one gather per batch
        # serves them all.
        if self._likelihood is None:
            self._likelihood = TokenLikelihood(
                arrays,
                vocab=int(record["vocab_size"]),
                start_id=int(record["start_id"]),
                ids_name=self.inputs["input_ids"],
                mask_name=self.inputs["attention_mask"],
            )
        return self._likelihood

    def component_scores(
        self, tensors: Mapping[str, np.ndarray], logits: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Each component's raw (unstandardised) value per row."""
        rows = _rows32(logits)
        values = {}
        for c, term in self._terms:
            values[c.name] = np.zeros(len(rows), dtype=np.float64)
            term(tensors, rows, 1.0, values[c.name])
        return values

    def score(self, tensors: Mapping[str, np.ndarray], logits: np.ndarray) -> np.ndarray:
        """The OOD score per row ([N] float64): higher is further from the training data."""
        rows = _rows32(logits)
        total = np.full(len(rows), self._offset, dtype=np.float64)
        for scale, term in self._scaled_terms:
            term(tensors, rows, scale, total)
        return total

    def flags(self, scores: np.ndarray) -> np.ndarray:
        """True where a score is above the calibrated threshold."""
        return scores > self.threshold


# --- serving: one model version's detector wired to its metrics --------------------------------


@dataclass(frozen=True, slots=True)
class OodResult:
    """Scores and flags of one request's rows, in order."""

    scores: np.ndarray
    flags: np.ndarray

    def fields(self, row: int) -> dict[str, Any]:
        """The REST answer's fields for one row."""
        return {"ood_score": round(float(self.scores[row]), 4), "ood": bool(self.flags[row])}


class OodMetrics:
    """Counters of scored and flagged rows per model and version, and each version's calibrated
    flag rate (what the OOD-rate alert compares the live rate with)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.scored = Counter(
            "modelgate_ood_scored",
            "Inputs (rows) given an out-of-distribution score.",
            ["model", "version"],
            registry=registry,
        )
        self.flagged = Counter(
            "modelgate_ood_flagged",
            "Inputs (rows) whose out-of-distribution score was above the calibrated threshold.",
            ["model", "version"],
            registry=registry,
        )
        self.expected_rate = Gauge(
            "modelgate_ood_expected_flag_rate",
            "Share of held-out in-distribution inputs flagged at the threshold (calibration).",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="max",
        )
        self.threshold = Gauge(
            "modelgate_ood_threshold",
            "The detector's calibrated threshold on the OOD score.",
            ["model", "version"],
            registry=registry,
            multiprocess_mode="max",
        )


def one_blas_thread() -> None:
    """Limit numpy's BLAS to one thread in this process (the gateway).

    The score's products are tiny (one row by a few hundred columns), and a multithreaded
    OpenBLAS keeps its extra threads spinning after every call: measured with
    `benchmarks/ood_cost.py`'s payloads, 457 us of CPU per digits score instead of 91 us, taken
    from the event loop and ONNX Runtime. The gateway has no large products to parallelise.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


class ModelOod:
    """Scores and counts a model version's rows, once per batch; never fails a request.

    `score_batch` runs in the version's batcher right after the backend answers a batch: its
    numpy calls and the counter updates are paid once for every row that shares the batch, and
    each request then picks up its rows' scores and flags with its outputs.
    """

    __slots__ = ("_detector", "_flagged", "_scored", "_threshold", "model", "version")

    def __init__(
        self, detector: OodDetector, metrics: OodMetrics, model: str, version: str
    ) -> None:
        self._detector = detector
        self._threshold = detector.threshold
        self.model, self.version = model, version
        self._scored = metrics.scored.labels(model=model, version=version)
        self._flagged = metrics.flagged.labels(model=model, version=version)
        metrics.expected_rate.labels(model=model, version=version).set(detector.expected_rate)
        metrics.threshold.labels(model=model, version=version).set(detector.threshold)

    @property
    def detector(self) -> OodDetector:
        return self._detector

    def score_batch(
        self, tensors: Mapping[str, np.ndarray], logits: np.ndarray
    ) -> OodResult | None:
        """The scores ([rows] float32) and flags of a batch's rows, counted in the metrics;
        None (logged) when the detector cannot score these tensors: a monitoring fault must not
        fail the predictions it watches."""
        try:
            scores = self._detector.score(tensors, logits).astype(np.float32)
        except Exception:
            log.warning("OOD scoring failed for %s/%s", self.model, self.version, exc_info=True)
            return None
        flags = scores > self._threshold
        self._scored.inc(len(scores))
        flagged = int(np.count_nonzero(flags))
        if flagged:
            self._flagged.inc(flagged)
        return OodResult(scores, flags)
