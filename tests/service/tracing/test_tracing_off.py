"""Tracing settings, and what "off" means: no tracer provider, and neither the OpenTelemetry
SDK nor an exporter even imported (FastAPI itself imports the OpenTelemetry API package)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.local_triton import PROJECT_ROOT
from service.settings import Settings

# Builds the whole gateway app in a fresh interpreter and reports what it imported.
PROBE = """
import sys
from pathlib import Path
from service.app import create_app
from service.settings import Settings

app = create_app(Settings(model_repository=Path(sys.argv[1]), otlp_endpoint=sys.argv[2]))
print(app.state.dataplane.tracing is not None)
tracing_modules = ("opentelemetry.sdk", "opentelemetry.exporter", "service.tracing")
print(sorted(name for name in sys.modules if name.startswith(tracing_modules)))
"""


@pytest.mark.parametrize(("endpoint", "traced"), [("", False), ("http://127.0.0.1:4317", True)])
def test_off_means_the_sdk_is_never_imported(
    tiny_repository: Path, endpoint: str, traced: bool
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tiny_repository), endpoint],
        capture_output=True,
        text=True,
        cwd=PROJECT_ROOT,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    has_tracer, modules = result.stdout.splitlines()[-2:]
    assert has_tracer == str(traced)
    if traced:
        assert "opentelemetry.sdk.trace" in modules
    else:
        assert modules == "[]"


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_endpoint_is_off(tiny_repository: Path, value: str) -> None:
    assert Settings(model_repository=tiny_repository, otlp_endpoint=value).otlp_endpoint is None


def test_tracing_is_off_by_default(tiny_repository: Path) -> None:
    assert Settings(model_repository=tiny_repository).otlp_endpoint is None


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("otlp_endpoint", "otel-collector:4317", "must be a URL"),
        ("otlp_protocol", "http/json", "otlp_protocol"),
        ("trace_sample_ratio", 1.5, "trace_sample_ratio"),
        ("trace_sample_ratio", -0.1, "trace_sample_ratio"),
        ("trace_service_name", "", "trace_service_name"),
    ],
)
def test_bad_tracing_settings_name_the_field(
    tiny_repository: Path, field: str, value: object, message: str
) -> None:
    with pytest.raises(ValidationError) as error:
        Settings(model_repository=tiny_repository, **{field: value})  # type: ignore[arg-type]
    assert message in str(error.value)
