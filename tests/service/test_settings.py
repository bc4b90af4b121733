"""Settings come from MODELGATE_* variables and fail fast with the field name."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tiny_repository: Path) -> None:
    monkeypatch.setenv("MODELGATE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv("MODELGATE_TRITON_URL", "a:8001, b:8001")
    monkeypatch.setenv("MODELGATE_MAX_QUEUE_SIZE", "7")
    monkeypatch.setenv("MODELGATE_API_KEY", "s3cret")
    settings = Settings()
    assert settings.triton_urls == ["a:8001", "b:8001"]
    assert settings.max_queue_size == 7
    assert settings.api_key is not None and settings.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


@pytest.mark.parametrize(
    ("env", "value", "field"),
    [
        ("MODELGATE_MAX_QUEUE_SIZE", "0", "max_queue_size"),
        ("MODELGATE_BACKEND", "tensorflow", "backend"),
        ("MODELGATE_TRITON_URL", "http://host:8001", "triton_url"),
        ("MODELGATE_REQUEST_TIMEOUT_S", "soon", "request_timeout_s"),
    ],
)
def test_invalid_values_fail_naming_the_field(
    monkeypatch: pytest.MonkeyPatch, tiny_repository: Path, env: str, value: str, field: str
) -> None:
    monkeypatch.setenv("MODELGATE_MODEL_REPOSITORY", str(tiny_repository))
    monkeypatch.setenv(env, value)
    with pytest.raises(ValidationError, match=field):
        Settings()


def test_missing_repository_fails(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not a directory"):
        Settings(model_repository=tmp_path / "nope")


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"setting {name} has no docstring"
