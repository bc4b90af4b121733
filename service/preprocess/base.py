"""The contract every payload kind implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import numpy as np


class Preprocessor(ABC):
    """Turns one raw payload into the model's input tensors (without the batch dim).

    `decode` parses the payload (bytes to pixels, JSON to floats); `preprocess` does the
    model-specific arithmetic. They are separate so each stage has its own latency histogram.
    Both raise `service.errors.ModelGateError` subclasses on bad input.
    """

    @abstractmethod
    def from_json(self, value: Any) -> list[Any]:
        """Split the JSON `inputs` field (one payload or a list) into payloads."""

    @abstractmethod
    def decode(self, payload: Any) -> Any:
        """Parse and validate one payload."""

    @abstractmethod
    def preprocess(self, decoded: Any) -> dict[str, np.ndarray]:
        """Model input tensors for one decoded payload, without the batch dim."""
