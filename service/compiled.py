"""Compiled loops (numba) for the per-request arithmetic that numpy does in many small calls.

On the request path an input is usually one row, and each numpy call costs a few microseconds
whatever its size; a loop over the row's values compiled with numba is one call. Users:
service/monitoring/kernels.py (the OOD score and drift features), service/preprocess/digit.py
(the digit normalisation) and service/postprocess.py (softmax and top-k).

Each kernel has one signature, compiled when its module is first imported, and the result is
cached on disk: beside the module (`__pycache__`), in numba's per-user cache directory where
that is not writable, or in `NUMBA_CACHE_DIR` where set. A later import loads it in a fraction
of a second. Where no directory is writable (a read-only image without `NUMBA_CACHE_DIR`) the
kernels are compiled in memory at every start instead (~2 s): never a failed start.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, types

log = logging.getLogger(__name__)

# Inputs are declared read-only: tensors decoded from a backend's answer (or a client's raw
# bytes) are read-only views, and a writable array converts to these types as well.
F32_1 = types.Array(types.float32, 1, "C", readonly=True)
F32_2 = types.Array(types.float32, 2, "C", readonly=True)
F32_3 = types.Array(types.float32, 3, "C", readonly=True)
F64_2 = types.Array(types.float64, 2, "C", readonly=True)
I64_1 = types.Array(types.int64, 1, "C", readonly=True)
I64_2 = types.Array(types.int64, 2, "C", readonly=True)
U8_2 = types.Array(types.uint8, 2, "C", readonly=True)
OUT_F32_2 = types.Array(types.float32, 2, "C")
OUT_F64_1 = types.Array(types.float64, 1, "C")  # also what the `add_*` kernels accumulate into
OUT_F64_2 = types.Array(types.float64, 2, "C")
OUT_I64_2 = types.Array(types.int64, 2, "C")


def compiled(signature: Any) -> Callable[[Callable[..., Any]], Any]:
    """numba's njit with one signature, cached on disk where possible (module docstring).
    Without a signature (None) the function is compiled for the types of its callers: for
    helpers that other kernels call."""

    def compile_function(function: Callable[..., Any]) -> Any:
        signatures = () if signature is None else (signature,)
        try:
            return njit(*signatures, cache=True, nogil=True)(function)
        except RuntimeError as exc:  # numba: "cannot cache function ...: no locator available"
            log.info("compiling %s without a disk cache: %s", function.__name__, exc)
            return njit(*signatures, nogil=True)(function)

    return compile_function


@compiled(None)
def border_ring(pixels: Any) -> Any:  # pragma: no cover - compiled
    """The outermost ring of pixels of a 2-D array (every pixel when it is 2 wide or less),
    sorted, as float64 (exact for the uint8 and float32 values it is given)."""
    rows, cols = pixels.shape
    if min(rows, cols) <= 2:
        ring = pixels.ravel().astype(np.float64)
    else:
        ring = np.empty(2 * cols + 2 * (rows - 2), dtype=np.float64)
        for c in range(cols):
            ring[c] = pixels[0, c]
            ring[cols + c] = pixels[rows - 1, c]
        for r in range(1, rows - 1):
            ring[2 * cols + r - 1] = pixels[r, 0]
            ring[2 * cols + rows - 2 + r - 1] = pixels[r, cols - 1]
    ring.sort()
    return ring
