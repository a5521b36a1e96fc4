"""The one enqueue path both doors share: read the body, parse it, XADD it, or say why not."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import redis
from flask import Request
from redis.connection import Connection

from receiver.body import check_content_type, content_coding, gunzip, parse_json, read_body
from receiver.errors import queue_unavailable
from shared import keys, metrics
from shared.records import InboxRecord

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
    """Appends pushes to the inbox stream.

    The acknowledgement waits on this round trip, so a single push is one raw XADD on a pooled
    connection, without the client's command machinery. The connection goes back to the pool at
    once: the receiver's worker serves each client connection in a greenlet of its own, and one
    Redis connection kept per greenlet would be one per client.
    """

    def __init__(self, client: redis.Redis) -> None:
        self._client = client

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
                        pipe.xadd(keys.INBOX, InboxRecord(push, receipt).fields())
                    ids = [str(entry_id) for entry_id in pipe.execute()]
        except redis.RedisError as exc:
            # Connection refused, timeout, or OOM under noeviction: nothing was stored.
            log.warning("%s enqueue failed, answering 503: %s", receipt, exc, extra={"receipt": receipt})
            metrics.inc(metrics.ENQUEUE_FAILURES, why="redis_unavailable")
            raise queue_unavailable() from None
        return ids

    def _xadd(self, push: str, receipt: str) -> str:
        # From the client's pool, so it has the same options and, with Sentinel, finds the
        # current master on every reconnection.
        pool = self._client.connection_pool
        connection = pool.get_connection()
        try:
            return self._send_xadd(connection, push, receipt)
        finally:
            pool.release(connection)

    def _send_xadd(self, connection: Connection, push: str, receipt: str) -> str:
        for attempt in (1, 2):
            try:
                connection.send_command("XADD", keys.INBOX, "*", *InboxRecord(push, receipt).flat())  # type: ignore[no-untyped-call]
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
