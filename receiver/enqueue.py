"""The one enqueue path both doors share: read the body, parse it, XADD it, or say why not."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import redis
from flask import Request, g

from receiver.body import check_content_type, content_coding, gunzip, parse_json, read_body
from receiver.errors import queue_unavailable
from shared import keys

log = logging.getLogger(__name__)


def new_receipt() -> str:
    """A short random id for one request, logged with every push it carried."""
    return secrets.token_hex(8)


def read_json(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON, or a ReceiverError (415, 413, 400) saying what is wrong."""
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


def enqueue(client: redis.Redis, pushes: list[str], receipt: str) -> list[str]:
    """Append encoded pushes to the inbox in one transaction; return their stream ids.

    All or nothing: a request is either wholly in Redis or not at all, so the sender can
    retry the whole request without leaving half of it behind.
    """
    try:
        if len(pushes) == 1:
            ids = [str(client.xadd(keys.INBOX, {"push": pushes[0], "receipt": receipt}))]
        else:
            with client.pipeline(transaction=True) as pipe:
                for push in pushes:
                    pipe.xadd(keys.INBOX, {"push": push, "receipt": receipt})
                ids = list(pipe.execute())
    except redis.RedisError as exc:
        # Connection refused, timeout, or OOM under noeviction: nothing was stored.
        log.warning("%s enqueue failed, answering 503: %s", receipt, exc, extra={"receipt": receipt})
        raise queue_unavailable() from None
    g.stored = len(ids)  # for the request metrics
    return ids
