"""Per-group accuracy ("slices") and the floor a model's worst group must clear to ship.

An evaluation set is a name, one correct/incorrect flag per item and, per
grouping dimension, one group label per item (a speaker, a language, a phrase
length, an evaluation family). Groups are computed from those labels alone,
so a new evaluation set or dimension needs no code here: it only has to say,
for each item, which group it belongs to. Needs numpy only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# The dimension under which each evaluation set's items are grouped by the set's name.
FAMILY = "family"


class GroupFloorError(Exception):
    """A model's worst group is below the floor its recipe sets; the build writes nothing."""


@dataclass(frozen=True)
class EvaluationSet:
    """Items of one labelled evaluation set: correctness and group labels per item."""

    name: str  # e.g. "held-out", "held-out inverted"
    correct: np.ndarray  # (N,) bool
    groups: Mapping[str, Sequence[str]] = field(default_factory=dict)  # dimension -> N labels

    def __post_init__(self) -> None:
        for dimension, labels in self.groups.items():
            if len(labels) != len(self.correct):
                raise ValueError(
                    f"{self.name}: {len(labels)} {dimension!r} labels for {len(self.correct)} items"
                )


@dataclass(frozen=True)
class Group:
    dimension: str
    name: str
    size: int
    accuracy: float

    def label(self) -> str:
        return f"{self.dimension} {self.name!r} (accuracy {self.accuracy:.4f}, n={self.size})"


@dataclass(frozen=True)
class GroupReport:
    """Accuracy of every group of every dimension, and the floor the worst must clear."""

    groups: list[Group]
    floor: float

    def dimension(self, dimension: str) -> list[Group]:
        return [g for g in self.groups if g.dimension == dimension]

    @property
    def dimensions(self) -> list[str]:
        return list(dict.fromkeys(g.dimension for g in self.groups))

    @property
    def worst(self) -> Group:
        return min(self.groups, key=lambda g: g.accuracy)

    def gap(self, dimension: str) -> float:
        scores = [g.accuracy for g in self.dimension(dimension)]
        return round(max(scores) - min(scores), 6)

    @property
    def below_floor(self) -> list[Group]:
        return [g for g in self.groups if g.accuracy < self.floor]

    def check(self, model: str) -> None:
        """Raise `GroupFloorError` naming every group below the floor."""
        failing = sorted(self.below_floor, key=lambda g: g.accuracy)
        if failing:
            names = "; ".join(g.label() for g in failing)
            raise GroupFloorError(
                f"{model}: {len(failing)} group(s) below the floor {self.floor:.4f} set in its "
                f"recipe: {names}. Nothing was written; improve the model or, deliberately, "
                f"lower `group_floor` in training/recipes.py."
            )

    def to_json(self) -> dict[str, Any]:
        worst = self.worst
        by_dimension: dict[str, Any] = {}
        for dimension in self.dimensions:
            groups = self.dimension(dimension)
            low = min(groups, key=lambda g: g.accuracy)
            high = max(groups, key=lambda g: g.accuracy)
            by_dimension[dimension] = {
                "groups": {g.name: {"accuracy": g.accuracy, "size": g.size} for g in groups},
                "worst": low.name,
                "best": high.name,
                "gap": self.gap(dimension),
            }
        return {
            "floor": self.floor,
            "worst": {
                "dimension": worst.dimension,
                "group": worst.name,
                "accuracy": worst.accuracy,
            },
            "dimensions": by_dimension,
        }


def _natural(name: str) -> list[Any]:
    """Sort key that puts "2 words" before "10 words"."""
    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", name)]


def group_report(sets: Sequence[EvaluationSet], floor: float) -> GroupReport:
    """Accuracy per group over all sets; with several sets, each set is also a `family` group."""
    if not sets:
        raise ValueError("no evaluation sets")
    columns: dict[str, tuple[list[bool], list[str]]] = {}

    def add(dimension: str, correct: np.ndarray, labels: Sequence[str]) -> None:
        flags, names = columns.setdefault(dimension, ([], []))
        flags.extend(bool(c) for c in correct)
        names.extend(str(n) for n in labels)

    for evaluation_set in sets:
        if len(sets) > 1 and FAMILY not in evaluation_set.groups:
            add(FAMILY, evaluation_set.correct, [evaluation_set.name] * len(evaluation_set.correct))
        for dimension, labels in evaluation_set.groups.items():
            add(dimension, evaluation_set.correct, labels)
    groups: list[Group] = []
    for dimension, (flags, names) in columns.items():
        correct = np.asarray(flags, dtype=bool)
        label_array = np.asarray(names)
        for name in sorted(set(names), key=_natural):
            hits = correct[label_array == name]
            groups.append(Group(dimension, name, int(hits.size), round(float(hits.mean()), 6)))
    if not groups:
        raise ValueError("evaluation sets define no groups")
    return GroupReport(groups, floor)


def markdown_table(report: GroupReport) -> str:
    """The model card's "Groups" section body."""
    rows = ["| dimension | group | examples | accuracy |", "|---|---|---|---|"]
    for g in report.groups:
        rows.append(f"| {g.dimension} | {g.name} | {g.size} | {g.accuracy:.4f} |")
    lines = ["\n".join(rows), ""]
    for dimension in report.dimensions:
        groups = report.dimension(dimension)
        low = min(groups, key=lambda g: g.accuracy)
        high = max(groups, key=lambda g: g.accuracy)
        lines.append(
            f"- {dimension}: worst **{low.name}** ({low.accuracy:.4f}), best {high.name} "
            f"({high.accuracy:.4f}), gap {report.gap(dimension):.4f}."
        )
    worst = report.worst
    lines.append(
        f"\nWorst group overall: **{worst.dimension} {worst.name}** ({worst.accuracy:.4f}). "
        f"The build refuses to write a model whose worst group is below the recipe's floor, "
        f"{report.floor:.2f}."
    )
    return "\n".join(lines)
