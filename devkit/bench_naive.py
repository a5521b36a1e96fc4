"""The benchmark's "simplest alternative" to the stream design: one Celery task per push.

The receiver would call ``deliver_one.apply_async((push_json,))`` for every push; each task
validates and transforms its push with the project's own code (:func:`worker.validate.validate`,
:mod:`worker.transform`), claims its ``transmissionId`` (``SET NX EX``, the same dedupe key as the
real pipeline) and POSTs the one message to AEP's single-message endpoint, with the project's
:class:`worker.aep.AepClient` (same headers, same cached IMS token). Nothing is batched.

It is given the benefit of the doubt, so the comparison measures the shape and not a handicap:
the reliability settings the real app needs (late acks, redelivery when a pool child dies), and
nothing it can do without: no task events for Flower, no result backend, no per-task log lines.
It has no retry policy or dead-letter store: it is a throughput stand-in, not a product.

Run it as ``celery -A devkit.bench_naive worker --queues rainbridge-naive`` with the same
environment as the real worker.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from celery import Celery
from celery.signals import after_setup_logger, worker_init, worker_process_init

from shared import keys
from shared.settings import load_or_exit, require_or_exit
from worker.errors import Permanent
from worker.resources import PerProcess, Resources
from worker.transform import check_size, encode, envelope, event_id, to_xdm
from worker.validate import validate

log = logging.getLogger(__name__)

QUEUE = "rainbridge-naive"
TASK_NAME = "rainbridge_naive.deliver_one"

# Checked for the worker's needs only when a worker starts, so the benchmark can import this module.
settings = load_or_exit()

app = Celery("rainbridge-naive", broker=settings.redis_url)
app.conf.update(
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    task_serializer="json",
    accept_content=["json"],
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    broker_transport_options={"visibility_timeout": 300},
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)


_process = PerProcess(lambda: Resources.open(settings))


@worker_init.connect
def _check_settings(**_: Any) -> None:
    """Stop a worker at start when what it needs is missing, as the real worker does."""
    require_or_exit(settings, "worker")


@worker_process_init.connect
def _open_resources(**_: Any) -> None:
    """Connections made before the fork belong to the parent: each pool child opens its own."""
    _process.open()


@after_setup_logger.connect
def _quiet_per_task_lines(**_: Any) -> None:
    """Drop the two INFO lines Celery writes per task: at one task per push they are a cost of their own."""
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


@app.task(name=TASK_NAME)
def deliver_one(push_json: str) -> str:
    """Validate, transform, dedupe and send one push to AEP; return what happened to it."""
    client, aep = _process.get().redis, _process.get().aep
    try:
        push = validate(json.loads(push_json))
        event = to_xdm(push, settings)
        check_size(encode(event))
        message = encode(envelope(event, settings))
    except (ValueError, Permanent) as exc:
        log.warning("dropping an invalid push: %s", exc)
        return "invalid"
    seen = keys.seen(event_id(push.transmission_id))
    if not client.set(seen, "1", nx=True, ex=settings.dedupe_ttl_seconds):
        return "repeat"
    resp = aep.post(settings.aep_single_url, message)
    if resp.status_code != 200:
        client.delete(seen)  # not sent: a later copy of this push must not count as a repeat
        raise RuntimeError(f"AEP answered {resp.status_code}")
    return "sent"
