"""The deliver stage: send batches to AEP, then settle each message by what AEP said of it.

- accepted (an ``xactionId``): acknowledged and removed from the outbox;
- refused for good (a 4xx for that message, or a lone message AEP refuses whole): dead-lettered
  as ``aep_rejected`` with AEP's words;
- anything else (429, 5xx, timeouts): left pending and tried again later, alone if it failed alone.

What AEP's answers mean is :mod:`worker.aep`'s business. 429/503 with Retry-After pause every
worker for that long; other failures back off exponentially with full jitter, fleet-wide, except
when AEP was never reached (a connection error or timeout), which backs off that host only; a 404
(wrong inlet) is an operator's problem: delivery pauses, it is logged as an error, nothing is
dead-lettered for it.

Acks and dead letters are written by one atomic script, and only for entries still pending, so a
batch that two workers both sent (one of them presumed dead) is settled once.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections.abc import Callable

import redis

from shared import deadletter, keys, metrics
from shared.records import LetterRecord, OutboxRecord, script_header
from shared.settings import Settings
from worker import pause, ratecap, scripts, streams
from worker.aep import AepClient, Outcome, send
from worker.batch import Batch, Batcher

log = logging.getLogger(__name__)

_SETTLE = scripts.load("records", "deadletters", "settle")


class DeliverSummary:
    """What one delivery run did, for the task's result and the logs."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    retrying: int = 0
    exhausted: int = 0
    busy: bool = False


class Settler:
    """Writes outcomes to Redis: acks for accepted, dead letters for refused, atomically."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._script = client.register_script(_SETTLE)
        self._settings = settings

    def __call__(
        self,
        accepted: list[streams.Entry],
        dead: list[tuple[streams.Entry, deadletter.Reason, str]],
        attempts: dict[str, int],
    ) -> int:
        """Ack ``accepted`` and dead-letter ``dead`` (entry, reason, detail); returns how many were ours."""
        if not accepted and not dead:
            return 0
        args: list[str | int] = [keys.OUTBOX_GROUP, deadletter.retention_minid(self._settings), len(accepted)]
        args += [entry.id for entry in accepted]
        args += script_header(LetterRecord.FIELDS)
        for entry, reason, detail in dead:
            sent = OutboxRecord.parse(entry.fields, entry.ms)
            letter = LetterRecord(
                reason=reason,
                detail=json.dumps(detail),
                push=sent.push,
                xdm=sent.message,
                transmission_id=sent.transmission_id,
                event_type=sent.event_type,
                attempts=attempts.get(entry.id, 1),
                received_ms=sent.received_ms,
                mapping=sent.mapping,
            )
            args += [entry.id, *letter.values()]
        return int(self._script(keys=[keys.OUTBOX, keys.DEADLETTER, keys.DEADLETTER_COUNTS], args=args))


def run(
    client: redis.Redis, settings: Settings, consumer: str, aep: AepClient, budget_s: float
) -> DeliverSummary:
    """Deliver outbox batches until idle or out of time, finishing any batch already read."""
    batcher = Batcher(client, settings, consumer)
    settle = Settler(client, settings)
    cap = ratecap.for_settings(client, settings)
    host = socket.gethostname()  # a connection error backs off this host only (worker/pause.py)
    summary = DeliverSummary()
    claim_ms = settings.pending_claim_seconds * 1000
    deadline = time.monotonic() + budget_s

    def release(entries: list[streams.Entry], delay_ms: int = 0) -> None:
        ids = [entry.id for entry in entries]
        streams.release(
            client, keys.OUTBOX, keys.OUTBOX_GROUP, consumer, ids, claim_idle_ms=claim_ms, delay_ms=delay_ms
        )

    while True:
        if _wait_out_pause(client, deadline, host):
            break
        batch = batcher.next(deadline)
        _settle_exhausted(settle, batch, summary)
        if not batch.entries:
            if batch.exhausted:
                continue
            break
        if pause.paused_until(client, host):
            # Another worker paused delivery while this batch filled: hand it back untouched.
            release(batch.entries + batcher.held)
            batcher.held = []
            continue
        sent_ms = time.time() * 1000
        # Under AEP_MAX_MESSAGES_PER_SECOND each request, a split's too, waits for its turn.
        outcome = send(aep, settings, batch.entries, before=cap.take if cap is not None else None)
        _settle_outcome(client, settings, settle, batch, outcome, summary=summary, release=release, host=host)
        _observe_lag(outcome.accepted, sent_ms)
        if outcome.stop:
            release(batcher.held)
            batcher.held = []
            continue
        summary.busy = len(batch.entries) >= settings.messages_per_request
        if time.monotonic() >= deadline and not batcher.held:
            break
    if summary.requests or summary.exhausted:
        log.info(
            "%s deliver: %d request(s), accepted %d, dead-lettered %d (+%d exhausted), retrying %d",
            consumer,
            summary.requests,
            summary.accepted,
            summary.rejected,
            summary.exhausted,
            summary.retrying,
        )
    return summary


def _observe_lag(accepted: list[streams.Entry], sent_ms: float) -> None:
    """Time each accepted event spent waiting in the outbox, in delivery, and from receipt to AEP."""
    if not accepted:
        return
    now_ms = time.time() * 1000
    # Entry ids carry Redis's clock, the rest this host's: a skew between them is no negative wait.
    waits = (max(0.0, sent_ms - e.ms) / 1000 for e in accepted)
    metrics.observe_many(metrics.STAGE_SECONDS, waits, stage="outbox_wait")
    metrics.observe_many(
        metrics.STAGE_SECONDS, ((now_ms - sent_ms) / 1000 for _ in accepted), stage="delivery"
    )
    received = (OutboxRecord.parse(e.fields, e.ms).received_ms for e in accepted)
    metrics.observe_many(metrics.DELIVERY_LATENCY, (max(0.0, now_ms - ms) / 1000 for ms in received))


def _wait_out_pause(client: redis.Redis, deadline: float, host: str) -> bool:
    """Sleep while delivery is paused (fleet-wide or on this host); True when it outlasts this run."""
    while until := pause.paused_until(client, host):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, max(0.0, (until - pause.now_ms()) / 1000), 0.5))
    return time.monotonic() >= deadline


def _settle_exhausted(settle: Settler, batch: Batch, summary: DeliverSummary) -> None:
    if not batch.exhausted:
        return
    dead = []
    for entry in batch.exhausted:
        attempts = batch.attempts.get(entry.id, 1) - 1  # this claim was not an attempt
        received = OutboxRecord.parse(entry.fields, entry.ms).received_ms
        age_s = (pause.now_ms() - received) / 1000
        detail = f"not delivered after {attempts} attempt(s) over {age_s:.0f} s"
        dead.append((entry, deadletter.Reason.DELIVERY_EXHAUSTED, detail))
        batch.attempts[entry.id] = attempts
        tid = OutboxRecord.parse(entry.fields, entry.ms).transmission_id
        log.warning("%s dead-lettered (delivery_exhausted): %s", tid, detail, extra={"transmissionId": tid})
    settle([], dead, batch.attempts)
    summary.exhausted += len(dead)
    metrics.inc(metrics.DEADLETTERS, len(dead), reason=deadletter.Reason.DELIVERY_EXHAUSTED)


def _settle_outcome(
    client: redis.Redis,
    settings: Settings,
    settle: Settler,
    batch: Batch,
    outcome: Outcome,
    *,
    summary: DeliverSummary,
    release: Callable[..., None],
    host: str,
) -> None:
    dead = [(entry, deadletter.Reason.AEP_REJECTED, detail) for entry, detail in outcome.rejected]
    settle(outcome.accepted, dead, batch.attempts)
    for entry, detail in outcome.rejected:
        tid = OutboxRecord.parse(entry.fields, entry.ms).transmission_id
        log.warning("%s dead-lettered (aep_rejected): %s", tid, detail, extra={"transmissionId": tid})
    summary.requests += outcome.requests
    summary.accepted += len(outcome.accepted)
    summary.rejected += len(outcome.rejected)
    summary.retrying += len(outcome.retry)
    metrics.inc(metrics.PUSHES, len(outcome.accepted), outcome="sent")
    metrics.inc(metrics.RETRIES, len(outcome.retry))
    metrics.inc(metrics.DEADLETTERS, len(outcome.rejected), reason=deadletter.Reason.AEP_REJECTED)
    if outcome.accepted:
        pause.succeeded(client, host)
    cap_ms = settings.delivery_backoff_cap_seconds * 1000
    if outcome.pause_ms is not None:
        pause.pause(client, pause.now_ms() + outcome.pause_ms, outcome.error or "AEP asked us to wait")
    elif outcome.back_off and outcome.local:
        pause.host_back_off(client, host, cap_ms, outcome.error or "AEP unreachable")
    elif outcome.back_off:
        pause.back_off(client, cap_ms, outcome.error or "AEP request failed")
    if outcome.stop:
        release(outcome.retry)  # first in line once the pause is over
    elif outcome.retry:
        # Only some messages failed (a 429/5xx for them in the 207): retry them alone, a little later.
        release(
            outcome.retry,
            delay_ms=min(cap_ms, 1000 * 2 ** min(max(batch.attempts.get(outcome.retry[0].id, 1), 1), 10)),
        )
