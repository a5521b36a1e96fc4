"""Celery tasks: thin glue that runs a pipeline stage for about a second and reports what it did."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

import redis
import requests
from celery import Task

from shared import deadletter, keys, metrics, redisconn
from worker import aep, deliver, drains, ingest, streams
from worker.app import BUDGET_SECONDS, app, settings
from worker.ims import TokenCache

_process: dict[str, Any] = {}

#: A consumer silent this long with nothing pending belongs to a process that is gone.
CONSUMER_IDLE_MS = 3600 * 1000


def _resources() -> tuple[redis.Redis, aep.AepClient, str]:
    """Per-process Redis client, HTTP session and consumer name, made after the pool forked."""
    if _process.get("pid") != os.getpid():
        client = redisconn.connect(settings)
        metrics.RECORDER.bind(client)
        session = requests.Session()
        tokens = TokenCache(client, settings, session) if settings.aep_credentials else None
        _process.update(
            pid=os.getpid(),
            redis=client,
            aep=aep.AepClient(settings, tokens, session),
            consumer=f"{socket.gethostname()}:{os.getpid()}",
        )
    return _process["redis"], _process["aep"], _process["consumer"]


#: The result of a drain that did not run because its stage already holds its share of processes.
SKIPPED = {"skipped": "this stage already runs in all the processes it may use here"}


def _drain(stage: str, run: Callable[[], Any], again: Task[[], Any]) -> Any:
    """Run one drain of ``stage`` if it may have a process here; queue the next while busy."""
    with drains.SLOTS.hold(stage) as held:
        if not held:
            return None
        summary = run()
        drains.record_run(_resources()[0], stage)
    if summary.busy:
        again.apply_async(expires=2 * BUDGET_SECONDS)  # a backlog: keep this drain going
    return summary


@app.task(name="rainbridge.ingest")
def ingest_inbox() -> dict[str, Any]:
    """Validate, transform and dedupe pushes from the inbox into the outbox."""
    client, _, consumer = _resources()
    summary = _drain("ingest", lambda: ingest.drain(client, settings, consumer, BUDGET_SECONDS), ingest_inbox)
    if summary is None:
        return SKIPPED
    return {"read": summary.read, "sent": summary.sent, "repeats": summary.repeats, "dead": summary.dead}


@app.task(name="rainbridge.housekeep")
def housekeep() -> dict[str, Any]:
    """Forget consumers of processes long gone; recount dead letters if their counts are off."""
    client, _, _ = _resources()
    removed = {
        stream: streams.forget_idle_consumers(client, stream, group, idle_ms=CONSUMER_IDLE_MS)
        for stream, group in ((keys.INBOX, keys.INBOX_GROUP), (keys.OUTBOX, keys.OUTBOX_GROUP))
    }
    recounted = deadletter.reconcile_counts(client)
    drains.record_run(client, "housekeep")
    return {"consumers_removed": removed, "deadletters_recounted": recounted}


@app.task(name="rainbridge.deliver")
def deliver_outbox() -> dict[str, Any]:
    """Send batches from the outbox to AEP."""
    client, aep, consumer = _resources()
    summary = _drain(
        "deliver", lambda: deliver.run(client, settings, consumer, aep, BUDGET_SECONDS), deliver_outbox
    )
    if summary is None:
        return SKIPPED
    return {
        "requests": summary.requests,
        "accepted": summary.accepted,
        "rejected": summary.rejected,
        "retrying": summary.retrying,
        "exhausted": summary.exhausted,
    }
