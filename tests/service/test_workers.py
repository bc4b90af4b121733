"""service/workers.py: the default worker count, and the admin log the workers share."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from service.backends.embedded import INLINE_US
from service.settings import Settings
from service.workers import (
    AdminChange,
    AdminLog,
    available_cores,
    embedded_inline_us,
    worker_count,
)

AFFINITY = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("cpu_max", "expected"),
    [
        (None, AFFINITY),  # no cgroup v2 file: the affinity
        ("max 100000\n", AFFINITY),  # no quota
        ("50000 100000\n", 1),  # half a core: still one
        ("150000 100000\n", min(AFFINITY, 1)),  # 1.5 cores: rounded down
        (f"{400000 * AFFINITY} 100000\n", AFFINITY),  # a quota above the affinity
        ("garbage\n", AFFINITY),
    ],
)
def test_available_cores_is_the_affinity_capped_by_the_cgroup_quota(
    tmp_path: Path, cpu_max: str | None, expected: int
) -> None:
    path = tmp_path / "cpu.max"
    if cpu_max is not None:
        path.write_text(cpu_max)
    assert available_cores(path) == expected


@pytest.mark.parametrize(
    ("workers", "backend", "cores", "expected"),
    [
        (3, "embedded", 16, 3),  # the setting wins
        (1, "triton", 16, 1),
        (0, "embedded", 4, 4),  # one per core when the gateway is all the work
        (0, "triton", 4, 2),  # half of them in front of Triton
        (0, "triton", 1, 1),
        (0, "embedded", 64, 8),  # at most 8 chosen by default
        (0, "triton", 64, 8),
    ],
)
def test_worker_count(workers: int, backend: str, cores: int, expected: int) -> None:
    settings = Settings(workers=workers, backend=backend, triton_url="localhost:8001")
    assert worker_count(settings, cores=cores) == expected


@pytest.mark.parametrize(
    ("setting", "workers", "cores", "expected"),
    [
        (None, 1, 2, INLINE_US),  # a core to spare: long batches go to a thread on it
        (None, 0, 2, INLINE_US),  # one process (the count was not exported)
        (None, 2, 2, float("inf")),  # every core has a worker: always inline (up to the rows)
        (None, 0, 1, float("inf")),
        (None, 4, 16, INLINE_US),
        (250.0, 2, 2, 250.0),  # the setting wins
        (0.0, 2, 2, 0.0),
    ],
)
def test_embedded_inline_limit(
    setting: float | None, workers: int, cores: int, expected: float
) -> None:
    settings = Settings(workers=workers, embedded_inline_us=setting, backend="embedded")
    assert embedded_inline_us(settings, cores=cores) == expected


class Applier:
    """What a worker's follow loop was asked to do; answers with `error` (None: done)."""

    def __init__(self, error: str | None = None) -> None:
        self.error = error
        self.applied: list[tuple[str, str]] = []

    async def __call__(self, change: AdminChange) -> str | None:
        self.applied.append((change.op, change.model))
        return self.error


async def _follow(log: AdminLog, apply: Applier) -> asyncio.Task[None]:
    log.catch_up()
    return asyncio.create_task(log.follow(apply))


async def _stop(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_a_change_is_applied_by_every_other_worker_and_confirmed(tmp_path: Path) -> None:
    path = tmp_path / "admin.jsonl"

    async def scenario() -> None:
        a, b, c = (AdminLog(path, peers=2, worker=w) for w in "abc")
        applied = {w: Applier() for w in "abc"}
        tasks = [await _follow(log, applied[log.worker]) for log in (a, b, c)]
        try:
            change = a.publish("unload", "vowels_gru")
            assert await a.confirmations(change, timeout_s=10) == []
            change = b.publish("load", "vowels_gru")
            assert await b.confirmations(change, timeout_s=10) == []
        finally:
            await _stop(*tasks)
        # each worker applied the other workers' changes, in order, and never its own
        assert applied["a"].applied == [("load", "vowels_gru")]
        assert applied["b"].applied == [("unload", "vowels_gru")]
        assert applied["c"].applied == [("unload", "vowels_gru"), ("load", "vowels_gru")]

    asyncio.run(scenario())


def test_a_worker_that_fails_or_does_not_answer_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "admin.jsonl"

    async def scenario() -> None:
        a = AdminLog(path, peers=2, worker="a")
        b = AdminLog(path, peers=2, worker="b")  # the third worker never answers
        tasks = [await _follow(a, Applier()), await _follow(b, Applier("no such file: x.onnx"))]
        try:
            change = a.publish("load", "digits_cnn")
            problems = await a.confirmations(change, timeout_s=0.5)
        finally:
            await _stop(*tasks)
        assert problems == [
            "worker b: no such file: x.onnx",
            "1 of 2 other worker(s) did not confirm within 0.5 s",
        ]

    asyncio.run(scenario())


def test_a_worker_started_later_catches_up_with_the_last_change_of_each_model(
    tmp_path: Path,
) -> None:
    path = tmp_path / "admin.jsonl"
    first = AdminLog(path, peers=1, worker="a")
    for op, model in [("unload", "m1"), ("unload", "m2"), ("load", "m2"), ("unload", "m3")]:
        first.publish(op, model)
    with path.open("ab") as file:
        file.write(b'{"id":"a-9","op":"unload","mod')  # a line being written: not yet a change
    later = AdminLog(path, peers=1, worker="b")
    assert later.catch_up() == {"m1": "unload", "m2": "load", "m3": "unload"}

    async def scenario() -> list[tuple[str, str]]:
        applier = Applier()
        task = asyncio.create_task(later.follow(applier))
        try:
            with path.open("ab") as file:  # the rest of that line arrives
                file.write(b'el":"m4","worker":"a"}\n')
            for _ in range(100):
                if applier.applied:
                    break
                await asyncio.sleep(0.02)
        finally:
            await _stop(task)
        return applier.applied

    # what was in the log before it started is not applied again; what follows is, once whole
    assert asyncio.run(scenario()) == [("unload", "m4")]


def test_an_unreadable_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "admin.jsonl"
    path.write_bytes(b'not json\n["a list"]\n{"op":"unload","model":"m","id":"x-1","worker":"x"}\n')
    assert AdminLog(path, peers=1, worker="b").catch_up() == {"m": "unload"}


def test_a_worker_started_while_a_change_waits_confirms_it_once_caught_up(tmp_path: Path) -> None:
    """It replaces one that died before confirming: without it the wait would time out."""
    path = tmp_path / "admin.jsonl"

    async def scenario() -> list[str]:
        a = AdminLog(path, peers=2, worker="a")
        b = AdminLog(path, peers=2, worker="b")
        tasks = [await _follow(a, Applier()), await _follow(b, Applier())]
        old = AdminLog(path, peers=2, worker="x")  # an earlier change, confirmed by all
        done = old.publish("load", "m0")
        for worker in ("a", "b"):
            old._append({"confirms": done.id, "worker": worker, "error": None})
        try:
            change = a.publish("unload", "m1")
            await asyncio.sleep(0.3)  # b confirms; the third worker is dead
            late = AdminLog(path, peers=2, worker="d")
            assert late.catch_up() == {"m0": "load", "m1": "unload"}
            late.confirm_caught_up()  # after it has unloaded m1 itself
            problems = await a.confirmations(change, timeout_s=10)
        finally:
            await _stop(*tasks)
        confirmed = [line for line in path.read_text().splitlines() if '"worker":"d"' in line]
        assert len(confirmed) == 1 and change.id in confirmed[0]  # not the confirmed m0 again
        return problems

    assert asyncio.run(scenario()) == []
