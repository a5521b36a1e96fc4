"""Back-pressure: refuse new pushes with a 503 before Redis fills, instead of failing when it has.

Redis runs with ``noeviction``, so a full Redis refuses writes (and the receiver answers 503
then too); the high-water marks here keep room for the workers to keep going, and the sender
is told to come back later rather than being accepted into a queue that cannot take it.
"""

from __future__ import annotations

import logging
import time

import redis

from receiver.errors import queue_unavailable
from shared import keys, metrics
from shared.settings import Settings

log = logging.getLogger(__name__)

#: Share of Redis ``maxmemory`` at which pushes are refused when no explicit mark is set.
MAXMEMORY_SHARE = 0.9
#: How often one receiver process measures Redis (a measurement is two round trips).
CHECK_INTERVAL_S = 0.5


class Backpressure:
    """Decides, from a measurement at most ``CHECK_INTERVAL_S`` old, whether to take more pushes."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._redis = client
        self._max_bytes = settings.receiver_max_queue_bytes
        self._max_depth = settings.receiver_max_inbox_depth
        self._checked_at = 0.0
        self._full: str | None = None

    def check(self) -> None:
        """Raise a 503 ReceiverError while Redis is over a high-water mark."""
        now = time.monotonic()
        if now - self._checked_at >= CHECK_INTERVAL_S:
            self._checked_at = now
            self._full = self._measure()
        if self._full:
            metrics.inc(metrics.ENQUEUE_FAILURES, why="queue_full")
            raise queue_unavailable(f"the queue is full ({self._full}); retry later")

    def _measure(self) -> str | None:
        try:
            with self._redis.pipeline(transaction=False) as pipe:
                pipe.xlen(keys.INBOX)
                pipe.info("memory")
                depth, memory = pipe.execute()
        except redis.RedisError:
            return None  # the enqueue itself will fail and answer 503
        used = int(memory.get("used_memory", 0))
        limit = self._max_bytes or int(int(memory.get("maxmemory", 0)) * MAXMEMORY_SHARE)
        if limit and used >= limit:
            full = f"Redis uses {used} bytes, the mark is {limit}"
        elif self._max_depth and depth >= self._max_depth:
            full = f"{depth} pushes wait in the inbox, the mark is {self._max_depth}"
        else:
            full = None
        if full and not self._full:
            log.warning("refusing pushes with 503: %s", full)
        elif self._full and not full:
            log.warning("accepting pushes again: the backlog is below the high-water marks")
        return full
