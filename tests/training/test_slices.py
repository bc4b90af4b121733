"""Per-group accuracy from per-item correctness and group labels, and the floor check."""

from __future__ import annotations

import numpy as np
import pytest

from training.slices import EvaluationSet, GroupFloorError, group_report, markdown_table


def _set() -> EvaluationSet:
    correct = np.array([True, True, False, True, False, False])
    return EvaluationSet(
        "held-out",
        correct,
        {
            "speaker": ["a", "a", "a", "b", "b", "c"],
            "length": ["10 words", "2 words", "2 words", "2 words", "10 words", "10 words"],
        },
    )


def test_accuracy_per_group_of_each_dimension() -> None:
    report = group_report([_set()], floor=0.0)
    scores = {(g.dimension, g.name): (g.accuracy, g.size) for g in report.groups}
    assert scores == {
        ("speaker", "a"): (round(2 / 3, 6), 3),
        ("speaker", "b"): (0.5, 2),
        ("speaker", "c"): (0.0, 1),
        ("length", "2 words"): (round(2 / 3, 6), 3),
        ("length", "10 words"): (round(1 / 3, 6), 3),
    }
    # Numbers in names sort by value.
    assert [g.name for g in report.dimension("length")] == ["2 words", "10 words"]
    assert (report.worst.dimension, report.worst.name) == ("speaker", "c")
    assert report.gap("speaker") == round(2 / 3, 6)
    summary = report.to_json()
    assert summary["worst"] == {"dimension": "speaker", "group": "c", "accuracy": 0.0}
    assert summary["dimensions"]["speaker"]["best"] == "a"


def test_several_sets_are_family_groups() -> None:
    sets = [
        EvaluationSet("held-out", np.array([True, True, True, False])),
        EvaluationSet("held-out inverted", np.array([False, False, True])),
    ]
    report = group_report(sets, floor=0.5)
    assert [(g.name, g.accuracy, g.size) for g in report.dimension("family")] == [
        ("held-out", 0.75, 4),
        ("held-out inverted", round(1 / 3, 6), 3),
    ]
    assert report.gap("family") == round(0.75 - 1 / 3, 6)
    table = markdown_table(report)
    assert "| family | held-out inverted | 3 | 0.3333 |" in table
    assert "worst **held-out inverted**" in table


def test_floor_names_every_group_below_it() -> None:
    report = group_report([_set()], floor=0.5)
    with pytest.raises(GroupFloorError) as refused:
        report.check("vowels_gru")
    message = str(refused.value)
    assert message.startswith("vowels_gru: 2 group(s) below the floor 0.5000")
    assert "speaker 'c' (accuracy 0.0000, n=1)" in message
    assert "length '10 words' (accuracy 0.3333, n=3)" in message
    assert "speaker 'b'" not in message  # 0.5 is not below 0.5
    group_report([_set()], floor=0.0).check("vowels_gru")  # at the floor: ships


def test_labels_must_cover_every_item() -> None:
    with pytest.raises(ValueError, match="2 'speaker' labels for 3 items"):
        EvaluationSet("held-out", np.array([True, False, True]), {"speaker": ["a", "b"]})
