"""Metrics: every name declared here, counted per process, summed fleet-wide in Redis.

Each process (gunicorn worker, Celery pool child, on any host) adds to an in-memory tally that
a daemon thread folds into one Redis hash every second. ``/metrics`` on any receiver then shows
the whole fleet's totals, plus gauges read from Redis at scrape time (queue depths, pending work,
oldest age, dead letters). This stays correct with any number of processes and hosts, and costs
the request path nothing but a dict update. A process killed outright loses at most its last
second of counts.
"""

from __future__ import annotations

import bisect
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import redis
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry

from shared import keys, status

log = logging.getLogger(__name__)

METRICS = f"{keys.PREFIX}:metrics"
#: Per-minute copies of windowed histograms: tally names ``@<minute>@<field>``, kept this long.
WINDOW_MARK = "@"
WINDOW_KEEP_SECONDS = 15 * 60
FLUSH_SECONDS = 1.0


@dataclass(frozen=True)
class Definition:
    """A metric's name, meaning, kind, labels and (for histograms) bucket bounds."""

    name: str
    help: str
    kind: Literal["counter", "histogram"]
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    #: Also counted per minute (kept 15 minutes), so ``rainbridge status`` can show recent percentiles.
    windowed: bool = False


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: From a push's receipt to AEP: sub-second normally, minutes to hours through an outage.
LAG_BUCKETS = status.LATENCY_BUCKETS

REQUESTS = Definition(
    "rainbridge_receiver_requests",
    "HTTP requests answered, by route and status",
    "counter",
    ("route", "status"),
)
ACK_SECONDS = Definition(
    "rainbridge_receiver_ack_seconds", "Request to acknowledgement of stored pushes", "histogram", ("route",),
    LATENCY_BUCKETS,
)  # fmt: skip
PUSHES_RECEIVED = Definition(
    "rainbridge_receiver_pushes", "Pushes stored in the inbox", "counter", ("route",)
)
ENQUEUE_FAILURES = Definition(
    "rainbridge_receiver_enqueue_failures", "Requests refused with 503", "counter", ("why",)
)
PUSHES = Definition(
    "rainbridge_pushes", "Pushes by outcome: validated, invalid, duplicate, sent", "counter", ("outcome",)
)
BATCHES = Definition("rainbridge_aep_batches", "Requests sent to AEP", "counter")
BATCH_SIZE = Definition(
    "rainbridge_aep_batch_messages",
    "Messages per AEP request",
    "histogram",
    (),
    (1, 5, 10, 25, 50, 100, 150, 200, 500),
)
AEP_RESPONSES = Definition("rainbridge_aep_responses", "AEP answers by HTTP status", "counter", ("status",))
AEP_SECONDS = Definition(
    "rainbridge_aep_request_seconds", "AEP request latency", "histogram", (), LATENCY_BUCKETS
)
RETRIES = Definition("rainbridge_aep_retries", "Messages handed back for another delivery attempt", "counter")
PAUSE_SECONDS = Definition("rainbridge_aep_pause_seconds", "Delivery pause time set, fleet-wide", "counter")
DEADLETTERS = Definition("rainbridge_deadletters", "Pushes dead-lettered, by reason", "counter", ("reason",))
RATE_CAP_WAIT_SECONDS = Definition(
    "rainbridge_aep_rate_cap_wait_seconds",
    "Time deliveries waited for AEP_MAX_MESSAGES_PER_SECOND",
    "counter",
)
TOKENS_MINTED = Definition("rainbridge_aep_tokens_minted", "Access tokens minted from Adobe IMS", "counter")
TOKEN_FAILURES = Definition(
    "rainbridge_aep_token_failures",
    "Attempts to mint an access token that failed, by kind",
    "counter",
    ("kind",),
)
DELIVERY_LATENCY = Definition(
    "rainbridge_delivery_latency_seconds",
    "From the receiver's save (XADD to the inbox) to AEP's acceptance, per event",
    "histogram",
    (),
    LAG_BUCKETS,
    windowed=True,
)
STAGE_SECONDS = Definition(
    "rainbridge_stage_seconds",
    "Time per event in each stage: inbox_wait, ingest, outbox_wait, delivery",
    "histogram",
    ("stage",),
    LAG_BUCKETS,
)
MAPPING_RELOADS = Definition(
    "rainbridge_mapping_reloads",
    "Changed MAPPING_FILEs loaded or refused by a worker",
    "counter",
    ("outcome",),
)

DEFINITIONS = (
    REQUESTS, ACK_SECONDS, PUSHES_RECEIVED, ENQUEUE_FAILURES, PUSHES, BATCHES, BATCH_SIZE, AEP_RESPONSES,
    AEP_SECONDS, RETRIES, PAUSE_SECONDS, DEADLETTERS, TOKENS_MINTED, TOKEN_FAILURES, MAPPING_RELOADS,
    RATE_CAP_WAIT_SECONDS, DELIVERY_LATENCY, STAGE_SECONDS,
)  # fmt: skip


#: Field names already built: label values are a small, fixed vocabulary, so this stays small.
_FIELDS: dict[tuple[str, str, tuple[tuple[str, str], ...]], str] = {}


def _field(definition: Definition, labels: dict[str, str], suffix: str = "") -> str:
    key = (definition.name, suffix, tuple(labels.items()))
    field = _FIELDS.get(key)
    if field is None:
        # Label values are our own fixed words (routes, statuses, reasons), never sender data.
        label_part = ",".join(f"{name}={labels.get(name, '')}" for name in definition.labels)
        field = _FIELDS[key] = f"{definition.name}|{label_part}|{suffix}"
    return field


class Recorder:
    """This process's tally, folded into Redis by a daemon thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tally: dict[str, float] = {}
        self._client: redis.Redis | None = None
        self._flushing = False
        # A forked child starts afresh: the parent flushes its own tally, the flusher thread did
        # not survive the fork, and the lock may have been held by it at that instant.
        os.register_at_fork(after_in_child=self._forked)

    def bind(self, client: redis.Redis) -> None:
        """Flush to ``client`` from now on (call once per process, after any fork)."""
        self._client = client

    def inc(self, definition: Definition, value: float = 1, **labels: str) -> None:
        """Add ``value`` to a counter."""
        self._add(((_field(definition, labels), value),))

    def observe(self, definition: Definition, value: float, **labels: str) -> None:
        """Record one observation in a histogram."""
        self.observe_many(definition, (value,), **labels)

    def observe_many(self, definition: Definition, values: Iterable[float], **labels: str) -> None:
        """Record observations in a histogram (one lock for all of them)."""
        bounds = definition.buckets
        per_bucket: dict[int, int] = {}
        total = 0.0
        for value in values:  # per event on the hot path: a bisect and a count, nothing more
            index = bisect.bisect_left(bounds, value)
            per_bucket[index] = per_bucket.get(index, 0) + 1
            total += value
        if not per_bucket:
            return
        minute = f"{WINDOW_MARK}{int(time.time() // 60)}{WINDOW_MARK}" if definition.windowed else ""
        items: list[tuple[str, float]] = []
        for index, count in per_bucket.items():
            field = _field(definition, labels, f"le={bounds[index] if index < len(bounds) else '+Inf'}")
            items.append((field, count))
            if minute:
                items.append((minute + field, count))
        items.append((_field(definition, labels, "sum"), total))
        self._add(tuple(items))

    def _add(self, items: tuple[tuple[str, float], ...]) -> None:
        with self._lock:
            if not self._flushing:
                self._flushing = True
                threading.Thread(target=self._run, name="metrics-flush", daemon=True).start()
            tally = self._tally
            for name, value in items:
                tally[name] = tally.get(name, 0) + value

    def _forked(self) -> None:
        self._lock = threading.Lock()
        self._tally = {}
        self._flushing = False

    def discard(self) -> None:
        """Drop the counts not yet folded into Redis (when that Redis is about to be emptied)."""
        with self._lock:
            self._tally = {}

    def flush(self) -> None:
        """Fold the tally into Redis; keep it for the next try if Redis is away."""
        with self._lock:
            tally, self._tally = self._tally, {}
        if not tally or self._client is None:
            with self._lock:
                for name, value in tally.items():
                    self._tally[name] = self._tally.get(name, 0) + value
            return
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for name, value in tally.items():
                    if name.startswith(WINDOW_MARK):
                        _, minute, field = name.split(WINDOW_MARK, 2)
                        pipe.hincrby(keys.METRICS_MINUTE_PREFIX + minute, field, int(value))
                        pipe.expire(keys.METRICS_MINUTE_PREFIX + minute, WINDOW_KEEP_SECONDS)
                    elif float(value).is_integer():
                        pipe.hincrby(METRICS, name, int(value))
                    else:
                        pipe.hincrbyfloat(METRICS, name, value)
                pipe.execute()
        except Exception:
            log.debug("metrics flush failed; keeping the counts for the next try", exc_info=True)
            with self._lock:
                for name, value in tally.items():
                    self._tally[name] = self._tally.get(name, 0) + value

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_SECONDS)
            self.flush()


RECORDER = Recorder()
inc = RECORDER.inc
observe = RECORDER.observe
observe_many = RECORDER.observe_many


class _RedisCollector(Collector):
    """Builds every metric family from the Redis hash and the streams, at scrape time."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

    def collect(self) -> Iterator[Metric]:
        raw: dict[str, str] = self._client.hgetall(METRICS)  # type: ignore[assignment]
        values: dict[str, dict[tuple[str, ...], dict[str, float]]] = {}
        for field, value in raw.items():
            name, label_part, suffix = field.split("|", 2)
            labels = tuple(pair.split("=", 1)[1] for pair in label_part.split(",")) if label_part else ()
            values.setdefault(name, {}).setdefault(labels, {})[suffix] = float(value)
        for definition in DEFINITIONS:
            yield self._family(definition, values.get(definition.name, {}))
        yield from _gauges(status.collect(self._client))

    def _family(self, d: Definition, series: dict[tuple[str, ...], dict[str, float]]) -> Metric:
        if d.kind == "counter":
            counter = CounterMetricFamily(d.name, d.help, labels=list(d.labels))
            for labels, parts in sorted(series.items()):
                counter.add_metric(list(labels), parts.get("", 0))
            return counter
        histogram = HistogramMetricFamily(d.name, d.help, labels=list(d.labels))
        for labels, parts in sorted(series.items()):
            cumulative, buckets = 0.0, []
            for bound in [*d.buckets, float("inf")]:
                key = "le=+Inf" if bound == float("inf") else f"le={bound}"
                cumulative += parts.get(key, 0)
                buckets.append(("+Inf" if bound == float("inf") else str(bound), cumulative))
            histogram.add_metric(list(labels), buckets, parts.get("sum", 0))
        return histogram


def _gauges(state: dict[str, Any]) -> Iterator[Metric]:
    depth = GaugeMetricFamily("rainbridge_queue_depth", "Entries in each stream", labels=["stream"])
    pending = GaugeMetricFamily(
        "rainbridge_queue_pending", "Entries read but not yet settled", labels=["stream"]
    )
    age = GaugeMetricFamily(
        "rainbridge_queue_oldest_age_seconds", "Age of the oldest entry", labels=["stream"]
    )
    for stream in ("inbox", "outbox"):
        depth.add_metric([stream], state[stream]["depth"])
        pending.add_metric([stream], state[stream]["pending"])
        age.add_metric([stream], state[stream]["oldest_age_seconds"] or 0)
    letters = GaugeMetricFamily(
        "rainbridge_deadletter_entries", "Dead letters kept, by reason", labels=["reason"]
    )
    for reason, count in state["deadletters"]["by_reason"].items():
        letters.add_metric([reason], count)
    paused = GaugeMetricFamily("rainbridge_aep_paused", "1 while delivery to AEP is paused for every worker")
    paused.add_metric([], 1 if state["aep_paused_until_ms"] else 0)
    drains = GaugeMetricFamily(
        "rainbridge_drain_last_run_age_seconds",
        "Seconds since a drain of each stage last ran (+Inf: never); past a few seconds, nothing moves",
        labels=["stage"],
    )
    stalled = GaugeMetricFamily(
        "rainbridge_drain_stalled", "1 while a stage's drains have not run for too long", labels=["stage"]
    )
    for stage, drain in state["drains"].items():
        drains.add_metric([stage], float("inf") if drain["age_seconds"] is None else drain["age_seconds"])
        stalled.add_metric([stage], 1 if drain["stalled"] else 0)
    unmapped = GaugeMetricFamily(
        "rainbridge_unmapped_paths",
        "Distinct source paths seen in pushes that no mapping entry reads (rainbridge mapping unmapped)",
    )
    unmapped.add_metric([], state["unmapped_paths"])
    running = GaugeMetricFamily(
        "rainbridge_mapping_processes",
        "Worker processes running each mapping, by content hash",
        labels=["digest"],
    )
    for digest, entry in state["mappings"].items():
        running.add_metric([digest], entry["processes"])
    token = GaugeMetricFamily(
        "rainbridge_aep_token_expires_in_seconds",
        "Seconds left on the shared AEP access token (absent: none cached)",
    )
    if state["aep_token"] is not None:
        token.add_metric([], state["aep_token"]["expires_in_seconds"])
    memory = state["redis_memory"]
    used = GaugeMetricFamily("rainbridge_redis_used_memory_bytes", "Redis used_memory")
    used.add_metric([], memory["used_bytes"])
    most = GaugeMetricFamily(
        "rainbridge_redis_maxmemory_bytes", "Redis maxmemory (0: none); the receiver refuses pushes at 90%"
    )
    most.add_metric([], memory["max_bytes"])
    yield from (depth, pending, age, letters, paused, drains, stalled, unmapped, running, token, used, most)


def render(client: redis.Redis) -> bytes:
    """The Prometheus text exposition of every rainbridge metric."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_RedisCollector(client))
    return generate_latest(registry)
