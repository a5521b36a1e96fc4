"""Delivery pause and back-off, kept in Redis: fleet-wide for AEP's signals, per host for the network.

When AEP says "slow down" (429/503 with Retry-After) or keeps failing (500s), one worker finding
out is enough: it sets the pause, and every other worker sees it before its next request instead
of hammering AEP on its own. When a host cannot reach AEP at all (connection errors, timeouts),
that is its own network path: that host backs off, and the other hosts keep delivering.
"""

from __future__ import annotations

import logging
import random
import time
from email.utils import parsedate_to_datetime

import redis

from shared import keys, metrics

log = logging.getLogger(__name__)

#: Consecutive failed requests, fleet-wide; reset by the first success.
FAILURES = f"{keys.PREFIX}:aep:failures"
#: Hashes host -> pause end (epoch ms) and host -> consecutive network failures.
HOST_PAUSES = keys.HOST_PAUSES
HOST_FAILURES = f"{keys.PREFIX}:aep:host-failures"
#: First back-off step, and the longest Retry-After we take at face value.
BACKOFF_BASE_MS = 500
MAX_RETRY_AFTER_MS = 15 * 60 * 1000

# Only ever extends the pause: a short back-off never cuts a longer Retry-After.
_EXTEND = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ms = tonumber(ARGV[1])
if until_ms > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1])
  return until_ms
end
return current
"""


# The same, for one host's entry of the host-pauses hash.
_EXTEND_HOST = """
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
local until_ms = tonumber(ARGV[2])
if until_ms > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return until_ms
end
return current
"""


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds (shared across hosts, unlike monotonic time)."""
    return int(time.time() * 1000)


def paused_until(client: redis.Redis, host: str | None = None) -> int:
    """Epoch ms until which delivery is paused (for every worker, or on ``host``); 0 when it is not."""
    if host is None:
        raw = client.get(keys.PAUSE)
        until = int(raw) if raw else 0
    else:
        # Both in one round trip: a worker far from Redis checks this twice per batch.
        reads = client.pipeline(transaction=False)
        reads.get(keys.PAUSE)
        reads.hget(HOST_PAUSES, host)
        until = max((int(raw) for raw in reads.execute() if raw), default=0)
    return until if until > now_ms() else 0


def pause(client: redis.Redis, until_ms: int, why: str) -> int:
    """Pause every worker's delivery until ``until_ms`` (or longer, if already paused longer)."""
    until = int(client.eval(_EXTEND, 1, keys.PAUSE, until_ms))
    if until == until_ms:
        metrics.inc(metrics.PAUSE_SECONDS, max(0, until_ms - now_ms()) / 1000)
    log.warning("AEP delivery paused for every worker for %.1f s: %s", (until - now_ms()) / 1000, why)
    return until


def back_off(client: redis.Redis, cap_ms: int, why: str) -> int:
    """Pause for an exponential, fully jittered time that grows with consecutive failures."""
    failures = int(client.incr(FAILURES))
    client.expire(FAILURES, 3600)
    ceiling = min(cap_ms, BACKOFF_BASE_MS * 2 ** min(failures - 1, 30))
    return pause(client, now_ms() + random.randint(0, ceiling), f"{why} (failure {failures} in a row)")


def host_back_off(client: redis.Redis, host: str, cap_ms: int, why: str) -> int:
    """Back off on ``host`` only (it cannot reach AEP): exponential, fully jittered, like the fleet's."""
    failures = int(client.hincrby(HOST_FAILURES, host, 1))
    client.expire(HOST_FAILURES, 3600)
    ceiling = min(cap_ms, BACKOFF_BASE_MS * 2 ** min(failures - 1, 30))
    until = int(client.eval(_EXTEND_HOST, 1, HOST_PAUSES, host, now_ms() + random.randint(0, ceiling)))
    client.expire(HOST_PAUSES, 3600)
    log.warning(
        "AEP unreachable from %s: this host backs off for %.1f s (failure %d in a row), the others go on: %s",
        host,
        (until - now_ms()) / 1000,
        failures,
        why,
    )
    return until


def host_pauses(client: redis.Redis) -> dict[str, int]:
    """Hosts backing off now, and until when (epoch ms)."""
    now = now_ms()
    raw: dict[str, str] = client.hgetall(HOST_PAUSES)  # type: ignore[assignment]
    return {host: int(until) for host, until in raw.items() if int(until) > now}


def succeeded(client: redis.Redis, host: str | None = None) -> None:
    """AEP took a request: the next failure starts the back-off from the bottom again."""
    resets = client.pipeline(transaction=False)
    resets.delete(FAILURES)
    if host is not None:
        resets.hdel(HOST_FAILURES, host)
    resets.execute()


def retry_after_ms(header: str | None) -> int | None:
    """A Retry-After header (seconds, or an HTTP date) as a wait in ms; None when absent or bad."""
    if not header:
        return None
    header = header.strip()
    if header.isdigit():
        wait = int(header) * 1000
    else:
        try:
            wait = int(parsedate_to_datetime(header).timestamp() * 1000) - now_ms()
        except (TypeError, ValueError):
            return None
    return max(0, min(wait, MAX_RETRY_AFTER_MS))
