"""The benchmark's baseline receiver: parse the JSON body, answer 202, nothing else.

It runs under the same gunicorn configuration as the real receiver, so the ratio between the two
is the price of what the receiver adds (auth, size checks, back-pressure, the XADD, logging).
"""

from __future__ import annotations

import json

from flask import Flask, Response, request


def create_app() -> Flask:
    """A Flask app with one route, ``POST /v1/pushes``, that parses the body and answers 202."""
    app = Flask("bench-baseline")

    @app.post("/v1/pushes")
    def post_pushes() -> Response:
        data = json.loads(request.get_data(cache=False))
        count = len(data) if isinstance(data, list) else 1
        return Response(f'{{"accepted":{count}}}', status=202, mimetype="application/json")

    @app.get("/healthz")
    def healthz() -> Response:
        return Response('{"status":"ok"}', status=200, mimetype="application/json")

    return app
