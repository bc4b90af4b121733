"""One shutdown budget: every step after the drain window asks what is left of the grace."""

from __future__ import annotations

import time

import pytest

from service import drain


def test_the_whole_grace_before_a_shutdown_starts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain._state, "shutdown_ends", None)
    assert drain.grace_left(10.0) == 10.0


def test_what_is_left_once_it_has_started(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain._state, "shutdown_ends", time.monotonic() + 3.0)
    assert 2.0 < drain.grace_left(10.0) <= 3.0
    assert drain.grace_left(1.0) == 1.0  # a step's own, shorter limit still holds


def test_nothing_once_the_budget_is_spent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drain._state, "shutdown_ends", time.monotonic() - 1.0)
    assert drain.grace_left(10.0) == 0.0
