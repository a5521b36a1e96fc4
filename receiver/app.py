"""The receiver's Flask app factory: verify, size-check, enqueue, acknowledge."""

from __future__ import annotations

import logging
import sys

import redis
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from receiver import collection, health, observe, openapi, pushes
from receiver.backpressure import Backpressure
from receiver.enqueue import Inbox
from receiver.errors import ReceiverError
from receiver.state import ReceiverState
from shared import errors_reporting, redisconn
from shared.logs import configure_logging
from shared.settings import ConfigError, Settings, exit_on_config_error, load_or_exit

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, redis_client: redis.Redis | None = None) -> Flask:
    """Build the receiver; without ``settings`` they are read from the environment (or exit)."""
    if settings is None:
        # Exit code 3 is gunicorn's "worker failed to boot": it stops instead of respawning.
        settings = load_or_exit("receiver", exit_code=3)
        configure_logging(settings)
    _warn_if_served_by_a_blocking_worker()
    errors_reporting.init(settings, "receiver")
    client = redis_client or redisconn.connect(settings, socket_timeout=2.0)
    if problem := redisconn.refusal(client):
        exit_on_config_error(ConfigError(problem), exit_code=3)
    redisconn.warn_if_not_durable(client)

    app = Flask("receiver")
    app.config["MAX_CONTENT_LENGTH"] = settings.receiver_max_bytes
    app.extensions["rainbridge"] = ReceiverState(
        settings=settings, redis=client, backpressure=Backpressure(client, settings), inbox=Inbox(client)
    )
    for blueprint in (pushes.bp, collection.bp, health.bp, openapi.bp, observe.bp):
        app.register_blueprint(blueprint)
    observe.install(app)
    app.register_error_handler(ReceiverError, _receiver_error)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _unexpected_error)
    return app


def _warn_if_served_by_a_blocking_worker() -> None:
    """gunicorn without our gunicorn.conf.py runs sync workers, which two slow clients can stall."""
    if "gunicorn" not in sys.modules or "gunicorn" not in sys.argv[0]:
        return
    monkey = sys.modules.get("gevent.monkey")
    if monkey is None or not monkey.is_module_patched("socket"):
        log.warning(
            "the receiver runs on a blocking gunicorn worker: a few slow or idle clients can hold "
            "every worker and stall it; start gunicorn from the rainbridge directory (it reads "
            "gunicorn.conf.py) or pass --config with that file"
        )


def _receiver_error(exc: ReceiverError) -> Response:
    return exc.response()


_CODES = {404: "not_found", 405: "method_not_allowed", 413: "too_large", 415: "unsupported_media_type"}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = _CODES.get(status, "bad_request" if status < 500 else "internal_error")
    return ReceiverError(status, code, exc.description or code).response()


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unexpected error while handling a request")
    return ReceiverError(500, "internal_error", "unexpected error").response()
