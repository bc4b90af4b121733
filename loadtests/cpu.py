"""Watch the load generator's CPU: a saturated Locust measures itself, not the server.

Locust runs its users on one gevent loop per process, so a process near 100 %
of one core delays sending and timing alike and inflates every latency. The
monitor samples the Locust process tree (and the whole machine, since on a
small box the generator and the server compete for the same cores) once a
second from a thread of the runner.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import psutil

SATURATED_SHARE = 0.10  # saturated in more than this share of the samples => untrustworthy


@dataclass(frozen=True)
class CpuSample:
    at: float  # time.time()
    busiest_process_percent: float  # the busiest Locust process, % of one core
    generator_percent: float  # all Locust processes together, % of one core
    system_percent: float  # the whole machine, % of all cores


class CpuMonitor:
    """Samples a process tree's CPU in a background thread until `stop()`."""

    def __init__(self, pid: int, interval_s: float = 1.0) -> None:
        self._root = psutil.Process(pid)
        self._interval = interval_s
        self._known: dict[int, psutil.Process] = {}
        self._samples: list[CpuSample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-monitor", daemon=True)

    def start(self) -> CpuMonitor:
        psutil.cpu_percent(None)  # the first call only sets the baseline
        self._thread.start()
        return self

    def stop(self) -> list[CpuSample]:
        self._stop.set()
        self._thread.join(timeout=5)
        return list(self._samples)

    def _tree(self) -> list[psutil.Process]:
        try:
            processes = [self._root, *self._root.children(recursive=True)]
        except psutil.Error:
            return []
        for process in processes:
            if process.pid not in self._known:
                self._known[process.pid] = process
                with contextlib.suppress(psutil.Error):
                    process.cpu_percent(None)
        return [self._known[p.pid] for p in processes]

    def _run(self) -> None:
        self._tree()
        while not self._stop.wait(self._interval):
            percents = []
            for process in self._tree():
                try:
                    percents.append(process.cpu_percent(None))
                except psutil.Error:
                    continue
            if not percents:
                continue
            self._samples.append(
                CpuSample(
                    at=time.time(),
                    busiest_process_percent=max(percents),
                    generator_percent=sum(percents),
                    system_percent=psutil.cpu_percent(None),
                )
            )


@dataclass(frozen=True)
class CpuAssessment:
    """The generator's CPU over the measured window."""

    samples: int
    busiest_mean: float
    busiest_max: float
    saturated_share: float
    system_mean: float
    threshold: float

    @property
    def saturated(self) -> bool:
        return self.samples > 0 and self.saturated_share > SATURATED_SHARE

    def describe(self) -> str:
        if not self.samples:
            return "no CPU samples"
        return (
            f"busiest Locust process: mean {self.busiest_mean:.0f} %, max "
            f"{self.busiest_max:.0f} % of one core, >= {self.threshold:.0f} % in "
            f"{self.saturated_share:.0%} of samples; whole machine mean {self.system_mean:.0f} %"
        )


def assess(samples: list[CpuSample], threshold: float, since: float | None = None) -> CpuAssessment:
    window = [s for s in samples if since is None or s.at >= since]
    if not window:
        return CpuAssessment(0, 0.0, 0.0, 0.0, 0.0, threshold)
    busiest = [s.busiest_process_percent for s in window]
    return CpuAssessment(
        samples=len(window),
        busiest_mean=sum(busiest) / len(busiest),
        busiest_max=max(busiest),
        saturated_share=sum(b >= threshold for b in busiest) / len(busiest),
        system_mean=sum(s.system_percent for s in window) / len(window),
        threshold=threshold,
    )
