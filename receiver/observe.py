"""Request metrics and ``GET /metrics``: counted in-process, summed fleet-wide in Redis."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Blueprint, Flask, Response, current_app, g, request

from receiver.state import receiver_state
from shared import metrics

bp = Blueprint("metrics", __name__)

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

#: Where the WSGI wrapper notes when a request arrived.
STARTED = "rainbridge.started"
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
    # The clock starts in a WSGI wrapper: cheaper than a before_request hook on every request.
    app.wsgi_app = _timed(app.wsgi_app)  # type: ignore[method-assign,assignment]
    app.after_request(_count)


def _timed(wsgi_app: WSGIApplication) -> WSGIApplication:
    def timed(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        environ[STARTED] = time.perf_counter()
        return wsgi_app(environ, start_response)

    return timed


def _count(response: Response) -> Response:
    # The rule, not the path: an inlet id in a URL is a secret and must not become a label.
    rule = request.url_rule
    route = rule.rule if rule is not None else "unmatched"
    status = response.status_code
    metrics.inc(metrics.REQUESTS, route=route, status=str(status))
    if 200 <= status < 300 and route in PUSH_ROUTES:
        started = request.environ.get(STARTED)
        if started is not None:
            metrics.observe(metrics.ACK_SECONDS, time.perf_counter() - started, route=route)
        metrics.inc(metrics.PUSHES_RECEIVED, g.get("stored", 0), route=route)
    return response
