"""Shared fixtures: real servers on free ports, started once per test session."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.local_triton import DEFAULT_REPOSITORY, LocalTriton, LocalTritonError

# Gateways the tests start stop at once on SIGTERM (no drain window): the drain tests set their own.
os.environ.setdefault("MODELGATE_DRAIN_S", "0")

# Lets a developer point the suite at another repository (for example one being built).
ENV_TEST_REPOSITORY = "MODELGATE_TEST_MODEL_REPOSITORY"


def served_repository() -> Path:
    """The model repository the serving tests run against (the committed one by default)."""
    configured = os.environ.get(ENV_TEST_REPOSITORY)
    return Path(configured).resolve() if configured else DEFAULT_REPOSITORY


@pytest.fixture(scope="session")
def model_repository() -> Path:
    """The model repository the serving tests run against (the committed one by default)."""
    return served_repository()


@contextlib.contextmanager
def running_triton(repository: Path, what: str) -> Iterator[LocalTriton]:
    """A real tritonserver (pip-shipped binary) serving `repository` on free ports."""
    server = LocalTriton(repository)
    try:
        server.start()
    except LocalTritonError as exc:
        pytest.fail(f"cannot start {what}: {exc}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def triton_server(model_repository: Path) -> Iterator[LocalTriton]:
    """A real tritonserver (pip-shipped binary) serving `model_repository` on free ports."""
    with running_triton(model_repository, "the local Triton server") as server:
        yield server
