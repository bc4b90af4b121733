"""The gateway-process helper's own failure paths: a clear message, not a hang or a bare error."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.local_triton import free_port
from tests.gateway_process import settings_env, start_gateway_process


def test_a_misspelt_setting_is_named() -> None:
    with pytest.raises(ValueError, match="not gateway settings: max_qeue_size"):
        settings_env({"max_qeue_size": 4})


def test_settings_become_modelgate_variables() -> None:
    assert settings_env({"drain_s": 2.0, "triton_url": "a:1,b:2"}) == {
        "MODELGATE_DRAIN_S": "2.0",
        "MODELGATE_TRITON_URL": "a:1,b:2",
    }


def test_a_gateway_that_exits_fails_the_test_with_its_log(
    model_repository: Path, tmp_path: Path
) -> None:
    log_path = tmp_path / "gateway.log"
    with pytest.raises(pytest.fail.Exception) as failure:
        start_gateway_process(
            log_path, {"model_repository": model_repository, "max_queue_size": -3}
        )
    message = str(failure.value)
    assert "the gateway exited with code 2 before it was ready" in message
    assert str(log_path) in message
    # the CLI's own reason, read back from the log
    assert "invalid settings" in message and "max_queue_size" in message


def test_a_gateway_that_never_gets_ready_fails_the_test_with_the_last_answer(
    model_repository: Path, tmp_path: Path
) -> None:
    dead_triton = f"127.0.0.1:{free_port()}"  # nothing listens there: /readyz stays 503
    settings = {"model_repository": model_repository, "triton_url": dead_triton}
    with pytest.raises(pytest.fail.Exception) as failure:
        start_gateway_process(tmp_path / "gateway.log", settings, ready_timeout_s=8)
    assert "was not ready within 8 s (last: 503" in str(failure.value)
