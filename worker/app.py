"""The Celery app: configured for reliability; the data itself travels in Redis streams.

Celery carries only small "go drain" tasks that the workers themselves send every second
(:mod:`worker.drains`; no beat needed). Losing one is harmless (the next tick sends another)
while the pushes stay in the streams until they are handed on, so the weak points of a Redis
broker never touch a push.

``celery -A worker.app worker`` with no ``--queues`` consumes both queues; ``--queues ingest``
or ``--queues deliver`` narrows a worker to one stage.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_ready, worker_shutdown
from kombu.entity import Exchange, Queue

from shared import errors_reporting, redisconn
from shared.logs import configure_logging
from shared.settings import load_or_exit, require_or_exit
from worker import celery_fixes, drains, flower_guard

log = logging.getLogger(__name__)

#: How long one task drains (seconds).
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
    # Declared, so a worker started without --queues consumes both stages.
    task_queues=tuple(
        Queue(name, Exchange(name), routing_key=name)  # type: ignore[no-untyped-call]
        for name in (INGEST_QUEUE, DELIVER_QUEUE)
    ),
    task_default_queue=INGEST_QUEUE,
    task_routes={
        "rainbridge.ingest": {"queue": INGEST_QUEUE},
        "rainbridge.deliver": {"queue": DELIVER_QUEUE},
    },
    # No periodic work: the workers tick the drains themselves (worker.drains), so `celery beat`
    # is not needed and, if an old deployment still runs it, has nothing to send.
    beat_schedule={},
    timezone="UTC",
    enable_utc=True,
    worker_hijack_root_logger=False,
)


_ticker: drains.Ticker | None = None


@worker_init.connect
def _check_worker_settings(sender: Any = None, **_: Any) -> None:
    """Stop a worker at start when what it needs is missing, before the pool forks."""
    require_or_exit(settings, "worker")
    configure_logging(settings)
    errors_reporting.init(settings, "worker")  # before the pool forks: every child inherits it
    redisconn.warn_if_not_durable(redisconn.connect(settings))
    if sender is not None:
        # Before the fork, so every pool process shares the same slots.
        drains.SLOTS = drains.Slots.for_worker(_consumed_queues(), _concurrency(sender))


def _concurrency(worker: Any) -> int:
    try:
        return int(worker.concurrency or 1)
    except (TypeError, ValueError):  # "auto", resolved by Celery after this signal
        return os.cpu_count() or 1


def _consumed_queues() -> list[str]:
    return list(app.amqp.queues.consume_from or app.amqp.queues)


def _send_tick(task: str, queue: str, expires: float) -> None:
    app.send_task(task, queue=queue, expires=expires)


@worker_ready.connect
def _start_ticker(**_: Any) -> None:
    """Start sending the ticks of the stages this worker consumes, once it can take tasks."""
    global _ticker  # noqa: PLW0603 - one ticker per worker process, made when it is ready
    _ticker = drains.Ticker(settings, _consumed_queues(), _send_tick, redisconn.connect)
    _ticker.start()
    log.info("ticking the drains of %s", ", ".join(_ticker.stages) or "no stage")


@worker_shutdown.connect
def _stop_ticker(**_: Any) -> None:
    if _ticker is not None:
        _ticker.stop()
    drains.SLOTS.remove()
