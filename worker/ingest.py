"""The ingest stage: drain the inbox, turn each push into an AEP message, hand the batch off.

Validation and transformation happen here, outside any Redis call; the hand-off (dedupe,
outbox, dead letters, acks) is one atomic script in :mod:`worker.dedupe`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import redis

from shared import keys, metrics
from shared.records import InboxRecord, LetterRecord, OutboxRecord
from shared.settings import ConfigError, Settings
from worker import mapfile, schema, streams, unmapped
from worker.dedupe import Handoff, Ready, Rejected
from worker.errors import InternalError, InvalidPush, Permanent
from worker.transform import check_size, encode, envelope, event_id, map_event
from worker.validate import validate

log = logging.getLogger(__name__)

#: Inbox entries read per round trip.
READ_COUNT = 200


@dataclass
class IngestSummary:
    """What one drain did, for the task's result and the logs."""

    read: int = 0
    sent: int = 0
    repeats: int = 0
    dead: int = 0
    busy: bool = False  # stopped by its time budget with work left, not by an empty inbox


def prepare(
    entry: streams.Entry, settings: Settings, mapping: mapfile.Mapping | None = None
) -> Ready | Rejected:
    """Validate and map one inbox entry into an outbox message, or a dead letter.

    ``mapping`` is the running one; without it, the one ``settings`` name (MAPPING_FILE or the default).
    """
    if mapping is None:
        mapping = mapfile.cached_for_settings(settings)
    record = InboxRecord.parse(entry.fields, entry.ms)
    push_json = record.push
    # A replayed dead letter keeps the time it was first received.
    received_ms = record.received_ms if record.received_ms is not None else entry.ms
    try:
        raw: Any = json.loads(push_json)
    except (ValueError, RecursionError):
        return _rejected(
            entry,
            received_ms,
            None,
            push_json,
            InvalidPush({"_schema": ["the push is not valid JSON"]}),
            mapping=mapping.digest,
        )
    try:
        push = validate(raw, require_email=mapping.needs_email)
        flat = mapfile.flatten(raw)
        push_id = event_id(push.transmission_id)
        if settings.sends_raw:
            message = push_json  # AEP's Data Prep maps it: send it as it came
        else:
            if not settings.aep_tenant_id:
                raise ConfigError("AEP_TENANT_ID is not set (required to build XDM events)")
            event = map_event(push, raw, mapping, flat)
            schema.check_event(event, mapping, settings.aep_tenant_id)
            check_size(encode(event))
            message = encode(envelope(event, settings))
    except Permanent as exc:
        return _rejected(entry, received_ms, raw, push_json, exc, mapping=mapping.digest)
    except Exception as exc:
        # A bug of ours must not send the entry round forever: keep it, with the error, for replay.
        log.exception("%s could not be transformed", entry.id)
        return _rejected(entry, received_ms, raw, push_json, InternalError(repr(exc)), mapping=mapping.digest)
    return Ready(
        entry_id=entry.id,
        event_id=push_id,
        replay=record.replay,
        record=OutboxRecord(
            message=message,
            transmission_id=push.transmission_id,
            event_type=push.event_type,
            received_ms=received_ms,
            push=push_json,
            mapping=mapping.digest,
        ),
        unmapped=unmapped.unread(flat, mapping.sources),
    )


def _rejected(
    entry: streams.Entry, received_ms: int, raw: Any, push_json: str, exc: Permanent, *, mapping: str
) -> Rejected:
    letter = LetterRecord(
        reason=exc.reason,
        # ASCII escapes keep any unpaired surrogate from the push storable in Redis.
        detail=json.dumps(exc.detail, default=str),
        push=push_json,
        xdm="",
        transmission_id=_best_effort(raw, "transmissionId"),
        event_type=_best_effort(raw, "eventType"),
        attempts=0,
        received_ms=received_ms,
        mapping=mapping,
    )
    return Rejected(entry_id=entry.id, letter=letter)


def _best_effort(raw: Any, name: str) -> str:
    value = raw.get(name) if isinstance(raw, dict) else None
    if not isinstance(value, (str, int, float)) or isinstance(value, bool):
        return ""
    return str(value)[:200].encode("utf-8", "replace").decode("utf-8")


def drain(
    client: redis.Redis,
    settings: Settings,
    consumer: str,
    budget_s: float,
    mappings: mapfile.Active | None = None,
) -> IngestSummary:
    """Move inbox entries to the outbox (or the dead-letter stream) until idle or out of time.

    ``mappings`` is the worker's running mapping (reloaded as MAPPING_FILE changes); without it,
    the one ``settings`` name.
    """
    handoff = Handoff(client, settings)
    if mappings is not None:
        mappings.announce(client, consumer)
    summary = IngestSummary()
    deadline = time.monotonic() + budget_s
    claim_idle_ms = settings.pending_claim_seconds * 1000
    entries = streams.claim_stale(
        client, keys.INBOX, keys.INBOX_GROUP, consumer, idle_ms=claim_idle_ms, count=READ_COUNT
    )
    while True:
        if not entries:
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            if remaining_ms <= 0:
                break
            entries = streams.read_new(
                client, keys.INBOX, keys.INBOX_GROUP, consumer, count=READ_COUNT, block_ms=remaining_ms
            )
            if not entries:
                break
        mapping = mappings.current() if mappings is not None else mapfile.cached_for_settings(settings)
        started_ms = time.time() * 1000
        items = [prepare(entry, settings, mapping) for entry in entries]
        result = handoff(items)
        took = (time.time() * 1000 - started_ms) / 1000
        waits = (max(0.0, started_ms - e.ms) / 1000 for e in entries)  # (e.ms is Redis's clock)
        metrics.observe_many(metrics.STAGE_SECONDS, waits, stage="inbox_wait")
        metrics.observe_many(metrics.STAGE_SECONDS, (took for _ in entries), stage="ingest")
        ready_items = [item for item in items if isinstance(item, Ready)]
        unmapped.record(client, Counter(path for item in ready_items for path in item.unmapped))
        ready = len(ready_items)
        metrics.inc(metrics.PUSHES, ready, outcome="validated")
        metrics.inc(metrics.PUSHES, len(items) - ready, outcome="invalid")
        metrics.inc(metrics.PUSHES, result.repeats, outcome="duplicate")
        summary.read += len(entries)
        summary.sent += result.sent
        summary.repeats += result.repeats
        summary.dead += result.dead
        for item in items:
            if isinstance(item, Rejected):
                metrics.inc(metrics.DEADLETTERS, reason=item.reason)
                tid = item.letter.transmission_id
                log.warning(
                    "%s dead-lettered (%s): %s",
                    tid or item.entry_id,
                    item.reason,
                    item.detail,
                    extra={"transmissionId": tid},
                )
        summary.busy = len(entries) == READ_COUNT
        entries = []
        if time.monotonic() >= deadline:
            break
    if summary.read:
        log.info(
            "%s ingest: read %d, sent %d, repeats %d, dead-lettered %d",
            consumer,
            summary.read,
            summary.sent,
            summary.repeats,
            summary.dead,
        )
    return summary
