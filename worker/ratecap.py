"""The fleet-wide cap on messages per second to AEP (``AEP_MAX_MESSAGES_PER_SECOND``).

Adobe's streaming inlet takes 1,000 requests and 10,000 messages per second per organisation, and
Profile takes about 1,500 records per second by default; after an outage the fleet's backlog
would go well past that. Every worker on every host books its messages in one token bucket in
Redis before each request (:data:`_SCRIPT`, a GCRA: one key, one atomic script, Redis's clock),
and waits for the turn it was given.

A request then carries at most a fortieth of a second's worth of messages, and the bucket allows
a burst of that much: in any one-second window at most 1.025 times the cap is booked. The ``limits``
library's Redis moving window was considered: it reads each client's own clock (hosts that
disagree would each see their own window), keeps one list entry per message, and does not say
how long to wait.
"""

from __future__ import annotations

import math
import time

import redis

from shared import keys, metrics
from shared.settings import RATE_CAP_SLICE_SECONDS, Settings
from worker import scripts

_SCRIPT = scripts.load("ratecap")


def per_request(rate: float) -> int:
    """The most messages one request may carry under a cap of ``rate`` per second."""
    return max(1, math.floor(rate * RATE_CAP_SLICE_SECONDS))


class RateCap:
    """One process's handle on the fleet's bucket."""

    def __init__(self, client: redis.Redis, rate: float) -> None:
        self.rate = rate
        self._script = client.register_script(_SCRIPT)
        self._interval_us = 1_000_000 / rate
        self._burst_us = per_request(rate) * self._interval_us

    def book(self, messages: int) -> float:
        """Book ``messages`` in the fleet's schedule; the seconds to wait before sending them."""
        wait_us = int(
            self._script(
                keys=[keys.RATE_CAP], args=[messages, f"{self._interval_us:.3f}", int(self._burst_us)]
            )
        )
        return wait_us / 1_000_000

    def take(self, messages: int) -> float:
        """Book ``messages`` and wait for their turn; returns the seconds waited."""
        wait = self.book(messages)
        if wait > 0:
            time.sleep(wait)
            metrics.inc(metrics.RATE_CAP_WAIT_SECONDS, wait)
        return wait


def for_settings(client: redis.Redis, settings: Settings) -> RateCap | None:
    """The cap ``settings`` ask for, or None (no cap)."""
    rate = settings.aep_max_messages_per_second
    return RateCap(client, rate) if rate else None
