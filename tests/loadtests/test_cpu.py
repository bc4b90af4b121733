"""Load-generator CPU: when a run is marked untrustworthy."""

from __future__ import annotations

from loadtests.cpu import CpuSample, assess


def samples(busiest: list[float], start: float = 100.0) -> list[CpuSample]:
    return [CpuSample(start + i, b, b, 50.0) for i, b in enumerate(busiest)]


def test_saturation_needs_more_than_a_blip() -> None:
    assert not assess(samples([40.0] * 19 + [100.0]), threshold=90).saturated
    assert assess(samples([40.0] * 15 + [97.0] * 5), threshold=90).saturated


def test_only_the_measured_window_is_judged() -> None:
    # Saturated while building payloads and spawning, calm after the warm-up.
    busy_start = samples([100.0] * 5 + [30.0] * 10)
    judged = assess(busy_start, threshold=90, since=105.0)
    assert judged.samples == 10
    assert not judged.saturated
    assert judged.busiest_max == 30.0


def test_no_samples_is_not_saturation() -> None:
    result = assess([], threshold=90)
    assert not result.saturated
    assert result.describe() == "no CPU samples"
