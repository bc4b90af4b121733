"""Request payloads are the models' real held-out data, encoded the way clients send it."""

from __future__ import annotations

import base64
import io
import json
from email.parser import BytesParser
from email.policy import HTTP
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loadtests import payloads
from loadtests.sla import PayloadKind, Shift, parse_sla
from training.data import load_digits_split, load_langid_split, load_vowels_split

SLA = parse_sla(
    """
load: {users: 1, spawn_rate: 1, duration_s: 1}
targets:
  - {model: digits_cnn, batch: 3, top_k: 2, budget: {p99_ms: 1}}
  - {model: langid_transformer, budget: {p99_ms: 1}}
  - {model: vowels_gru, batch: 2, budget: {p99_ms: 1}}
"""
)
DIGITS, LANGID, VOWELS = SLA.targets
(MULTIPART_DIGITS,) = parse_sla(
    """
load: {users: 1, spawn_rate: 1, duration_s: 1}
targets: [{model: digits_cnn, encoding: multipart, batch: 2, budget: {p99_ms: 1}}]
"""
).targets


def test_images_are_the_held_out_digits_losslessly_encoded() -> None:
    _train, test = load_digits_split()
    encoded = payloads.held_out_images("png")
    assert len(encoded) == len(test.images)
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(blob))) for blob in encoded])
    np.testing.assert_array_equal(decoded, test.images)
    jpeg = Image.open(io.BytesIO(payloads.held_out_images("jpeg")[0]))
    assert (jpeg.format, jpeg.size) == ("JPEG", (8, 8))


def test_texts_and_sequences_are_the_held_out_splits() -> None:
    _train, langid_test = load_langid_split()
    assert payloads.held_out_texts() == tuple(langid_test.texts)
    _train, vowels_test = load_vowels_split()
    sequences = payloads.held_out_sequences()
    assert len(sequences) == len(vowels_test.sequences) == 370
    assert all(s.shape[1] == 12 for s in sequences)


def test_rest_json_bodies_follow_the_api() -> None:
    bodies = payloads.rest_bodies(DIGITS, count=5)
    assert len(bodies) == 5
    document = json.loads(bodies[0].body)
    assert document["top_k"] == 2
    assert len(document["inputs"]) == bodies[0].items == 3
    image = Image.open(io.BytesIO(base64.b64decode(document["inputs"][0])))
    assert (image.format, image.mode, image.size) == ("PNG", "L", (8, 8))

    (text_body,) = payloads.rest_bodies(LANGID, count=1)
    (phrase,) = json.loads(text_body.body)["inputs"]
    assert phrase in payloads.held_out_texts()

    (sequence_body,) = payloads.rest_bodies(VOWELS, count=1)
    sequences = json.loads(sequence_body.body)["inputs"]
    assert len(sequences) == 2
    assert all(len(step) == 12 for seq in sequences for step in seq)


def test_pool_walks_the_split_without_repeating_early() -> None:
    bodies = payloads.rest_bodies(LANGID, count=200)
    phrases = [json.loads(b.body)["inputs"][0] for b in bodies]
    assert len(set(phrases)) > 150  # a seeded shuffle, not one phrase over and over


def test_multipart_bodies_carry_image_files() -> None:
    (body,) = payloads.rest_bodies(MULTIPART_DIGITS, count=1)
    assert body.content_type.startswith("multipart/form-data; boundary=")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + body.content_type.encode() + b"\r\n\r\n" + body.body
    )
    parts = list(message.iter_parts())
    assert len(parts) == 2
    assert all(p.get_param("name", header="content-disposition") == "files" for p in parts)
    assert all(p.get_content_type() == "image/png" for p in parts)


def test_oip_tensors_come_from_the_gateways_preprocessing(tmp_path: Path) -> None:
    repository = Path(__file__).resolve().parents[2] / "model_repository"
    sla = parse_sla(
        """
load: {users: 1, spawn_rate: 1, duration_s: 1}
targets:
  - {model: digits_cnn, protocol: v2_http, batch: 2, budget: {p99_ms: 1}}
  - {model: vowels_gru, protocol: v2_grpc, batch: 3, budget: {p99_ms: 1}}
grpc_url: localhost:8001
"""
    )
    image_target, sequence_target = sla.targets
    (images,) = payloads.tensor_requests(image_target, repository, count=1)
    ((name, pixels),) = images.tensors
    assert (name, pixels.shape, pixels.dtype) == ("IMAGE", (2, 1, 28, 28), np.float32)

    (sequences,) = payloads.tensor_requests(sequence_target, repository, count=1)
    values, mask = dict(sequences.tensors)["SEQUENCE"], dict(sequences.tensors)["MASK"]
    assert values.shape[0] == 3 and values.shape[2] == 12
    assert mask.shape == values.shape[:2]
    # Zero padding at the end, flagged by the mask (docs/architecture.md).
    for row in range(3):
        length = int(mask[row].sum())
        assert mask[row, :length].all() and not mask[row, length:].any()
        assert not values[row, length:].any()

    (body,) = payloads.v2_json_bodies(image_target, repository, count=1)
    (tensor,) = json.loads(body.body)["inputs"]
    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == (
        "IMAGE",
        "FP32",
        [2, 1, 28, 28],
    )
    assert len(tensor["data"]) == 2 * 28 * 28

    with pytest.raises(FileNotFoundError, match="set model_repository"):
        payloads.tensor_requests(image_target, tmp_path, count=1)


@pytest.mark.parametrize(
    ("kind", "shift"),
    [
        ("image", "inverted"),
        ("image", "noisy"),
        ("text", "foreign"),
        ("sequence", "scaled"),
        ("sequence", "noisy"),
    ],
)
def test_shifted_items_are_seeded_and_move_away_from_the_held_out_data(
    kind: PayloadKind, shift: Shift
) -> None:
    held_out = payloads.held_out_items(kind)
    shifted = payloads.held_out_items(kind, shift=shift)
    assert shifted is payloads.shifted_items(
        kind, shift, "png"
    )  # built once, the same items every time
    assert len(shifted) >= 300
    if kind == "image":
        original = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in held_out])
        moved = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in shifted])
        if shift == "inverted":
            np.testing.assert_array_equal(moved, 255 - original)
        else:
            difference = moved.astype(float) - original
            assert 30 < difference.std() < 50
    elif kind == "text":
        assert not set(shifted) & set(held_out)
        assert all(1 <= len(str(t).split()) <= 4 for t in shifted)
        assert any(any("\u0400" <= c <= "\u04ff" for c in str(t)) for t in shifted)  # Cyrillic
    else:
        assert len(shifted) == len(held_out)
        for original_seq, moved_seq in zip(held_out, shifted, strict=True):
            assert isinstance(original_seq, np.ndarray) and isinstance(moved_seq, np.ndarray)
            assert moved_seq.shape == original_seq.shape
            if shift == "scaled":
                np.testing.assert_allclose(moved_seq, original_seq * payloads.SEQUENCE_SCALE)
            else:
                assert not np.allclose(moved_seq, original_seq)


def test_rest_bodies_of_a_shifted_target_carry_the_shifted_items() -> None:
    (target,) = parse_sla(
        """
load: {users: 1, spawn_rate: 1, duration_s: 1}
targets: [{model: langid_transformer, shift: foreign, batch: 2, budget: {p99_ms: 1}}]
"""
    ).targets
    foreign = set(payloads.shifted_items("text", "foreign"))
    for body in payloads.rest_bodies(target, count=3):
        assert set(json.loads(body.body)["inputs"]) <= foreign
