"""``POST /v1/pushes``: the generic webhook door, with token auth and an optional signature."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import time

from flask import Blueprint, Response, current_app, g, request

from receiver.body import read_body
from receiver.enqueue import encode, new_receipt, read_json
from receiver.errors import ReceiverError
from receiver.state import receiver_state
from shared.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("pushes", __name__)

#: How far a signed request's timestamp may be from now, in seconds, either way.
SIGNATURE_WINDOW_SECONDS = 300


@bp.post("/v1/pushes")
def post_pushes() -> tuple[Response, int]:
    """Authenticate, parse, enqueue, answer 202 with a receipt."""
    state = receiver_state(current_app)
    settings = state.settings
    _authenticate(settings)
    state.backpressure.check()
    body = read_body(request, settings.receiver_max_bytes) if settings.receiver_signing_secret else None
    if body is not None:
        _verify_signature(settings, body)
    data, text = read_json(request, settings.receiver_max_bytes)
    pushes = data if isinstance(data, list) else [data]
    if not pushes or not all(isinstance(p, dict) for p in pushes):
        raise ReceiverError(400, "not_a_push", "send one JSON object, or an array of 1 or more JSON objects")
    if len(pushes) > settings.receiver_max_pushes:
        raise ReceiverError(
            400, "not_a_push", f"an array may hold at most {settings.receiver_max_pushes} pushes"
        )
    receipt = new_receipt()
    # A single object is stored as it came (already checked), not decoded and encoded again.
    encoded = [text.strip()] if isinstance(data, dict) else [encode(p) for p in pushes]
    ids = state.inbox.add(encoded, receipt)
    g.stored = len(ids)  # for the request metrics
    # DEBUG: a line per request costs more than the rest of the request path; /metrics counts them.
    log.debug("%s accepted %d push(es), first %s", receipt, len(ids), ids[0], extra={"receipt": receipt})
    # By hand: on this path jsonify costs about as much as the client side of the XADD.
    answer = f'{{"accepted":{len(ids)},"receipt":"{receipt}"}}'
    return Response(answer, content_type="application/json"), 202


def _authenticate(settings: Settings) -> None:
    presented = _presented_token(request.headers.get("Authorization", ""))
    # Compare against every token, always, so timing says nothing about which one is close.
    ok = False
    for token in settings.receiver_tokens:
        ok |= hmac.compare_digest(presented.encode(), token.encode())
    if not ok or not presented:
        raise ReceiverError(
            401,
            "unauthorized",
            "a valid token is required",
            {"WWW-Authenticate": 'Bearer realm="rainbridge"'},
        )


def _presented_token(header: str) -> str:
    scheme, _, value = header.partition(" ")
    scheme = scheme.lower()
    if scheme == "bearer":
        return value.strip()
    if scheme == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


def _verify_signature(settings: Settings, body: bytes) -> None:
    secret = settings.receiver_signing_secret or ""
    stamp = request.headers.get("X-Rainbridge-Timestamp", "")
    signature = request.headers.get("X-Rainbridge-Signature", "")
    expected = "sha256=" + hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= SIGNATURE_WINDOW_SECONDS
    # One answer for every failure: a prober learns nothing about which part was wrong.
    if not (hmac.compare_digest(signature.encode(), expected.encode()) and fresh):
        raise ReceiverError(401, "unauthorized", "a valid token is required")
