"""The numba helper: kernels compile ahead, and without a writable cache they still compile."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from numba import types

from service import compiled


def test_a_kernel_compiles_without_a_writable_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where numba finds no writable cache directory (a read-only image without
    NUMBA_CACHE_DIR), cache=True raises; the kernel is then compiled in memory instead. The
    condition is simulated (this suite may run as root, whom file modes do not stop)."""
    real = compiled.njit

    def no_cache_locator(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("cache"):
            raise RuntimeError("cannot cache function 'double': no locator available for file")
        return real(*args, **kwargs)

    monkeypatch.setattr(compiled, "njit", no_cache_locator)

    def double(values: np.ndarray) -> np.ndarray:
        return values * 2

    kernel = compiled.compiled(compiled.OUT_F64_1(types.float64[::1]))(double)
    assert kernel(np.array([1.0, 2.5])).tolist() == [2.0, 5.0]
    assert kernel.signatures  # compiled ahead, as the cached kernels are
