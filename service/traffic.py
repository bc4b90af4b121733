"""Routing and shadow traffic for the data plane: the routing table kept in step with the
routing files, and the shadow runner, started and stopped with the gateway.

The data plane asks two things per unpinned request: `policies.get(model)` (a plain dict, read
without a lock: only the event loop's own refresh task writes it) and, after the primary's
answer, whether a shadow copy should run (`shadow.offer`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Collection, Mapping
from typing import Any

from prometheus_client import CollectorRegistry

from service.repository import ModelSpec
from service.routing import RoutingMetrics, RoutingPolicy, RoutingTable
from service.settings import Settings
from service.shadow import Shadow, ShadowMetrics


def preprocessing_key(spec: ModelSpec) -> tuple[Any, ...]:
    """What turns a payload into tensors for this version (its preprocessing blocks and, for
    text, the tokenizer file it reads): two versions with equal keys make the same tensors, so
    a shadow copy reuses the primary's instead of decoding the payload again. Computed once per
    served version (it looks the tokenizer file up on disk)."""
    tokenizer = spec.artifact(spec.text.tokenizer_file) if spec.text is not None else None
    return (spec.kind, spec.image, spec.sequence, spec.text, tokenizer)


class Traffic:
    """The routing table, its refresh task and the shadow runner of one gateway process."""

    def __init__(
        self,
        settings: Settings,
        versions: Mapping[str, Collection[str]],
        registry: CollectorRegistry,
        served: Callable[[], Mapping[str, Collection[str]]] | None = None,
    ) -> None:
        """`versions`: what is served at start; `served` (optional) what is served now, read
        by the refresh task so routing follows versions loaded or unloaded live."""
        self.table = RoutingTable(settings.model_repository, versions, RoutingMetrics(registry))
        # The table's own dict: the data plane reads it per request with one lookup.
        self.policies: Mapping[str, RoutingPolicy] = self.table.policies
        self.shadow = Shadow(
            ShadowMetrics(registry, list(versions)),
            settings.shadow_max_inflight,
            settings.shadow_queue_fraction,
        )
        self._reload_s = settings.routing_reload_s
        self._served = served
        self._watch: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start re-reading the routing files (needs a running event loop)."""
        if self._watch is None:
            self.table.refresh()
            self._watch = asyncio.get_running_loop().create_task(
                self.table.watch(self._reload_s, self._served), name="routing-watch"
            )

    async def close(self) -> None:
        """Stop the refresh task and cancel running shadow copies."""
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.shadow.close()
