"""Request metrics and ``GET /metrics``: counted in-process, summed fleet-wide in Redis."""

from __future__ import annotations

import time

from flask import Blueprint, Flask, Response, current_app, g, request

from receiver.state import receiver_state
from shared import metrics

bp = Blueprint("metrics", __name__)

#: Routes whose 2xx answers acknowledge stored pushes.
PUSH_ROUTES = {"/v1/pushes", "/collection/<inlet_id>", "/collection/batch/<inlet_id>"}


@bp.get("/metrics")
def metrics_route() -> Response:
    """Prometheus exposition of the whole fleet's metrics (workers included) and queue gauges."""
    body = metrics.render(receiver_state(current_app).redis)
    return Response(body, mimetype="text/plain; version=0.0.4")


def install(app: Flask) -> None:
    """Count every request by route and status, and time acknowledgements."""
    metrics.RECORDER.bind(receiver_state(app).redis)
    app.register_blueprint(bp)
    app.before_request(_start)
    app.after_request(_count)


def _start() -> None:
    g.started = time.perf_counter()


def _count(response: Response) -> Response:
    # The rule, not the path: an inlet id in a URL is a secret and must not become a label.
    route = request.url_rule.rule if request.url_rule else "unmatched"
    status = response.status_code
    metrics.inc(metrics.REQUESTS, route=route, status=str(status))
    if route in PUSH_ROUTES and 200 <= status < 300:
        metrics.observe(
            metrics.ACK_SECONDS, time.perf_counter() - g.get("started", time.perf_counter()), route=route
        )
        metrics.inc(metrics.PUSHES_RECEIVED, g.get("stored", 0), route=route)
    elif status == 503:
        body = response.get_json(silent=True) or {}
        why = "queue_full" if "full" in str(body.get("detail", "")) else "redis_unavailable"
        metrics.inc(metrics.ENQUEUE_FAILURES, why=why)
    return response
