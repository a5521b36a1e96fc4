"""A fix for Celery 5.7.0's reconnect after the broker (Redis) went away.

After a lost connection Celery first ``collect()``s it (dropping the transport's client) and then
``close()``s it; closing a Redis channel tries to put unacknowledged messages back, which needs
that client, and the resulting ``AttributeError`` escapes ``ignore_errors`` and kills the worker
("Unrecoverable error: AttributeError: 'NoneType' object has no attribute 'hostname'"). The
messages in question are our drain ticks, which beat re-sends anyway, so the right move is to
carry on with the reconnect instead of dying.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer.consumer import Consumer

log = logging.getLogger(__name__)


def install() -> None:
    """Let the consumer reconnect even when closing the dead connection fails."""
    original = Consumer.on_connection_error_after_connected
    if getattr(original, "_rainbridge_fix", False):
        return

    @functools.wraps(original)
    def on_connection_error_after_connected(self: Consumer, exc: BaseException) -> Any:
        try:
            return original(self, exc)
        except AttributeError as error:
            log.warning("ignored an error while closing the lost broker connection: %r", error)
            return None

    on_connection_error_after_connected._rainbridge_fix = True  # type: ignore[attr-defined]
    Consumer.on_connection_error_after_connected = on_connection_error_after_connected
