"""The receiver's gunicorn worker: gevent, with deadlines that slow or idle clients cannot stretch.

gunicorn's default sync worker gives each connection a whole process until its request is in,
so two clients that never finish their headers take a two-worker receiver offline. Here every
connection is a greenlet, so a slow one costs a few kilobytes, not a process, and each has a
deadline: its request line and headers must arrive within ``RECEIVER_HEADER_TIMEOUT_SECONDS``
(also the longest an idle kept-alive connection stays open) and its body within
``RECEIVER_BODY_TIMEOUT_SECONDS``, however slowly it drips. Then the connection is closed, with a
JSON 408 when the headers were in. Errors gunicorn itself answers (malformed HTTP) get the
receiver's JSON error shape too.

``gunicorn.conf.py`` in the project root (and in the image) selects this worker, so the plain
``gunicorn "receiver.app:create_app()"`` uses it.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

import gevent
from gunicorn import util
from gunicorn.workers.ggevent import GeventWorker

from receiver.errors import BodyTimeout
from shared.settings import ConfigError, Settings

#: gunicorn's error statuses, as the receiver's error codes.
_CODES = {
    400: "bad_request",
    403: "forbidden",
    408: "request_timeout",
    414: "uri_too_long",
    417: "expectation_failed",
    431: "headers_too_large",
    500: "internal_error",
    501: "not_implemented",
}


def write_json_error(sock: socket.socket, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn's error answer in the receiver's shape; the detail never echoes the request."""
    del mesg  # gunicorn's message quotes what the client sent: never send it back
    body = json.dumps({"error": _CODES.get(status_int, "bad_request"), "detail": reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


def _close_after_errors(app: Callable[..., Any]) -> Callable[..., Any]:
    """Close the connection after a 4xx/5xx to a request that carried a body.

    The app may answer before reading the body (a 413 from Content-Length, a 401): a kept-alive
    connection would then make the server read and discard the rest, up to whatever the client
    sends. gunicorn ignores a Connection header from the app, so its response is told directly.
    """

    def wrapped(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        has_body = environ.get("CONTENT_LENGTH") not in (None, "", "0") or "chunked" in environ.get(
            "HTTP_TRANSFER_ENCODING", ""
        )

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if has_body and status[:1] in "45":
                response = getattr(start_response, "__self__", None)  # gunicorn's Response
                if response is not None:
                    response.force_close()
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return wrapped


class Worker(GeventWorker):  # type: ignore[misc]
    """A gevent worker whose connections cannot be held open by a slow or idle client."""

    header_timeout: float = 10.0
    body_timeout: float = 30.0

    def init_process(self) -> None:
        """Read the two deadlines, then start as gunicorn's gevent worker does."""
        try:
            settings = Settings.from_env()
        except ConfigError:
            pass  # the app reports the bad setting and stops the worker; keep the defaults here
        else:
            self.header_timeout = settings.receiver_header_timeout_seconds
            self.body_timeout = settings.receiver_body_timeout_seconds
        # gunicorn answers malformed requests itself, as HTML; this process only ever serves ours.
        util.write_error = write_json_error
        super().init_process()

    def load_wsgi(self) -> None:
        """Load the app, wrapped so an error answer to a request with a body closes the connection."""
        super().load_wsgi()
        self.wsgi: Callable[..., Any] = _close_after_errors(self.wsgi)

    def timeout_ctx(self) -> Any:
        """The deadline for a request line and headers (and for a kept-alive connection's next one)."""
        return gevent.Timeout(self.header_timeout, False)

    def handle_request(self, listener_name: Any, req: Any, sock: Any, addr: Any) -> Any:
        """Serve one request; its body (and the app's work) must be done within the body deadline."""
        with gevent.Timeout(self.body_timeout, BodyTimeout):
            return super().handle_request(listener_name, req, sock, addr)
