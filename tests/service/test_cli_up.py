"""`modelgate up` starts Triton and the gateway, prints working curls, stops both cleanly."""

from __future__ import annotations

import json
import os
import queue
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from service.local_triton import free_port, port_in_use

pytestmark = [pytest.mark.triton, pytest.mark.gateway, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def read_lines(stream: object, sink: queue.Queue[str]) -> None:
    for line in stream:  # type: ignore[attr-defined]
        sink.put(line)


@pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl command")
def test_up_prints_working_examples_and_stops_cleanly(model_repository: Path) -> None:
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "service.cli",
            "up",
            "--port",
            str(port),
            "-r",
            str(model_repository),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        cwd=ROOT,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        give_up = time.monotonic() + 120
        while not any("Press Ctrl-C" in line for line in output):
            assert time.monotonic() < give_up, "".join(output)
            assert process.poll() is None, "".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
        text = "".join(output)
        assert f"http://127.0.0.1:{port}/metrics" in text
        curls = [line.strip() for line in output if line.strip().startswith("curl ")]
        assert len(curls) == 3
        for command in curls:
            result = subprocess.run(
                shlex.split(command), capture_output=True, text=True, timeout=30
            )
            body = json.loads(result.stdout)
            assert body["predictions"][0]["label"], body
            assert len(body["predictions"][0]["top_k"]) == 3
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()  # the gateway and Triton it started
            process.kill()
            process.wait()
            time.sleep(1)  # let the reader thread drain what was printed
            while not lines.empty():
                output.append(lines.get())
            pytest.fail("`up` did not stop within 60 s of Ctrl-C:\n" + "".join(output))
    assert code == 0, "".join(output)
    assert not port_in_use(port)
