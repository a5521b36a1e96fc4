"""Celery tasks: thin glue that runs a pipeline stage for about a second and reports what it did."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from celery import Celery, Task

from shared import deadletter, keys
from shared.settings import Settings
from worker import dedupe, deliver, drains, ingest, mapfile, streams
from worker.resources import PerProcess, Resources

#: How long one task drains (seconds).
BUDGET_SECONDS = 1.0

#: A consumer silent this long with nothing pending belongs to a process that is gone.
CONSUMER_IDLE_MS = 3600 * 1000

#: The result of a drain that did not run because its stage already holds its share of processes.
SKIPPED = {"skipped": "this stage already runs in all the processes it may use here"}


def register(
    app: Celery,
    settings: Settings,
    resources: PerProcess[Resources],
    slots: Callable[[], drains.Slots],
) -> None:
    """Define the ingest, deliver and housekeeping tasks on ``app``."""

    def drain(stage: str, run: Callable[[Resources], Any], again: Task[[], Any]) -> Any:
        """Run one drain of ``stage`` if it may have a process here; queue the next while busy."""
        with slots().hold(stage) as held:
            if not held:
                return None
            summary = run(resources.get())
            drains.record_run(resources.get().redis, stage)
        if summary.busy:
            again.apply_async(expires=drains.STAGE_TASK_EXPIRES_SECONDS)  # a backlog: keep it going
        return summary

    @app.task(name=drains.STAGE_TASKS["ingest"])
    def ingest_inbox() -> dict[str, Any]:
        """Validate, transform and dedupe pushes from the inbox into the outbox."""
        summary = drain(
            "ingest",
            lambda r: ingest.drain(r.redis, settings, r.consumer, BUDGET_SECONDS, r.mappings),
            ingest_inbox,
        )
        if summary is None:
            return SKIPPED
        return {"read": summary.read, "sent": summary.sent, "repeats": summary.repeats, "dead": summary.dead}

    @app.task(name=drains.STAGE_TASKS["deliver"])
    def deliver_outbox() -> dict[str, Any]:
        """Send batches from the outbox to AEP."""
        summary = drain(
            "deliver",
            lambda r: deliver.run(r.redis, settings, r.consumer, r.aep, BUDGET_SECONDS),
            deliver_outbox,
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

    @app.task(name=drains.HOUSEKEEP_TASK)
    def housekeep() -> dict[str, Any]:
        """Forget gone consumers and mapping reports, recount dead letters, sweep expired dedupe ids."""
        client = resources.get().redis
        removed = {
            stream: streams.forget_idle_consumers(client, stream, group, idle_ms=CONSUMER_IDLE_MS)
            for stream, group in ((keys.INBOX, keys.INBOX_GROUP), (keys.OUTBOX, keys.OUTBOX_GROUP))
        }
        recounted = deadletter.reconcile_counts(client)
        mappings_forgotten = mapfile.forget_gone(client, idle_ms=CONSUMER_IDLE_MS)
        expired_ids = dedupe.sweep(client, settings)
        drains.record_run(client, "housekeep")
        return {
            "consumers_removed": removed,
            "deadletters_recounted": recounted,
            "mapping_reports_removed": mappings_forgotten,
            "dedupe_ids_expired": expired_ids,
        }
