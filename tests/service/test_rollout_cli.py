"""`modelgate rollout`: each step is one routing file change with a clear refusal when it
makes no sense (the gateway applying it live is tested end to end in test_rollout_e2e)."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelgate.cli import app
from service.model_contract import CONFIG_FILE, ROUTING_FILE

runner = CliRunner()


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    model = tmp_path / "m"
    for version in ("1", "2"):
        (model / version).mkdir(parents=True)
    (model / CONFIG_FILE).write_text('name: "m"\nversion_policy: { latest: { num_versions: 2 } }\n')
    return tmp_path


def rollout(repo: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["rollout", *args, "-r", str(repo)])
    return result.exit_code, result.output


def routing(repo: Path) -> dict[str, object]:
    data = json.loads((repo / "m" / ROUTING_FILE).read_text())
    assert isinstance(data, dict)
    return data


def test_the_whole_lifecycle(repo: Path) -> None:
    assert rollout(repo, "hold", "m", "--version", "1")[0] == 0
    assert routing(repo) == {"weights": {"1": 100}}

    code, out = rollout(repo, "canary", "m", "--version", "2", "--percent", "10")
    assert code == 0 and "v1 90 %, v2 10 %" in out
    assert routing(repo) == {"weights": {"1": 90, "2": 10}}

    assert rollout(repo, "shadow", "m", "--version", "2")[0] == 0
    assert routing(repo) == {"weights": {"1": 90, "2": 10}, "shadow": "2"}

    code, out = rollout(repo, "status", "m")
    assert code == 0 and "v1 90 %, v2 10 %" in out and "shadow: v2" in out
    assert "rollback goes to: v1 alone (ends the canary/shadow)" in out

    code, out = rollout(repo, "promote", "m")
    assert code == 0 and "promoted" in out
    assert routing(repo) == {"weights": {"2": 100}, "previous": "1"}
    assert "rollback goes to: v1" in rollout(repo, "status", "m")[1]

    code, out = rollout(repo, "rollback", "m")
    assert code == 0 and "v1 100 %" in out
    assert routing(repo) == {"weights": {"1": 100}}


def test_rollback_ends_a_canary_without_a_promote(repo: Path) -> None:
    rollout(repo, "hold", "m", "--version", "1")
    rollout(repo, "canary", "m", "--version", "2", "--percent", "30")
    rollout(repo, "shadow", "m", "--version", "2")
    assert rollout(repo, "rollback", "m")[0] == 0
    assert routing(repo) == {"weights": {"1": 100}}


def test_promote_without_a_routing_file_takes_the_newest(repo: Path) -> None:
    rollout(repo, "hold", "m", "--version", "1")
    assert rollout(repo, "promote", "m")[0] == 0
    assert routing(repo) == {"weights": {"2": 100}, "previous": "1"}


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        ([], ["rollback", "m"], "nothing to roll back"),
        ([], ["promote", "m"], "v2 already takes all unpinned traffic"),
        ([], ["canary", "m", "--version", "3", "--percent", "5"], "serves no version 3"),
        ([], ["canary", "m", "--version", "2", "--percent", "5"], "v2 already takes most"),
        (["hold", "m", "--version", "1"], ["canary", "m", "--version", "2", "--percent", "100"],
         "use promote for 100 %"),
        ([], ["shadow", "m", "--version", "2"], "already takes all traffic"),
        ([], ["status", "nope"], "no model 'nope'"),
    ],
)  # fmt: skip
def test_steps_that_make_no_sense_are_refused(
    repo: Path, setup: list[str], args: list[str], message: str
) -> None:
    if setup:
        assert rollout(repo, *setup)[0] == 0
    before = (repo / "m" / ROUTING_FILE).read_bytes() if setup else None
    code, out = rollout(repo, *args)
    assert code == 1 and message in out
    after = (repo / "m" / ROUTING_FILE).read_bytes() if setup else None
    assert before == after  # a refused step writes nothing


def test_a_broken_routing_file_is_named(repo: Path) -> None:
    (repo / "m" / ROUTING_FILE).write_text('{"weights": {"1": 50}}')
    code, out = rollout(repo, "promote", "m")
    assert code == 1 and "must sum to 100" in out and "fix or delete the file" in out


def test_only_versions_the_policy_keeps_can_be_routed(repo: Path) -> None:
    (repo / "m" / "3").mkdir()  # on disk, but the policy keeps the newest two: 2 and 3
    code, out = rollout(repo, "hold", "m", "--version", "1")
    assert code == 1 and "serves no version 1 (served: 2, 3" in out
    assert rollout(repo, "canary", "m", "--version", "2", "--percent", "5")[0] == 0


def test_shadow_needs_a_version_or_off(repo: Path) -> None:
    assert rollout(repo, "shadow", "m")[0] == 2


class _Metrics(http.server.BaseHTTPRequestHandler):
    text = ""

    def do_GET(self) -> None:
        body = self.text.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def metrics_server() -> Iterator[tuple[str, type[_Metrics]]]:
    handler = type("Handler", (_Metrics,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", handler
    server.shutdown()


GATEWAY_METRICS = """
modelgate_routing_weight{model="m",version="1"} 90.0
modelgate_routing_weight{model="m",version="2"} 10.0
modelgate_routing_weight{model="other",version="1"} 100.0
modelgate_routing_shadow{model="m",version="1"} 0.0
modelgate_routing_shadow{model="m",version="2"} %s
"""


def test_the_gateway_option_waits_for_weights_and_shadow(
    repo: Path, metrics_server: tuple[str, type[_Metrics]]
) -> None:
    url, handler = metrics_server
    handler.text = GATEWAY_METRICS % "1.0"
    rollout(repo, "hold", "m", "--version", "1")
    rollout(repo, "canary", "m", "--version", "2", "--percent", "10")
    code, out = rollout(repo, "shadow", "m", "--version", "2", "--gateway", url)
    assert code == 0 and f"in force at {url}" in out

    handler.text = GATEWAY_METRICS % "0.0"  # the gateway has not applied the shadow
    code, out = rollout(repo, "shadow", "m", "--version", "2", "--gateway", url, "--wait-s", "0.3")
    assert code == 1 and "did not apply it within 0.3 s" in out and "shadow None" in out

    code, out = rollout(repo, "status", "m", "--gateway", url)
    assert code == 0 and "routes: v1 90 %, v2 10 %" in out
