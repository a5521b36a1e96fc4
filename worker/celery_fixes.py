"""A fix for Celery 5.7.0 / kombu 5.7.0 workers dying after the broker (Redis) went away.

After a lost connection Celery drops the transport's client, yet two later steps still use the
old channel: closing it (which puts unacknowledged messages back) and acknowledging a task that
was running when the connection dropped (late acks). Both then fail with
``AttributeError: 'NoneType' object has no attribute 'hostname'``, which no error handler
expects, and the worker exits ("Unrecoverable error"). Raising the connection error those
handlers do expect lets them do their job: the close is ignored, the ack is logged as failed
(the message is a drain tick; the next one is sent a second later anyway), and the worker reconnects.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from kombu.transport import redis as kombu_redis


def install() -> None:
    """Make a channel whose connection is gone raise a connection error, not an AttributeError."""
    original = kombu_redis.Channel._connparams
    if getattr(original, "_rainbridge_fix", False):
        return

    @functools.wraps(original)
    def _connparams(self: Any, asynchronous: bool = False) -> Any:
        if self.connection.client is None:
            raise redis.ConnectionError("the broker connection was closed")
        return original(self, asynchronous)  # type: ignore[no-untyped-call]

    _connparams._rainbridge_fix = True  # type: ignore[attr-defined]
    kombu_redis.Channel._connparams = _connparams  # type: ignore[method-assign]
