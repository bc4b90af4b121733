"""The OIP client example runs against the real gateway for every model, protocol and mode."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

from tests.service.rest.conftest import RunningGateway, gateway  # noqa: F401 - shared fixture
from tests.service.rest.payloads import vowel_sequences

pytestmark = [pytest.mark.triton, pytest.mark.gateway]

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "oip_client.py"


@pytest.fixture(scope="module")
def example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("oip_client", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("tensors", [False, True], ids=["raw", "tensors"])
@pytest.mark.parametrize("model", ["digits_cnn", "langid_transformer", "vowels_gru"])
def test_example_prints_labels(
    example: ModuleType,
    gateway: RunningGateway,  # noqa: F811
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    model: str,
    protocol: str,
    tensors: bool,
) -> None:
    url = gateway.grpc_url if protocol == "grpc" else gateway.url.removeprefix("http://")
    argv = [model, "--protocol", protocol, "--url", url, "--top-k", "2"]
    expected: str | None = None
    if model == "langid_transformer":
        argv += ["--input", "guten morgen meine freunde"]
        expected = "de"
    elif model == "vowels_gru":
        sequences, truth = vowel_sequences(1)
        path = tmp_path / "utterance.json"
        path.write_text(json.dumps(sequences[0]))
        argv += ["--input", str(path)]
        expected = truth[0]
    if tensors:
        argv.append("--tensors")
    assert example.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{model} via OIP {protocol}")
    assert len(lines) == 3  # two labels with their probabilities
    label, probability = lines[1].split()
    assert 0 < float(probability) <= 1
    if expected is not None:
        assert label == expected
