"""``/healthz`` (the process answers) and ``/readyz`` (Redis answers too)."""

from __future__ import annotations

import redis
from flask import Blueprint, Response, current_app, jsonify

from receiver.errors import queue_unavailable
from receiver.state import receiver_state

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Response:
    """Liveness: no dependencies, so a Redis outage never gets the receiver restarted."""
    return jsonify(status="ok")


@bp.get("/readyz")
def readyz() -> Response:
    """Readiness: 503 while Redis cannot take pushes, so a load balancer routes elsewhere."""
    try:
        receiver_state(current_app).redis.ping()
    except redis.RedisError:
        raise queue_unavailable("Redis is unreachable") from None
    return jsonify(status="ready")
