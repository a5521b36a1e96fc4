"""How the sandbox answers: Adobe's error bodies and the small HTTP helpers every route uses."""

from __future__ import annotations

import hmac
import json
from http import HTTPStatus
from typing import IO, Any

from flask import Response, request

from devkit.sandbox.config import DEFAULT_PAGE_LIMIT

_PROBLEM_TYPE = "http://ns.adobe.com/adobecloud/problem/data-collection-service/inlet"
UNAUTHORIZED = {"error_code": "401013", "message": "Oauth token is not valid"}
FORBIDDEN = {"error_code": "403025", "message": "Profile is not valid"}
MISSING_ORG = {"error_code": "400003", "message": "Missing header"}
UNAVAILABLE = {"message": "Service Unavailable"}


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def json_reply(payload: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, mimetype="application/json")


def problem(status: int, title: str, message: str) -> dict[str, Any]:
    return {"type": _PROBLEM_TYPE, "status": status, "title": title, "report": {"message": message}}


def error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Body Adobe's gateway or DCS would send with a whole-request failure of this status."""
    if status == 401:
        return dict(UNAUTHORIZED)
    if status == 403:
        return dict(FORBIDDEN)
    if status == 429 or status >= 500:
        return {"message": message or phrase(status)}
    return problem(status, phrase(status), message or phrase(status))


def read_limited(stream: IO[bytes], limit: int) -> bytes | None:
    """Read the whole body, or return None as soon as it exceeds ``limit`` bytes."""
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = stream.read(65536)
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > limit:
            return None
        chunks.append(chunk)


def page_args() -> tuple[int, int]:
    try:
        since = max(0, int(request.args.get("since", 0)))
        limit = max(0, int(request.args.get("limit", DEFAULT_PAGE_LIMIT)))
    except ValueError:
        since, limit = 0, DEFAULT_PAGE_LIMIT
    return since, limit


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# A whole-request answer: status, JSON body, extra headers.
Reply = tuple[int, Any, dict[str, str] | None]
