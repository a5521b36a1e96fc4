"""``POST /collection/<inlet_id>`` and ``/collection/batch/<inlet_id>``: the AEP-compatible door.

RainFocus's Adobe integration posts here exactly what it would post to AEP. The inlet id in the
URL is the credential (an ``Authorization`` header here carries an Adobe token that only Adobe
can check), so it is compared in constant time and an unknown one is a plain 404.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Blueprint, Response, current_app, g, jsonify, request

from receiver.enqueue import encode, new_receipt, read_json
from receiver.errors import ReceiverError
from receiver.state import receiver_state
from shared.settings import Settings

log = logging.getLogger(__name__)

bp = Blueprint("collection", __name__)


@bp.post("/collection/<inlet_id>")
def post_single(inlet_id: str) -> tuple[Response, int]:
    """One push; answers like AEP's single-message endpoint (200)."""
    state = receiver_state(current_app)
    _check_inlet(state.settings, inlet_id)
    state.backpressure.check()
    data, text = read_json(request, state.settings.receiver_max_bytes)
    if not isinstance(data, dict):
        raise ReceiverError(400, "not_a_push", "the body must be one JSON object")
    receipt = new_receipt()
    (entry_id,) = state.inbox.add([text.strip()], receipt)
    g.stored = 1  # for the request metrics
    log.debug("%s accepted 1 push via /collection, %s", receipt, entry_id, extra={"receipt": receipt})
    return jsonify(inletId=inlet_id, xactionId=entry_id, receivedTimeMs=_now_ms()), 200


@bp.post("/collection/batch/<inlet_id>")
def post_batch(inlet_id: str) -> tuple[Response, int]:
    """``{"messages": [...]}``; answers like AEP's batch endpoint (207, one response per message)."""
    state = receiver_state(current_app)
    settings = state.settings
    _check_inlet(settings, inlet_id)
    state.backpressure.check()
    data, _ = read_json(request, settings.receiver_max_bytes)
    messages = data.get("messages") if isinstance(data, dict) else None
    if not isinstance(messages, list) or not messages:
        raise ReceiverError(400, "not_a_push", 'the body must be {"messages": [one or more JSON objects]}')
    if len(messages) > settings.receiver_max_pushes:
        raise ReceiverError(
            400, "not_a_push", f"a batch may hold at most {settings.receiver_max_pushes} messages"
        )
    receipt = new_receipt()
    # Like AEP: a message that is not an object is refused on its own; its neighbours go through.
    pushes = [encode(m) for m in messages if isinstance(m, dict)]
    stored = state.inbox.add(pushes, receipt) if pushes else []
    g.stored = len(stored)  # for the request metrics
    ids = iter(stored)
    responses: list[dict[str, Any]] = [
        {"xactionId": next(ids)}
        if isinstance(m, dict)
        else {"statusCode": 400, "message": "not_a_push: a message must be a JSON object"}
        for m in messages
    ]
    log.debug(
        "%s accepted %d of %d push(es) via /collection/batch",
        receipt,
        len(pushes),
        len(messages),
        extra={"receipt": receipt},
    )
    return jsonify(inletId=inlet_id, batchId=receipt, receivedTimeMs=_now_ms(), responses=responses), 207


def _check_inlet(settings: Settings, inlet_id: str) -> None:
    expected = settings.receiver_inlet_id
    if not expected or not hmac.compare_digest(inlet_id.encode(), expected.encode()):
        raise ReceiverError(404, "not_found", "no such inlet")
    if settings.receiver_flow_id:
        flow = request.headers.get("x-adobe-flow-id") or request.args.get("x-adobe-flow-id", "")
        if not hmac.compare_digest(flow.encode(), settings.receiver_flow_id.encode()):
            raise ReceiverError(
                400, "invalid_flow_id", "x-adobe-flow-id is missing or not this inlet's dataflow"
            )


def _now_ms() -> int:
    return int(time.time() * 1000)
