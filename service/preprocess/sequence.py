"""Sequences: a [T, C] list of timesteps, validated, normalised with training statistics, masked.

`sequence_inputs` is the one definition of the arithmetic: training (training/features.py) calls
it on every sequence, the gateway on every decoded payload.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from service.errors import BadInput
from service.preprocess.base import Preprocessor
from service.repository import SequenceSpec


def sequence_inputs(values: np.ndarray, spec: SequenceSpec) -> dict[str, np.ndarray]:
    """Normalised SEQUENCE [T, C] float32 and MASK [T] (unpadded) of one (T, C) sequence."""
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    normalised = ((np.asarray(values, dtype=np.float32) - mean) / std).astype(np.float32)
    return {spec.input: normalised, spec.mask: np.ones(len(normalised), dtype=np.float32)}


class SequencePreprocessor(Preprocessor):
    """Checks channels and length bounds; produces SEQUENCE [T, C] and MASK [T] (unpadded)."""

    def __init__(self, spec: SequenceSpec) -> None:
        if len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
            raise ValueError("mean and std need one value per channel")
        self.spec = spec

    def from_json(self, value: Any) -> list[Any]:
        # one sequence is [[c0, c1, ...], ...] (depth 2); several are a list of those (depth 3)
        if isinstance(value, list) and value and isinstance(value[0], list) and value[0]:
            if isinstance(value[0][0], list):
                return list(value)
            return [value]
        raise BadInput("a sequence input is a list of timesteps, each a list of channel values")

    def decode(self, payload: Any) -> np.ndarray:
        spec = self.spec
        try:
            array = np.asarray(payload, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise BadInput(f"sequence must be a rectangular list of numbers: {exc}") from exc
        if array.ndim != 2:
            raise BadInput(
                f"sequence must be 2-D [timesteps, {spec.channels}], got shape {list(array.shape)}"
            )
        length, channels = array.shape
        if channels != spec.channels:
            raise BadInput(f"each timestep needs {spec.channels} channels, got {channels}")
        if not spec.min_length <= length <= spec.max_length:
            raise BadInput(
                f"sequence length {length} outside [{spec.min_length}, {spec.max_length}]"
            )
        if not np.all(np.isfinite(array)):
            raise BadInput("sequence contains NaN or infinite values")
        return array

    def preprocess(self, decoded: np.ndarray) -> dict[str, np.ndarray]:
        return sequence_inputs(decoded, self.spec)
