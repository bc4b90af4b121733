"""Concurrent clients that keep sending real requests and record every answer (lifecycle tests)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import httpx


@dataclass(frozen=True)
class Answer:
    """One request's outcome: when it finished, its status, the version and the probabilities."""

    finished: float
    image: int
    status: int
    version: str | None
    probabilities: dict[str, float]
    error: str = ""
    seconds: float = 0.0  # the request's latency as the client saw it


@dataclass
class LoadClients:
    """`clients` threads posting digit images to `path` back to back until `stop`."""

    base_url: str
    path: str
    images: list[bytes]
    clients: int = 8
    headers: dict[str, str] = field(default_factory=dict)
    answers: list[Answer] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> LoadClients:
        for index in range(self.clients):
            thread = threading.Thread(target=self._run, args=(index,), name=f"client-{index}")
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> list[Answer]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)
        return self.answers

    def _run(self, index: int) -> None:
        with httpx.Client(base_url=self.base_url, headers=self.headers, timeout=60) as client:
            turn = index
            while not self._stop.is_set():
                image = turn % len(self.images)
                turn += 1
                started = time.monotonic()
                try:
                    response = client.post(
                        self.path,
                        files=[("files", ("d.png", self.images[image], "image/png"))],
                        params={"top_k": 10},
                    )
                except httpx.HTTPError as exc:
                    self._record(Answer(time.monotonic(), image, 0, None, {}, repr(exc)))
                    continue
                if response.status_code != 200:
                    self._record(
                        Answer(
                            time.monotonic(),
                            image,
                            response.status_code,
                            None,
                            {},
                            response.text[:300],
                        )
                    )
                    continue
                body = response.json()
                (prediction,) = body["predictions"]
                probabilities = {p["label"]: p["probability"] for p in prediction["top_k"]}
                now = time.monotonic()
                self._record(
                    Answer(now, image, 200, body["version"], probabilities, seconds=now - started)
                )

    def summary(self) -> str:
        """One line for the log: answers, failures, answers per version, latency percentiles."""
        with self._lock:
            answers = list(self.answers)
        latencies = sorted(a.seconds for a in answers if a.status == 200) or [0.0]
        versions: dict[str, int] = {}
        for answer in answers:
            versions[str(answer.version)] = versions.get(str(answer.version), 0) + 1

        def percentile(q: float) -> float:
            return 1000 * latencies[min(len(latencies) - 1, int(q * len(latencies)))]

        return (
            f"{len(answers)} answers, {sum(a.status != 200 for a in answers)} failed, "
            f"per version {dict(sorted(versions.items()))}, latency ms p50 "
            f"{percentile(0.5):.1f} p99 {percentile(0.99):.1f} max {1000 * latencies[-1]:.1f}"
        )

    def _record(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def versions_since(self, since: float) -> set[str | None]:
        with self._lock:
            return {a.version for a in self.answers if a.finished >= since}

    def wait_for_version(self, version: str, since: float, timeout_s: float = 90.0) -> float:
        """Block until an answer of `version` finishes after `since`; returns when it did."""
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            with self._lock:
                for answer in self.answers:
                    if answer.version == version and answer.finished >= since:
                        return answer.finished
            time.sleep(0.05)
        raise AssertionError(f"no answer from version {version} within {timeout_s} s")
