"""Named evaluation sets for language identification, with per-item results and groups.

Each set is a list of items (text, true language, groups such as `language` and
`length`); a detector maps texts to languages; evaluating gives one result per item,
from which the overall and per-group accuracies follow. Sets:

- `held_out`: the project's own held-out split (training.langid_corpus);
- `home_assistant`: smart-home voice commands written by the Home Assistant community
  (`home-assistant-intents`, templates expanded with `hassil`), a source never used
  in training.

Detectors: the exported model (ONNX Runtime, through the repository's own files) and
two reference detectors restricted to the same eight languages, `py3langid` and
`lingua-language-detector` (evaluation-only dependencies, the `eval` extra).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import model_contract as contract
from training import features
from training.langid_corpus import LANGUAGES, SEED, build_corpus, word_count

LENGTH_GROUPS = ("1", "2", "3", "4", "5+")
SHORT_GROUPS = frozenset({"1", "2", "3", "4"})  # "<= 4 words"

HA_PER_LANGUAGE = 1000
HA_SAMPLES_PER_TEMPLATE = 200

Detector = Callable[[Sequence[str]], list[str]]


def length_group(text: str) -> str:
    n = word_count(text)
    return str(n) if n < 5 else "5+"


@dataclass(frozen=True)
class EvalItem:
    text: str
    label: str
    groups: Mapping[str, str]


@dataclass(frozen=True)
class EvalSet:
    name: str
    description: str
    items: tuple[EvalItem, ...]


@dataclass(frozen=True)
class ItemResult:
    item: EvalItem
    predicted: str

    @property
    def correct(self) -> bool:
        return self.predicted == self.item.label


@dataclass
class SetResult:
    """One detector on one set: per-item results and the accuracies they add up to."""

    set_name: str
    detector: str
    results: list[ItemResult] = field(default_factory=list)

    def accuracy(self, where: Callable[[EvalItem], bool] = lambda _item: True) -> float:
        chosen = [r.correct for r in self.results if where(r.item)]
        return round(float(np.mean(chosen)), 6) if chosen else float("nan")

    def by_group(self, key: str) -> dict[str, dict[str, float | int]]:
        values = sorted({r.item.groups[key] for r in self.results})
        if key == "length":
            values = [v for v in LENGTH_GROUPS if v in values]
        elif key == "language":
            values = [v for v in LANGUAGES if v in values]
        table: dict[str, dict[str, float | int]] = {}
        for value in values:
            chosen = [r.correct for r in self.results if r.item.groups[key] == value]
            table[value] = {"accuracy": round(float(np.mean(chosen)), 6), "size": len(chosen)}
        return table

    def to_json(self) -> dict[str, Any]:
        short = [r for r in self.results if r.item.groups["length"] in SHORT_GROUPS]
        return {
            "size": len(self.results),
            "accuracy": self.accuracy(),
            "short_size": len(short),
            "short_accuracy": self.accuracy(lambda item: item.groups["length"] in SHORT_GROUPS),
            "by_group": {key: self.by_group(key) for key in ("language", "length")},
        }


def evaluate(eval_set: EvalSet, detector: Detector, detector_name: str) -> SetResult:
    predicted = detector([item.text for item in eval_set.items])
    return SetResult(
        eval_set.name,
        detector_name,
        [ItemResult(item, p) for item, p in zip(eval_set.items, predicted, strict=True)],
    )


def _item(text: str, label: str) -> EvalItem:
    return EvalItem(text, label, {"language": label, "length": length_group(text)})


# --- sets ---------------------------------------------------------------------------


def held_out_set() -> EvalSet:
    corpus = build_corpus()
    return EvalSet(
        "held_out",
        "the project's own held-out split (same sources as training, items never trained on)",
        tuple(_item(e.text, e.language) for e in corpus.test),
    )


def _home_assistant_sentences(lang: str, rng: np.random.Generator) -> list[str]:
    """Every template of the language expanded (a bounded sample each), deduplicated.

    Templates that need a slot list the package does not ship (device, area and floor
    names, which each home defines) or a free-text wildcard are skipped.
    """
    from hassil.intents import Intents, RangeSlotList, SlotList
    from hassil.sample import sample_sentence
    from home_assistant_intents import get_intents

    data = get_intents(lang)
    if data is None:
        raise LookupError(f"home-assistant-intents ships no {lang!r} intents")
    intents = Intents.from_dict(data)
    # Number ranges (temperatures, timers, percentages) narrowed to a few values at random
    # points of the range: expanding every number as words takes minutes.
    slot_lists: dict[str, SlotList] = dict(intents.slot_lists)
    for name, slots in intents.slot_lists.items():
        if isinstance(slots, RangeSlotList):
            steps = (slots.stop - slots.start) // slots.step + 1
            start = slots.start + slots.step * int(rng.integers(0, max(1, steps - 2)))
            slot_lists[name] = dataclasses.replace(
                slots, start=start, stop=min(slots.stop, start + 2 * slots.step)
            )
    sentences: set[str] = set()
    for intent in intents.intents.values():
        for intent_data in intent.data:
            rules = {**intents.expansion_rules, **intent_data.expansion_rules}
            for template in intent_data.sentences:
                names = set(template.list_names(rules))
                # Checked before expanding: some templates take seconds to expand.
                if names & set(intent_data.wildcard_list_names) or names - set(slot_lists):
                    continue
                expanded = itertools.islice(
                    sample_sentence(template, slot_lists, rules, language=lang),
                    HA_SAMPLES_PER_TEMPLATE,
                )
                sentences.update(" ".join(s.split()) for s in expanded)
    return sorted(s for s in sentences if s)


@functools.cache  # read by the language-id evaluation and by the OOD figures: expanded once
def home_assistant_set() -> EvalSet:
    """Per language, a fixed random sample of its distinct commands (their own length mix)."""
    rng = np.random.default_rng(SEED)
    items: list[EvalItem] = []
    for lang in LANGUAGES:
        sentences = _home_assistant_sentences(lang, rng)
        chosen = rng.permutation(len(sentences))[:HA_PER_LANGUAGE]
        items += [_item(sentences[i], lang) for i in sorted(chosen)]
    return EvalSet(
        "home_assistant",
        "Home Assistant voice commands (`home-assistant-intents` templates expanded with "
        f"`hassil`, both Apache-2.0), {HA_PER_LANGUAGE} distinct commands drawn at random "
        "per language; never used in training",
        tuple(items),
    )


def evaluation_sets() -> list[EvalSet]:
    return [held_out_set(), home_assistant_set()]


# --- detectors ----------------------------------------------------------------------


def onnx_detector(model_dir: Path, version: int) -> Detector:
    """The exported model, through the repository's preprocessing.json and tokenizer.json."""
    from tokenizers import Tokenizer

    from training.evaluate import read_labels, read_preprocessing, run_onnx

    pre = read_preprocessing(model_dir, version)
    spec = pre["text"]
    labels = read_labels(model_dir, pre, version)
    tokenizer = Tokenizer.from_file(
        str(contract.artifact_path(model_dir, version, spec["tokenizer_file"]))
    )
    onnx_path = model_dir / str(version) / contract.MODEL_FILE

    def detect(texts: Sequence[str]) -> list[str]:
        ids, mask = features.text_tensors(list(texts), tokenizer, spec)
        logits = run_onnx(onnx_path, {spec["input_ids"]: ids, spec["attention_mask"]: mask})
        return [labels[i] for i in logits.argmax(axis=1)]

    return detect


def py3langid_detector() -> Detector:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_pickled_model(MODEL_FILE)
    identifier.set_languages(list(LANGUAGES))

    def detect(texts: Sequence[str]) -> list[str]:
        return [str(identifier.classify(t)[0]) for t in texts]

    return detect


def lingua_detector() -> Detector:
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    codes = [getattr(IsoCode639_1, lang.upper()) for lang in LANGUAGES]
    detector = LanguageDetectorBuilder.from_iso_codes_639_1(*codes).build()

    def detect(texts: Sequence[str]) -> list[str]:
        found = detector.detect_languages_in_parallel_of(list(texts))
        # lingua may decline to answer; that counts as wrong.
        return [lang.iso_code_639_1.name.lower() if lang else "none" for lang in found]

    return detect


REFERENCE_DETECTORS: dict[str, Callable[[], Detector]] = {
    "py3langid": py3langid_detector,
    "lingua": lingua_detector,
}


def evaluate_langid(
    model_dir: Path, version: int, references: bool = True
) -> dict[str, dict[str, Any]]:
    """Every set with the model (and, by default, the reference detectors) as JSON records."""
    detectors: dict[str, Callable[[], Detector]] = {
        "model": lambda: onnx_detector(model_dir, version)
    }
    if references:
        detectors.update(REFERENCE_DETECTORS)
    built = {name: make() for name, make in detectors.items()}
    record: dict[str, dict[str, Any]] = {}
    for eval_set in evaluation_sets():
        record[eval_set.name] = {
            "description": eval_set.description,
            "detectors": {
                name: evaluate(eval_set, detect, name).to_json() for name, detect in built.items()
            },
        }
    return record


def card_section(record: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown tables of every set: overall, <= 4 words and per length, for each detector."""
    lines = [
        "",
        "## Evaluation sets",
        "",
        "The model beside two reference detectors on the same items, both restricted to the "
        "same eight languages: `py3langid` (BSD) and `lingua-language-detector` (Apache-2.0; "
        "an item it declines to answer counts as wrong). Accuracy overall, on texts of at "
        "most 4 words, and by length in words.",
        "",
    ]
    for name, entry in record.items():
        detectors: Mapping[str, Mapping[str, Any]] = entry["detectors"]
        first = next(iter(detectors.values()))
        sizes = [str(first["by_group"]["length"].get(g, {}).get("size", 0)) for g in LENGTH_GROUPS]
        lines += [
            f"**{name}**: {entry['description']}; {first['size']} items "
            f"(by length 1/2/3/4/5+ words: {' / '.join(sizes)}).",
            "",
            "| detector | overall | <= 4 words | "
            + " | ".join(f"{g} w" for g in LENGTH_GROUPS)
            + " |",
            "|---|---|---|" + "---|" * len(LENGTH_GROUPS),
        ]
        for detector, result in detectors.items():
            by_length = result["by_group"]["length"]
            cells = [
                f"{by_length[g]['accuracy']:.4f}" if g in by_length else "-" for g in LENGTH_GROUPS
            ]
            lines.append(
                f"| {detector} | {result['accuracy']:.4f} | {result['short_accuracy']:.4f} | "
                + " | ".join(cells)
                + " |"
            )
        lines.append("")
    return "\n".join(lines)
