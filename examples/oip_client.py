"""Call a modelgate model with the stock Triton client (Open Inference Protocol, HTTP or gRPC).

Raw payloads (default): the model's BYTES input, found in its metadata, carries an image file,
a sentence or a JSON list of timesteps; the gateway preprocesses it and answers PROBABILITIES and
LABELS. Only `tritonclient` and numpy are needed for this.

Tensors (`--tensors`): the model's own input tensors, built here with the repository's
preprocessing (needs this repository on PYTHONPATH); the gateway validates, batches and forwards
them to Triton exactly as Triton would take them.

    python examples/oip_client.py digits_cnn --input digit.png
    python examples/oip_client.py langid_transformer --protocol grpc --url localhost:8081 \\
        --input "dónde está la biblioteca"
    python examples/oip_client.py vowels_gru --input utterance.json --tensors

Without --input each model gets a built-in sample (drawn digit, sentence, synthetic utterance).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_URLS = {"http": "localhost:8080", "grpc": "localhost:8081"}
SAMPLE_TEXT = "the weather is nice today"


def input_names(metadata: Any) -> tuple[str, list[tuple[str, str]]]:
    """The raw-payload BYTES input and the model's own (name, datatype) inputs."""
    inputs = metadata["inputs"] if isinstance(metadata, dict) else metadata.inputs
    pairs = [
        (i["name"], i["datatype"]) if isinstance(i, dict) else (i.name, i.datatype) for i in inputs
    ]
    raw = [name for name, datatype in pairs if datatype == "BYTES"]
    return raw[0], [(name, datatype) for name, datatype in pairs if datatype != "BYTES"]


def sample_payload(model: str, raw_input: str) -> bytes:
    """A built-in example payload for the kind of raw input the model takes."""
    if raw_input == "TEXT":
        return SAMPLE_TEXT.encode()
    if raw_input == "IMAGE_BYTES":
        sys.path.insert(0, str(ROOT))
        from service.examples import example_image
        from service.repository import load_model

        return example_image(load_model(ROOT / "model_repository" / model))
    rng = np.random.default_rng(0)  # a synthetic utterance: 20 timesteps x 12 channels
    return json.dumps((rng.normal(size=(20, 12)) * 0.3).round(3).tolist()).encode()


def read_payload(value: str, raw_input: str) -> bytes:
    """`--input`: a file for images and sequences, the sentence itself for text."""
    if raw_input == "TEXT":
        return value.encode()
    return Path(value).read_bytes()


def model_tensors(model: str, raw_input: str, payload: bytes) -> dict[str, np.ndarray]:
    """The model's own inputs for one payload, with the preprocessing the gateway applies."""
    sys.path.insert(0, str(ROOT))
    from service.preprocess import for_model
    from service.repository import load_model

    spec = load_model(ROOT / "model_repository" / model)
    preprocessor = for_model(spec, max_image_pixels=10**8)
    item: Any = payload if raw_input != "SEQUENCE_JSON" else json.loads(payload)
    tensors = preprocessor.preprocess(preprocessor.decode(item))
    return {name: array[None, ...] for name, array in tensors.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="digits_cnn, langid_transformer or vowels_gru")
    parser.add_argument("--protocol", choices=["http", "grpc"], default="http")
    parser.add_argument("--url", help="gateway host:port (default localhost:8080 / :8081)")
    parser.add_argument("--input", help="image file, sentence, or JSON file of timesteps")
    parser.add_argument("--tensors", action="store_true", help="send the model's own tensors")
    parser.add_argument("--top-k", type=int, default=3, help="labels to return")
    args = parser.parse_args(argv)

    client_module: Any = httpclient if args.protocol == "http" else grpcclient
    client = client_module.InferenceServerClient(args.url or DEFAULT_URLS[args.protocol])
    if not client.is_model_ready(args.model):
        print(f"model {args.model} is not ready", file=sys.stderr)
        return 1
    raw_input, own_inputs = input_names(client.get_model_metadata(args.model))
    payload = (
        read_payload(args.input, raw_input) if args.input else sample_payload(args.model, raw_input)
    )

    if args.tensors:
        arrays = model_tensors(args.model, raw_input, payload)
        dtypes = dict(own_inputs)
        inputs = []
        for name, array in arrays.items():
            tensor = client_module.InferInput(name, list(array.shape), dtypes[name])
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
    else:
        tensor = client_module.InferInput(raw_input, [1, 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[payload]], dtype=object))
        inputs = [tensor]

    outputs = [client_module.InferRequestedOutput(n) for n in ("PROBABILITIES", "LABELS")]
    result = client.infer(args.model, inputs, outputs=outputs, parameters={"top_k": args.top_k})
    probabilities = result.as_numpy("PROBABILITIES")[0]
    labels = [v.decode() for v in result.as_numpy("LABELS")[0]]
    mode = "tensors" if args.tensors else f"raw {raw_input}"
    print(f"{args.model} via OIP {args.protocol} ({mode}):")
    for label, probability in zip(labels, sorted(probabilities, reverse=True), strict=False):
        print(f"  {label:<12} {probability:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
