"""JSON error answers: ``{"error": code, "detail": text}``, the same shape on every route."""

from __future__ import annotations

from flask import Response, jsonify

#: Seconds a sender should wait before retrying when the queue is unavailable.
RETRY_AFTER_SECONDS = 5


class BodyTimeout(Exception):
    """The request body did not arrive within ``RECEIVER_BODY_TIMEOUT_SECONDS`` (see receiver.server)."""


class ReceiverError(Exception):
    """An error answer: HTTP status, machine-readable code and a human-readable detail."""

    def __init__(self, status: int, code: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> Response:
        """The JSON response for this error."""
        resp = jsonify(error=self.code, detail=self.detail)
        resp.status_code = self.status
        resp.headers.update(self.headers)
        return resp


def queue_unavailable(detail: str = "the queue is unavailable; retry later") -> ReceiverError:
    """503 with Retry-After: the push was not stored, the sender must retry."""
    return ReceiverError(503, "queue_unavailable", detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})
