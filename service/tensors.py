"""Batch assembly: pad variable dimensions at the end and concatenate along the batch dim.

Every variable-length input in the repository is padded at the end and masked
(docs/architecture.md), so rows of different lengths may share one batch. Padding is zero except
for token ids, which are padded with the model's `pad_id` (as in training, which pads with
`stack_padded`). Variable dims are
rounded up to a multiple of BUCKET_STEP so batches reuse a few shapes instead of one per request
(Triton's dynamic batcher only merges equal shapes). Steps of 8 rather than powers of two: a
recurrent model pays for every padded step, and doubling could nearly double its work. A
backend without a batcher of its own (the embedded ONNX Runtime) gets batches padded only to
their longest row: the padding would be work for nothing (a 17-token phrase padded to 24 costs
the language-id transformer 255 us instead of 192).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from service.repository import ModelSpec

BUCKET_STEP = 8


def pad_values(spec: ModelSpec) -> dict[str, int]:
    """The padding value of each input that is not padded with zero (token ids: `pad_id`)."""
    if spec.text is not None and spec.text.pad_id != 0:
        return {spec.text.input_ids: spec.text.pad_id}
    return {}


def stack_padded(rows: Sequence[np.ndarray], pad_value: float = 0) -> np.ndarray:
    """Per-item arrays whose first axis varies -> one (N, longest, ...) array padded at the end."""
    longest = max(1, max(len(row) for row in rows))
    out = np.full((len(rows), longest, *rows[0].shape[1:]), pad_value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, : len(row)] = row
    return out


def bucket_length(length: int, cap: int | None) -> int:
    """Round `length` up to a multiple of BUCKET_STEP, never beyond `cap` (unless it is longer)."""
    bucket = max(BUCKET_STEP, -(-length // BUCKET_STEP) * BUCKET_STEP)
    if cap is not None and cap > 0:
        bucket = min(bucket, max(cap, length))
    return bucket


class Collator:
    """Concatenates per-request tensors of one model into one batch."""

    def __init__(self, spec: ModelSpec, buckets: bool = True) -> None:
        """`buckets`: round variable dims up to BUCKET_STEP multiples (for a server that
        merges equal shapes); False pads them to the batch's longest row only."""
        self._buckets = buckets
        cap: int | None = None
        if spec.text is not None:
            cap = spec.text.max_length
        elif spec.sequence is not None:
            cap = spec.sequence.max_length
        self._cap = cap
        self._pad_values = pad_values(spec)
        # batch dim is axis 0, so dim i of the config is axis i + 1
        self._variable_axes = {
            t.name: tuple(i + 1 for i, d in enumerate(t.dims) if d < 0) for t in spec.inputs
        }

    def __call__(self, parts: Sequence[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """One dict of batched tensors from several dicts (each with a leading batch dim)."""
        batch: dict[str, np.ndarray] = {}
        for name, axes in self._variable_axes.items():
            arrays = [p[name] for p in parts]
            if not axes:
                batch[name] = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
                continue
            shape = [sum(a.shape[0] for a in arrays)]
            for axis in range(1, arrays[0].ndim):
                longest = max(a.shape[axis] for a in arrays)
                bucketed = self._buckets and axis in axes
                shape.append(bucket_length(longest, self._cap) if bucketed else longest)
            if len(arrays) == 1 and list(arrays[0].shape) == shape:
                batch[name] = arrays[0]
                continue
            # fill + slice copies: much cheaper than np.pad per part on the request path
            out = np.full(shape, self._pad_values.get(name, 0), dtype=arrays[0].dtype)
            row = 0
            for array in arrays:
                index = (slice(row, row + array.shape[0]), *(slice(0, n) for n in array.shape[1:]))
                out[index] = array
                row += array.shape[0]
            batch[name] = out
        return batch
