"""The Celery app: configured for reliability; the data itself travels in Redis streams.

Celery carries only small "go drain" tasks that beat sends every tick. Losing one is harmless
(the next tick sends another) while the pushes stay in the streams until they are handed on,
so the weak points of a Redis broker (see DESIGN.md §9) never touch a push.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_init

from shared import errors_reporting, redisconn
from shared.logs import configure_logging
from shared.settings import ConfigError, load_or_exit
from worker import celery_fixes, flower_guard

log = logging.getLogger(__name__)

#: How often beat asks for a drain of each stream, and how long one task drains (seconds).
TICK_SECONDS = 1.0
BUDGET_SECONDS = 1.0

INGEST_QUEUE = "ingest"
DELIVER_QUEUE = "deliver"

settings = load_or_exit()
if refusal := flower_guard.problem(sys.argv):
    print(f"rainbridge: {refusal}", file=sys.stderr)
    raise SystemExit(2)

celery_fixes.install()

app = Celery("rainbridge", broker=settings.redis_url, include=["worker.tasks"])
app.conf.update(
    # Reliability: ack after the task ran; a task whose process died goes back to the queue.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # Each task drains in bulk and blocks on a stream; reserving more would only hide work.
    worker_prefetch_multiplier=1,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    # A task runs for about a second; after 5 minutes an unacked task is surely orphaned.
    broker_transport_options={"visibility_timeout": 300}
    | ({"master_name": settings.redis_sentinel_master} if settings.uses_sentinel else {}),
    broker_connection_retry_on_startup=True,
    task_soft_time_limit=120,
    task_time_limit=150,
    # Flower sees tasks from the moment they are sent.
    worker_send_task_events=True,
    task_send_sent_event=True,
    task_default_queue=INGEST_QUEUE,
    task_routes={
        "rainbridge.ingest": {"queue": INGEST_QUEUE},
        "rainbridge.deliver": {"queue": DELIVER_QUEUE},
        "rainbridge.housekeep": {"queue": INGEST_QUEUE},
    },
    beat_schedule={
        # A tick that waited longer than its expiry is dropped: a newer one is already queued.
        "drain-inbox": {
            "task": "rainbridge.ingest",
            "schedule": TICK_SECONDS,
            "options": {"expires": 2 * TICK_SECONDS},
        },
        "housekeep": {"task": "rainbridge.housekeep", "schedule": 60.0, "options": {"expires": 60}},
        "drain-outbox": {
            "task": "rainbridge.deliver",
            "schedule": TICK_SECONDS,
            "options": {"expires": 2 * TICK_SECONDS},
        },
    },
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=False,
)


@worker_init.connect
def _check_worker_settings(**_: Any) -> None:
    """Stop a worker at start when what it needs is missing, before the pool forks."""
    try:
        settings.require("worker")
    except ConfigError as exc:
        print(f"rainbridge: configuration error: {exc}", flush=True)
        raise SystemExit(2) from None
    configure_logging(settings)
    errors_reporting.init(settings, "worker")  # before the pool forks: every child inherits it
    redisconn.warn_if_not_durable(redisconn.connect(settings))
