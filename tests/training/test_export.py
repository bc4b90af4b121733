"""Export parity: passes on the real export, catches a graph broken at other shapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from service.model_contract import TensorSpec
from training.export import ParityError, check_parity, export_onnx
from training.models import LangIdTransformer

INPUTS = [TensorSpec("INPUT_IDS", "INT64", (-1,)), TensorSpec("ATTENTION_MASK", "INT64", (-1,))]
OUTPUTS = [TensorSpec("LOGITS", "FP32", (3,))]


def _inputs(batch: int, length: int) -> list[np.ndarray]:
    rng = np.random.default_rng(batch * 100 + length)
    ids = rng.integers(2, 50, size=(batch, length)).astype(np.int64)
    mask = np.ones((batch, length), dtype=np.int64)
    mask[1:, length // 2 + 1 :] = 0
    ids[mask == 0] = 0
    return [ids, mask]


@pytest.fixture(scope="module")
def transformer() -> LangIdTransformer:
    torch.manual_seed(0)
    return LangIdTransformer(vocab_size=50, num_classes=3, max_length=32).eval()


def test_dynamo_export_matches_pytorch_at_every_shape(transformer: LangIdTransformer) -> None:
    blob = export_onnx(transformer, INPUTS, OUTPUTS, _inputs(2, 8))
    cases = check_parity(transformer, blob, INPUTS, _inputs, (1, 5, 32))
    assert {(c.batch, c.length) for c in cases} >= {(1, 1), (3, 5), (64, 32)}
    assert max(c.max_abs_diff for c in cases) < 1e-4


def test_parity_check_catches_a_graph_baked_to_the_sample_shape(
    transformer: LangIdTransformer, tmp_path
) -> None:
    # The legacy exporter bakes the sample's shape into nn.TransformerEncoder.
    path = tmp_path / "legacy.onnx"
    sample = tuple(torch.from_numpy(a) for a in _inputs(2, 8))
    torch.onnx.export(
        transformer,
        sample,
        str(path),
        dynamo=False,
        input_names=["INPUT_IDS", "ATTENTION_MASK"],
        output_names=["LOGITS"],
        dynamic_axes={
            "INPUT_IDS": {0: "b", 1: "t"},
            "ATTENTION_MASK": {0: "b", 1: "t"},
            "LOGITS": {0: "b"},
        },
    )
    with pytest.raises(ParityError):
        check_parity(transformer, path.read_bytes(), INPUTS, _inputs, (1, 5, 32))
