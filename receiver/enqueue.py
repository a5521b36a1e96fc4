"""The one enqueue path both doors share: read the body, parse it, XADD it, or say why not."""

from __future__ import annotations

import json
import logging
import secrets
import threading
from typing import Any

import redis
from flask import Request, g
from redis.connection import Connection

from receiver.body import check_content_type, content_coding, gunzip, parse_json, read_body
from receiver.errors import queue_unavailable
from shared import keys

log = logging.getLogger(__name__)


def new_receipt() -> str:
    """A short random id for one request, logged with every push it carried."""
    return secrets.token_hex(8)


def read_json(request: Request, max_bytes: int) -> tuple[Any, str]:
    """The request body parsed as JSON, with its text; or a ReceiverError (415, 413, 400)."""
    # Header checks first: they cost nothing, and a refused request is never read.
    check_content_type(request)
    coding = content_coding(request)
    body = read_body(request, max_bytes)
    if coding == "gzip" and body:
        body = gunzip(body, max_bytes)
    return parse_json(body)


def encode(push: dict[str, Any]) -> str:
    """Compact JSON for one push, as it is stored in the inbox."""
    return json.dumps(push, separators=(",", ":"), ensure_ascii=False)


class Inbox:
    """Appends pushes to the inbox stream, on a connection each thread keeps for its lifetime.

    The acknowledgement waits on this round trip, so it is kept short: one connection held per
    thread (a sync gunicorn worker has one) skips the pool's checkout and return on every request.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._local = threading.local()

    def add(self, pushes: list[str], receipt: str) -> list[str]:
        """Append encoded pushes in one transaction; return their stream ids, or raise a 503.

        All or nothing: a request is either wholly in Redis or not at all, so the sender can
        retry the whole request without leaving half of it behind.
        """
        try:
            if len(pushes) == 1:
                ids = [self._xadd(pushes[0], receipt)]
            else:
                with self._client.pipeline(transaction=True) as pipe:
                    for push in pushes:
                        pipe.xadd(keys.INBOX, {"push": push, "receipt": receipt})
                    ids = [str(entry_id) for entry_id in pipe.execute()]
        except redis.RedisError as exc:
            # Connection refused, timeout, or OOM under noeviction: nothing was stored.
            log.warning("%s enqueue failed, answering 503: %s", receipt, exc, extra={"receipt": receipt})
            raise queue_unavailable() from None
        g.stored = len(ids)  # for the request metrics
        return ids

    def _xadd(self, push: str, receipt: str) -> str:
        connection = self._connection()
        for attempt in (1, 2):
            try:
                connection.send_command("XADD", keys.INBOX, "*", "push", push, "receipt", receipt)  # type: ignore[no-untyped-call]
                return str(connection.read_response())
            except redis.ConnectionError:
                connection.disconnect()  # type: ignore[no-untyped-call]
                # Once more on a fresh connection: an idle one may have been cut by a Redis
                # restart or a failover. A resend that doubles a push is dropped by dedupe.
                if attempt == 2:
                    raise
            except redis.TimeoutError:
                # Not resent (Redis may be slow, not gone); a fresh connection next time, so a
                # late reply is never read as the next request's.
                connection.disconnect()  # type: ignore[no-untyped-call]
                raise
        raise AssertionError("unreachable")

    def _connection(self) -> Connection:
        connection: Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # From the client's pool, so it has the same options and, with Sentinel, finds the
            # current master on every reconnection.
            connection = self._client.connection_pool.get_connection()
            self._local.connection = connection
        return connection
