"""The benchmark's baseline receivers: parse the JSON body and answer 202; the same plus an XADD.

They run under the same gunicorn configuration as the real receiver, so the ratios between them
are the price of what the receiver adds (auth, size checks, back-pressure, the XADD, metrics).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import redis
from flask import Flask, Response, request

from shared import keys


def create_app() -> Flask:
    """A Flask app with one route, ``POST /v1/pushes``, that parses the body and answers 202."""
    return _app("bench-baseline", store=None)


def create_xadd_app() -> Flask:
    """The baseline plus one XADD of the body to ``REDIS_URL``: the floor for acking after a save.

    Any receiver that answers only once the push is in Redis pays at least this; the distance from
    here to the receiver is what its own checks (auth, limits, back-pressure, metrics) cost.
    """
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    return _app("bench-xadd", store=lambda body: client.xadd(keys.INBOX, {"push": body}))


def _app(name: str, store: Callable[[bytes], object] | None) -> Flask:
    app = Flask(name)

    @app.post("/v1/pushes")
    def post_pushes() -> Response:
        body = request.get_data(cache=False)
        data = json.loads(body)
        count = len(data) if isinstance(data, list) else 1
        if store is not None:
            store(body)
        return Response(f'{{"accepted":{count}}}', status=202, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', status=200, mimetype="application/json")

    return app
