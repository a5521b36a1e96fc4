"""The Celery app: configured for reliability; the data itself travels in Redis streams.

Celery carries only small "go drain" tasks that the workers themselves send every second
(:mod:`worker.drains`; no beat needed). Losing one is harmless (the next tick sends another)
while the pushes stay in the streams until they are handed on, so the weak points of a Redis
broker never touch a push.

``celery -A worker.app worker`` with no ``--queues`` consumes both queues; ``--queues ingest``
or ``--queues deliver`` narrows a worker to one stage. :func:`create_app` builds the app from a
:class:`~shared.settings.Settings`; the module's ``app`` is the one built from the environment.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from typing import Any

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown
from kombu.entity import Exchange, Queue

from shared import errors_reporting, redisconn
from shared.logs import configure_logging
from shared.settings import ConfigError, Settings, exit_on_config_error, load_or_exit, require_or_exit
from worker import celery_fixes, drains, flower_guard, mapfile, tasks
from worker.resources import PerProcess, Resources

log = logging.getLogger(__name__)

INGEST_QUEUE = "ingest"
DELIVER_QUEUE = "deliver"


@dataclass
class Runtime:
    """What one worker keeps while it runs: its settings, its processes' resources, its ticker."""

    settings: Settings
    resources: PerProcess[Resources]
    slots: drains.Slots = field(default_factory=lambda: drains.Slots({}))
    ticker: drains.Ticker | None = None
    #: Loaded at start, in the main process: pool processes inherit it.
    mappings: mapfile.Active | None = None


def create_app(settings: Settings) -> Celery:
    """The rainbridge Celery app for ``settings``: its queues, reliability options, tasks and signals."""
    celery_fixes.install()
    broker_url, tls = settings.redis_url, None
    sentinel_options: dict[str, Any] = {}
    if settings.uses_sentinel:
        named = settings.sentinels
        broker_url, tls = named.broker_url, dict(named.tls) or None
        # kombu takes TLS for the master as broker_use_ssl, and for the Sentinels separately.
        sentinel_options = {"master_name": settings.redis_sentinel_master}
        if named.sentinel_kwargs:
            sentinel_options["sentinel_kwargs"] = named.sentinel_kwargs
    app = Celery("rainbridge", broker=broker_url)
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
        broker_transport_options={"visibility_timeout": 300} | sentinel_options,
        broker_use_ssl=tls,
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
            drains.STAGE_TASKS[INGEST_QUEUE]: {"queue": INGEST_QUEUE},
            drains.STAGE_TASKS[DELIVER_QUEUE]: {"queue": DELIVER_QUEUE},
        },
        # No periodic work: the workers tick the drains themselves (worker.drains), so `celery beat`
        # is not needed and, if an old deployment still runs it, has nothing to send.
        beat_schedule={},
        timezone="UTC",
        enable_utc=True,
        worker_hijack_root_logger=False,
    )
    runtime = Runtime(settings, PerProcess(lambda: Resources.open(settings, runtime.mappings)))
    tasks.register(app, runtime.settings, runtime.resources, lambda: runtime.slots)
    _connect_signals(app, runtime)
    return app


def _connect_signals(app: Celery, runtime: Runtime) -> None:
    """Hook the worker's life cycle: checks before the fork, resources after it, the ticker once ready."""
    settings = runtime.settings

    def ours(sender: Any) -> bool:
        # Celery's signals are process-wide; another app built in this process must not trigger these.
        return getattr(sender, "app", app) is app

    def check_settings(sender: Any = None, **_: Any) -> None:
        """Stop a worker at start when what it needs is missing, before the pool forks."""
        if not ours(sender):
            return
        require_or_exit(settings, "worker")
        try:
            runtime.mappings = mapfile.Active(settings)
        except mapfile.MappingError as exc:
            exit_on_config_error(mapfile.config_error(exc))
        configure_logging(settings)
        errors_reporting.init(settings, "worker")  # before the pool forks: every child inherits it
        client = redisconn.connect(settings)
        if problem := redisconn.refusal(client):
            exit_on_config_error(ConfigError(problem))
        redisconn.warn_if_not_durable(client)
        if sender is not None:
            # Before the fork, so every pool process shares the same slots.
            runtime.slots = drains.Slots.for_worker(_consumed_queues(app), _concurrency(sender))

    def open_resources(**_: Any) -> None:
        """Connections made before the fork belong to the parent: each pool process opens its own."""
        runtime.resources.open()

    def start_ticker(sender: Any = None, **_: Any) -> None:
        """Start sending the ticks of the stages this worker consumes, once it can take tasks."""
        if not ours(sender):
            return

        def send(task: str, queue: str, expires: float) -> None:
            app.send_task(task, queue=queue, expires=expires)

        runtime.ticker = drains.Ticker(settings, _consumed_queues(app), send, redisconn.connect)
        runtime.ticker.start()
        log.info("ticking the drains of %s", ", ".join(runtime.ticker.stages) or "no stage")

    def stop_ticker(sender: Any = None, **_: Any) -> None:
        if not ours(sender):
            return
        if runtime.ticker is not None:
            runtime.ticker.stop()
        runtime.slots.remove()

    worker_init.connect(check_settings, weak=False)
    worker_process_init.connect(open_resources, weak=False)
    worker_ready.connect(start_ticker, weak=False)
    worker_shutdown.connect(stop_ticker, weak=False)


def _concurrency(worker: Any) -> int:
    try:
        return int(worker.concurrency or 1)
    except (TypeError, ValueError):  # "auto", resolved by Celery after this signal
        return os.cpu_count() or 1


def _consumed_queues(app: Celery) -> list[str]:
    return list(app.amqp.queues.consume_from or app.amqp.queues)


def _from_environment() -> Celery:
    """The app ``celery -A worker.app`` loads: settings from the environment, Flower checked."""
    settings = load_or_exit()
    # Celery loads this app before Flower parses its own options: refuse an open Flower here.
    if refusal := flower_guard.problem(sys.argv):
        print(f"rainbridge: {refusal}", file=sys.stderr)
        raise SystemExit(2)
    return create_app(settings)


app = _from_environment()
