"""The one enqueue path both doors share: read the body, parse it, XADD it, or say why not."""

from __future__ import annotations

import json
import logging
import secrets
from typing import Any

import redis
from flask import Request

from receiver.errors import ReceiverError, queue_unavailable
from shared import keys

log = logging.getLogger(__name__)

JSON_TYPES = ("application/json",)


def new_receipt() -> str:
    """A short random id for one request, logged with every push it carried."""
    return secrets.token_hex(8)


def read_json(request: Request, max_bytes: int) -> Any:
    """The request body parsed as JSON, or a ReceiverError (415, 413, 400) saying what is wrong."""
    mimetype = request.mimetype
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ReceiverError(
            415, "unsupported_media_type", "send the push with Content-Type: application/json"
        )
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ReceiverError(413, "too_large", f"the body is over the {max_bytes}-byte limit")
    body = request.get_data(cache=False)
    if len(body) > max_bytes:
        raise ReceiverError(413, "too_large", f"the body is over the {max_bytes}-byte limit")
    if not body.strip():
        raise ReceiverError(400, "invalid_json", "the body is empty")
    try:
        return json.loads(body, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ReceiverError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None


def _reject_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259); AEP would refuse them later.
    raise ValueError(f"{name} is not allowed in JSON")


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
            return [str(client.xadd(keys.INBOX, {"push": pushes[0], "receipt": receipt}))]
        with client.pipeline(transaction=True) as pipe:
            for push in pushes:
                pipe.xadd(keys.INBOX, {"push": push, "receipt": receipt})
            return list(pipe.execute())
    except redis.RedisError as exc:
        # Connection refused, timeout, or OOM under noeviction: nothing was stored.
        log.warning("%s enqueue failed, answering 503: %s", receipt, exc)
        raise queue_unavailable() from None
