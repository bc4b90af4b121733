"""Shadow copies: compared in the background, bounded, dropped first, never surfacing errors."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from service.postprocess import softmax
from service.shadow import Shadow, ShadowMetrics, compare


def test_compare_counts_agreement_and_mean_abs_difference() -> None:
    primary = np.array([[2.0, 0.0, 0.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    shadow = np.array([[1.0, 0.0, 0.0], [3.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    agreement = compare(primary, shadow)
    assert agreement.rows == 3 and agreement.top1_agree == 2
    expected = np.abs(softmax(primary) - softmax(shadow)).mean(axis=1)
    np.testing.assert_allclose(agreement.abs_diff, expected)
    assert agreement.abs_diff[2] == 0.0 and agreement.abs_diff[1] > agreement.abs_diff[0] > 0


def test_compare_matches_classes_by_label() -> None:
    """A new version that reorders its labels is compared class by class, not column by column."""
    primary = np.array([[5.0, 0.0]], dtype=np.float32)
    shadow = np.array([[0.0, 5.0]], dtype=np.float32)  # the same answer, columns swapped
    agreement = compare(primary, shadow, ["cat", "dog"], ["dog", "cat"])
    assert agreement.top1_agree == 1 and agreement.abs_diff[0] == pytest.approx(0.0)
    # A class only the shadow knows takes probability from the others.
    wider = compare(primary, np.array([[5.0, 0.0, 5.0]]), ["cat", "dog"], ["cat", "dog", "cow"])
    assert wider.top1_agree == 1 and wider.abs_diff[0] > 0.1
    # Renamed labels (no name in common) are compared by position.
    renamed = compare(primary, primary * 0.5, ["cat", "dog"], ["chat", "chien"])
    assert renamed.top1_agree == 1 and renamed.abs_diff[0] > 0


@pytest.mark.parametrize(
    ("primary", "shadow"),
    [
        (np.zeros((2, 3)), np.zeros((3, 3))),
        (np.zeros((2, 3)), np.zeros((2, 4))),
        (np.zeros(3), np.zeros(3)),
    ],
)
def test_compare_refuses_mismatched_outputs(primary: np.ndarray, shadow: np.ndarray) -> None:
    with pytest.raises(ValueError):
        compare(primary, shadow)


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test body on a fresh event loop (the suite uses no asyncio plugin)."""

    @functools.wraps(test)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return wrapper


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


PAIR = {"model": "m", "primary": "1", "shadow": "2"}


def make_shadow(
    max_inflight: int = 4, queue_fraction: float = 0.5
) -> tuple[Shadow, CollectorRegistry]:
    registry = CollectorRegistry()
    return Shadow(ShadowMetrics(registry, ["m"]), max_inflight, queue_fraction), registry


@run_async
async def test_a_shadow_copy_is_compared_and_counted() -> None:
    shadow, registry = make_shadow()
    primary = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)

    async def run() -> np.ndarray:
        return np.array([[2.0, 0.0], [2.0, 0.0]], dtype=np.float32)

    assert shadow.offer("m", "1", "2", primary, run, queue_load=0.0)
    await asyncio.sleep(0.01)
    assert shadow.inflight == 0
    assert sample(registry, "modelgate_shadow_compared_total", **PAIR) == 2
    assert sample(registry, "modelgate_shadow_top1_agree_total", **PAIR) == 1
    expected = float(compare(primary, np.array([[2.0, 0.0], [2.0, 0.0]])).abs_diff.sum())
    assert sample(registry, "modelgate_shadow_abs_diff_sum", **PAIR) == pytest.approx(expected)
    assert sample(registry, "modelgate_shadow_abs_diff_count", **PAIR) == 2


@run_async
async def test_copies_beyond_the_bound_are_dropped_not_queued() -> None:
    shadow, registry = make_shadow(max_inflight=2)
    release = asyncio.Event()
    started = 0

    async def run() -> np.ndarray:
        nonlocal started
        started += 1
        await release.wait()
        return np.zeros((1, 2), dtype=np.float32)

    offers = [shadow.offer("m", "1", "2", np.zeros((1, 2)), run, 0.0) for _ in range(5)]
    assert offers == [True, True, False, False, False]
    await asyncio.sleep(0)
    assert started == 2
    assert sample(registry, "modelgate_shadow_dropped_total", model="m", reason="busy") == 3
    release.set()
    await asyncio.sleep(0.01)
    assert sample(registry, "modelgate_shadow_compared_total", **PAIR) == 2


@pytest.mark.parametrize(
    ("load", "accepted"), [(0.0, True), (0.5, True), (0.51, False), (1.0, False)]
)
@run_async
async def test_a_busy_queue_drops_the_copy_first(load: float, accepted: bool) -> None:
    shadow, registry = make_shadow(queue_fraction=0.5)
    called = False

    async def run() -> np.ndarray:
        nonlocal called
        called = True
        return np.zeros((1, 2), dtype=np.float32)

    assert shadow.offer("m", "1", "2", np.zeros((1, 2)), run, load) is accepted
    await asyncio.sleep(0.01)
    assert called is accepted
    dropped = sample(registry, "modelgate_shadow_dropped_total", model="m", reason="queue")
    assert dropped == (0 if accepted else 1)


@run_async
async def test_a_failing_shadow_is_counted_and_swallowed() -> None:
    shadow, registry = make_shadow()

    async def run() -> np.ndarray:
        raise RuntimeError("the candidate crashed")

    async def incomparable() -> np.ndarray:
        return np.zeros((1, 5), dtype=np.float32)

    shadow.offer("m", "1", "2", np.zeros((1, 2)), run, 0.0)
    shadow.offer("m", "1", "2", np.zeros((1, 2)), incomparable, 0.0)
    await asyncio.sleep(0.01)
    assert sample(registry, "modelgate_shadow_dropped_total", model="m", reason="failed") == 1
    assert sample(registry, "modelgate_shadow_dropped_total", model="m", reason="incomparable") == 1
    assert sample(registry, "modelgate_shadow_compared_total", **PAIR) == 0


@run_async
async def test_close_cancels_running_copies_and_refuses_new_ones() -> None:
    shadow, registry = make_shadow()

    async def forever() -> np.ndarray:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    shadow.offer("m", "1", "2", np.zeros((1, 2)), forever, 0.0)
    await asyncio.sleep(0)
    await asyncio.wait_for(shadow.close(), 1.0)
    assert shadow.inflight == 0
    assert not shadow.offer("m", "1", "2", np.zeros((1, 2)), forever, 0.0)
    assert sample(registry, "modelgate_shadow_dropped_total", model="m", reason="shutdown") == 2


def test_drop_reasons_exist_before_the_first_drop() -> None:
    _, registry = make_shadow()
    for reason in ("busy", "queue", "failed", "incomparable", "shutdown"):
        value = registry.get_sample_value(
            "modelgate_shadow_dropped_total", {"model": "m", "reason": reason}
        )
        assert value == 0.0
