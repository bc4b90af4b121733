"""Data fingerprints: which exact examples a model was trained and evaluated on.

A fingerprint names a dataset's source (the package that ships it, and that
package's installed version), its split definition, its size, and a SHA-256
over the exact examples and labels, the way DVC pins a data file without a
remote. Two builds on the same examples get the same hash; any changed
example, label, order or split gives a different one.

Loaders in `training/data.py` are decorated with `@loads(...)`; while a build
holds `collect()` open, every split those loaders return is hashed and
recorded. Outside `collect()` the decorator costs nothing, so the gateway's
load-test payloads (which call the same loaders) never hash anything. Needs
numpy only: no torch, no MLflow.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from importlib import metadata
from typing import Any, ParamSpec, TypeVar

import numpy as np


@dataclass(frozen=True)
class Fingerprint:
    """One dataset as a build saw it."""

    name: str  # e.g. "digits train", "digits held-out"
    package: str  # the installed distribution that ships the data
    package_version: str
    split: str  # how the examples were chosen from the source
    size: int  # number of examples
    sha256: str  # over the exact examples and labels, in order

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def source(self) -> str:
        return f"{self.package} {self.package_version}"


def content_hash(*parts: Any) -> str:
    """SHA-256 over arrays, strings and (nested) sequences of them, dtype and shape included.

    Every element is framed with its type, shape and length, so reshaping,
    retyping or moving an item between neighbours changes the hash.
    """
    digest = hashlib.sha256()
    for part in parts:
        _update(digest, part)
    return digest.hexdigest()


def _update(digest: Any, value: Any) -> None:
    if isinstance(value, np.ndarray):
        array = np.ascontiguousarray(value)
        digest.update(f"ndarray|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())
    elif isinstance(value, str):
        encoded = value.encode("utf-8")
        digest.update(f"str|{len(encoded)}|".encode())
        digest.update(encoded)
    elif isinstance(value, bytes):
        digest.update(f"bytes|{len(value)}|".encode())
        digest.update(value)
    elif isinstance(value, int | float | bool):
        digest.update(f"{type(value).__name__}|{value!r}|".encode())
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        digest.update(f"{type(value).__name__}|".encode())
        for field in dataclasses.fields(value):
            digest.update(f"{field.name}=".encode())
            _update(digest, getattr(value, field.name))
    elif isinstance(value, Sequence):
        digest.update(f"seq|{len(value)}|".encode())
        for item in value:
            _update(digest, item)
    else:
        raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def _size(value: Any) -> int:
    """Number of examples in a split: the length of its first field (or of itself)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return len(getattr(value, dataclasses.fields(value)[0].name))
    return len(value)


def package_version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def fingerprint(name: str, package: str, split: str, examples: Any) -> Fingerprint:
    return Fingerprint(
        name=name,
        package=package,
        package_version=package_version(package),
        split=split,
        size=_size(examples),
        sha256=content_hash(examples),
    )


_collected: ContextVar[dict[str, Fingerprint] | None] = ContextVar("collected", default=None)


@contextmanager
def collect() -> Iterator[dict[str, Fingerprint]]:
    """Record every dataset loaded inside the block (name -> fingerprint, in load order)."""
    seen: dict[str, Fingerprint] = {}
    token = _collected.set(seen)
    try:
        yield seen
    finally:
        _collected.reset(token)


def record(name: str, package: str, split: str, examples: Any) -> None:
    """Fingerprint `examples` into the open `collect()` block, if any.

    For evaluation sets derived from a loaded split (an inverted copy, a
    rendering): name the derivation in `split`.
    """
    seen = _collected.get()
    if seen is None:
        return
    fresh = fingerprint(name, package, split, examples)
    previous = seen.get(name)
    if previous is not None and previous != fresh:
        # One build must see one version of each dataset; two differing loads are a bug.
        raise ValueError(f"dataset {name!r} changed within one build: {previous} != {fresh}")
    seen[name] = fresh


P = ParamSpec("P")
R = TypeVar("R")


def loads(
    dataset: str, package: str, split: str, parts: tuple[str, ...] = ("train", "held-out")
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a loader returning one split per name in `parts` (a tuple, in that order)."""

    def decorate(loader: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(loader)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            result = loader(*args, **kwargs)
            if _collected.get() is not None:
                splits = result if isinstance(result, tuple) else (result,)
                if len(splits) != len(parts):
                    count = len(splits)
                    raise ValueError(f"{loader.__name__} returned {count} splits, not {parts}")
                for part, examples in zip(parts, splits, strict=True):
                    record(f"{dataset} {part}", package, f"{split}; {part} part", examples)
            return result

        return wrapper

    return decorate
