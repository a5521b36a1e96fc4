"""The pipeline's state as read from Redis: depths, pending work, ages, dead letters, AEP pause."""

from __future__ import annotations

import json
import time
from typing import Any, cast

import redis

from shared import keys

Entries = list[tuple[str, dict[str, str]]]

#: A stage whose drains have not run for this long is STALLED (seconds). Ingest and deliver run
#: every second while any worker consumes them; housekeeping once a minute.
STALLED_AFTER_SECONDS = {"ingest": 15.0, "deliver": 15.0, "housekeep": 300.0}


def drains(client: redis.Redis, now_ms: int) -> dict[str, dict[str, Any]]:
    """When each stage's drain last ran, and whether that is too long ago."""
    raw = cast(dict[str, str], client.hgetall(keys.DRAINS))
    out: dict[str, dict[str, Any]] = {}
    for stage, limit in STALLED_AFTER_SECONDS.items():
        last = raw.get(stage)
        last_ms = int(last) if last and last.isdigit() else None
        age = round((now_ms - last_ms) / 1000, 3) if last_ms is not None else None
        out[stage] = {
            "last_run_ms": last_ms,
            "age_seconds": age,
            "stalled": age is None or age > limit,
        }
    return out


#: A worker process that has not drained for this long no longer counts as running its mapping.
MAPPING_SEEN_SECONDS = 120


def mappings(client: redis.Redis, now_ms: int) -> dict[str, dict[str, Any]]:
    """The mappings worker processes run now, by content hash: where from, and on how many processes."""
    out: dict[str, dict[str, Any]] = {}
    for value in cast(dict[str, str], client.hgetall(keys.MAPPINGS)).values():
        digest, _, rest = value.partition(" ")
        seen, _, source = rest.partition(" ")
        if not seen.isdigit() or now_ms - int(seen) > MAPPING_SEEN_SECONDS * 1000:
            continue
        entry = out.setdefault(digest, {"source": source, "processes": 0})
        entry["processes"] += 1
    return out


def _stream(client: redis.Redis, stream: str, group: str, now_ms: int) -> dict[str, Any]:
    depth = int(client.xlen(stream))
    oldest = cast(Entries, client.xrange(stream, count=1))
    pending = 0
    consumers = 0
    try:
        groups = {g["name"]: g for g in client.xinfo_groups(stream)}
        if group in groups:
            pending = int(groups[group]["pending"])
            consumers = int(groups[group]["consumers"])
    except redis.ResponseError:
        pass  # no such stream yet
    oldest_ms = int(oldest[0][0].split("-")[0]) if oldest else None
    return {
        "depth": depth,
        "pending": pending,
        "consumers": consumers,
        "oldest_age_seconds": round((now_ms - oldest_ms) / 1000, 3) if oldest_ms is not None else None,
    }


#: The delivery-latency histogram's name and buckets (shared/metrics.py, which imports this
#: module, takes its buckets from here).
_LATENCY = "rainbridge_delivery_latency_seconds"
LATENCY_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 21600.0)


def latency(client: redis.Redis, now_ms: int, minutes: int = 5) -> dict[str, Any]:
    """p50 and p99 of receipt-to-AEP latency over the last ``minutes`` (from per-minute counts)."""
    now_minute = now_ms // 60_000
    with client.pipeline(transaction=False) as pipe:
        for minute in range(now_minute - minutes + 1, now_minute + 1):
            pipe.hgetall(f"{keys.METRICS_MINUTE_PREFIX}{minute}")
        tallies = cast(list[dict[str, str]], pipe.execute())
    # Every bucket of the histogram, empty ones too (the interpolation needs the true lower bound).
    counts: dict[float, int] = dict.fromkeys((*LATENCY_BUCKETS, float("inf")), 0)
    for tally in tallies:
        for field, value in tally.items():
            name, _, suffix = field.split("|", 2)
            if name == _LATENCY and suffix.startswith("le="):
                bound = float(suffix[3:])  # "+Inf" parses as inf
                counts[bound] = counts.get(bound, 0) + int(value)
    total = sum(counts.values())
    return {
        "minutes": minutes,
        "events": total,
        "p50_seconds": _quantile(counts, total, 0.50),
        "p99_seconds": _quantile(counts, total, 0.99),
    }


def _quantile(counts: dict[float, int], total: int, q: float) -> float | None:
    # As Prometheus's histogram_quantile: linear within the bucket that holds the rank.
    if not total:
        return None
    rank, seen, lower = q * total, 0, 0.0
    for bound in sorted(counts):
        if seen + counts[bound] >= rank:
            if bound == float("inf"):
                return lower  # past the last bucket: its bound is all that is known
            share = (rank - seen) / counts[bound] if counts[bound] else 0.0
            return round(lower + (bound - lower) * share, 3)
        seen += counts[bound]
        lower = bound
    return lower


def collect(client: redis.Redis) -> dict[str, Any]:
    """Everything ``rainbridge status`` shows, as plain data (no secrets)."""
    now_ms = int(time.time() * 1000)
    # Kept by the scripts that add and remove letters: a scrape never reads the letters themselves.
    counts = cast(dict[str, str], client.hgetall(keys.DEADLETTER_COUNTS))
    reasons = {reason: int(n) for reason, n in counts.items() if int(n) > 0}
    pause_until = client.get(keys.PAUSE)
    token_raw = client.get(keys.TOKEN)
    token: dict[str, Any] | None = None
    if token_raw:
        data = json.loads(token_raw)
        token = {
            "expires_in_seconds": round(float(data["expires_at"]) - now_ms / 1000),
            "renews_in_seconds": round(float(data["renew_at"]) - now_ms / 1000),
        }
    return {
        "inbox": _stream(client, keys.INBOX, keys.INBOX_GROUP, now_ms),
        "outbox": _stream(client, keys.OUTBOX, keys.OUTBOX_GROUP, now_ms),
        "deadletters": {"total": sum(reasons.values()), "by_reason": dict(sorted(reasons.items()))},
        "aep_paused_until_ms": int(pause_until) if pause_until and int(pause_until) > now_ms else None,
        "aep_hosts_backing_off": {
            host: int(until)
            for host, until in cast(dict[str, str], client.hgetall(keys.HOST_PAUSES)).items()
            if int(until) > now_ms
        },
        "aep_token": token,
        "drains": drains(client, now_ms),
        "mappings": mappings(client, now_ms),
        "unmapped_paths": int(client.hlen(keys.UNMAPPED)),
        "delivery_latency": latency(client, now_ms),
        "redis_memory": _memory(client),
    }


def _memory(client: redis.Redis) -> dict[str, int]:
    info = client.info("memory")
    return {"used_bytes": int(info.get("used_memory", 0)), "max_bytes": int(info.get("maxmemory", 0))}
