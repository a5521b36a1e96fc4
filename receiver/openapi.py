"""``GET /openapi.json``: the receiver's OpenAPI 3 document, built from this app's limits.

The document lives here, next to the routes it describes, and the test suite checks it both
ways: every route of the app is in it and every path in it is a route, and generated requests
get answers that conform to it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from flask import Blueprint, Response, current_app

from receiver.body import MAX_DEPTH, MAX_MEMBERS, MAX_NUMBER_CHARS
from receiver.state import receiver_state
from shared.settings import Settings

bp = Blueprint("openapi", __name__)

OPENAPI_VERSION = "3.0.3"

_JSON = "application/json"


@bp.get("/openapi.json")
def openapi_json() -> Response:
    """The OpenAPI document; no auth, since it holds no secret."""
    return Response(_document_text(receiver_state(current_app).settings), mimetype=_JSON)


@lru_cache(maxsize=8)
def _document_text(settings: Settings) -> str:
    # Settings are frozen, so the text is built once per app, not once per request.
    return json.dumps(document(settings), ensure_ascii=False)


def document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3 document for a receiver running with ``settings``."""
    max_pushes = settings.receiver_max_pushes
    max_bytes = settings.receiver_max_bytes
    push = {
        "type": "object",
        "description": (
            "One push, as RainFocus sends it. The receiver checks only that it is a "
            "JSON object; the worker validates it and dead-letters it, with the reason, if invalid."
        ),
        "additionalProperties": True,
        "example": {
            "transmissionId": "1680309557133001YHhz",
            "eventType": "SessionScheduled",
            "timestamp": "2023-04-01T00:41:57.000Z",
            "attendee": {"email": "user@company.com"},
            "session": {"code": "GS3", "title": "Inspiration Keynote", "length": 90},
        },
    }
    limits = (
        f"The body is JSON in UTF-8, at most {max_bytes} bytes (also once decompressed), with no byte "
        f"order mark, no duplicate keys, no NaN or Infinity, no number literal over {MAX_NUMBER_CHARS} "
        f"characters or out of range, no lone UTF-16 surrogate escape, nested at most {MAX_DEPTH} "
        f"levels, and no array or object of more than {MAX_MEMBERS} members. It may be sent with "
        "`Content-Encoding: gzip` (other codings get a 415) and with `Transfer-Encoding: chunked`."
    )
    return {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "rainbridge receiver",
            "version": "1",
            "description": (
                "Receives RainFocus pushes and queues them for Adobe Experience Platform. A 2xx means "
                "the push is stored; a 503 means it is not and the sender should retry after "
                '`Retry-After` seconds. Errors are JSON `{"error": <code>, "detail": <text>}`.'
            ),
        },
        "paths": {
            "/v1/pushes": {"post": _pushes_operation(push, max_pushes, limits)},
            "/collection/{inletId}": {"post": _collection_single(push, limits)},
            "/collection/batch/{inletId}": {"post": _collection_batch(max_pushes, limits)},
            "/healthz": {"get": _health("healthz", "Liveness: the process answers.", "ok", ready=False)},
            "/readyz": {"get": _health("readyz", "Readiness: Redis answers too.", "ready", ready=True)},
            "/metrics": {
                "get": {
                    "operationId": "metrics",
                    "summary": "Prometheus metrics of the whole fleet, workers included, and queue depths.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "Prometheus text exposition format 0.0.4.",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {
                    "operationId": "openapi",
                    "summary": "This document.",
                    "security": [],
                    "responses": {
                        "200": {
                            "description": "The OpenAPI document.",
                            "content": {_JSON: {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {
                "bearerAuth": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "A token from RECEIVER_TOKENS (several may be valid, for rotation).",
                },
                "basicAuth": {
                    "type": "http",
                    "scheme": "basic",
                    "description": "Any user name; the password is a token from RECEIVER_TOKENS.",
                },
            },
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error", "detail"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "string",
                            "description": "Machine-readable code.",
                            "example": "invalid_json",
                        },
                        "detail": {"type": "string", "description": "What is wrong, for a person."},
                    },
                },
            },
            "responses": {
                "BadRequest": _error(
                    "`invalid_json` (not JSON, or over a JSON limit), `not_a_push` (JSON, but not "
                    "pushes), `bad_request` (the body could not be read: broken chunked framing, or "
                    "the client went away) or, on the AEP-compatible door, `invalid_flow_id`. "
                    "Nothing was stored."
                ),
                "Unauthorized": _error(
                    "`unauthorized`: no valid token, or (when signing is on) no fresh valid signature. "
                    "The answer does not say which.",
                    {
                        "WWW-Authenticate": {
                            "schema": {"type": "string"},
                            "description": "The scheme to use.",
                        }
                    },
                ),
                "NotFound": _error("`not_found`: no such inlet."),
                "TooLarge": _error(
                    f"`too_large`: the body is over {max_bytes} bytes, or is once decompressed."
                ),
                "UnsupportedMediaType": _error(
                    "`unsupported_media_type`: the body is not declared JSON, or is encoded other than gzip.",
                    {
                        "Accept-Encoding": {
                            "schema": {"type": "string"},
                            "description": "Set when the content coding was the problem.",
                        }
                    },
                ),
                "QueueUnavailable": _error(
                    "`queue_unavailable`: Redis cannot take the push now. Nothing was stored; retry.",
                    {
                        "Retry-After": {
                            "schema": {"type": "string"},
                            "required": True,
                            "description": "Seconds to wait before retrying.",
                        }
                    },
                ),
            },
        },
    }


def _pushes_operation(push: dict[str, Any], max_pushes: int, limits: str) -> dict[str, Any]:
    return {
        "operationId": "postPushes",
        "summary": "Queue one push or an array of pushes.",
        "description": (
            "The generic webhook door. All or nothing: a 202 means every push of the request is "
            "stored, any error means none is. " + limits + " When signing is on "
            "(RECEIVER_SIGNING_SECRET), the signature is over the body as sent (compressed, if it "
            "is), and a timestamp more than 300 s from the receiver's clock is refused."
        ),
        "security": [{"bearerAuth": []}, {"basicAuth": []}],
        "parameters": [
            {
                "name": "X-Rainbridge-Timestamp",
                "in": "header",
                "required": False,
                # No pattern: with signing off the header is ignored, whatever it holds.
                "description": "Unix seconds, e.g. `1680309717`; required when signing is on.",
                "schema": {"type": "string"},
            },
            {
                "name": "X-Rainbridge-Signature",
                "in": "header",
                "required": False,
                "description": (
                    "`sha256=` and the lower-case hex HMAC-SHA256, keyed with the signing secret, of "
                    "`<timestamp>.<raw body>`; required when signing is on."
                ),
                "schema": {"type": "string"},
            },
        ],
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "oneOf": [
                            push,
                            {"type": "array", "items": push, "minItems": 1, "maxItems": max_pushes},
                        ]
                    }
                }
            },
        },
        "responses": {
            "202": {
                "description": "Stored: every push of the request is in the queue.",
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["accepted", "receipt"],
                            "additionalProperties": False,
                            "properties": {
                                "accepted": {"type": "integer", "minimum": 1, "maximum": max_pushes},
                                "receipt": {
                                    "type": "string",
                                    "description": "Id of this request in the receiver's logs.",
                                },
                            },
                        }
                    }
                },
            },
            "400": {"$ref": "#/components/responses/BadRequest"},
            "401": {"$ref": "#/components/responses/Unauthorized"},
            "413": {"$ref": "#/components/responses/TooLarge"},
            "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
            "503": {"$ref": "#/components/responses/QueueUnavailable"},
        },
    }


def _collection_parameters() -> list[dict[str, Any]]:
    flow = "The AEP dataflow id; required, and checked, when RECEIVER_FLOW_ID is set."
    return [
        {
            "name": "inletId",
            "in": "path",
            "required": True,
            "description": "The inlet id (RECEIVER_INLET_ID). It is the credential: keep it secret.",
            "schema": {"type": "string"},
        },
        {
            "name": "x-adobe-flow-id",
            "in": "header",
            "required": False,
            "description": flow,
            "schema": {"type": "string"},
        },
        {
            "name": "x-adobe-flow-id",
            "in": "query",
            "required": False,
            "description": flow,
            "schema": {"type": "string"},
        },
    ]


def _collection_errors() -> dict[str, Any]:
    return {
        "400": {"$ref": "#/components/responses/BadRequest"},
        "404": {"$ref": "#/components/responses/NotFound"},
        "413": {"$ref": "#/components/responses/TooLarge"},
        "415": {"$ref": "#/components/responses/UnsupportedMediaType"},
        "503": {"$ref": "#/components/responses/QueueUnavailable"},
    }


def _collection_single(push: dict[str, Any], limits: str) -> dict[str, Any]:
    return {
        "operationId": "postCollection",
        "summary": "Queue one push, answering like AEP's streaming inlet.",
        "description": (
            "The AEP-compatible door: RainFocus's Adobe integration posts here what it would post to "
            "AEP. An Authorization header is ignored (it carries an Adobe token). " + limits
        ),
        "security": [],
        "parameters": _collection_parameters(),
        "requestBody": {"required": True, "content": {_JSON: {"schema": push}}},
        "responses": {
            "200": {
                "description": "Stored.",
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["inletId", "xactionId", "receivedTimeMs"],
                            "properties": {
                                "inletId": {"type": "string"},
                                "xactionId": {"type": "string"},
                                "receivedTimeMs": {"type": "integer"},
                            },
                        }
                    }
                },
            },
            **_collection_errors(),
        },
    }


def _collection_batch(max_pushes: int, limits: str) -> dict[str, Any]:
    return {
        "operationId": "postCollectionBatch",
        "summary": "Queue a batch of pushes, answering like AEP's batch inlet.",
        "description": (
            "The AEP-compatible batch door. A message that is not a JSON object is refused on its "
            "own (a `statusCode` 400 in its response); the others are stored. " + limits
        ),
        "security": [],
        "parameters": _collection_parameters(),
        "requestBody": {
            "required": True,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["messages"],
                        "properties": {
                            "messages": {"type": "array", "items": {}, "minItems": 1, "maxItems": max_pushes}
                        },
                    }
                }
            },
        },
        "responses": {
            "207": {
                "description": "One response per message, in order: stored (`xactionId`) or refused.",
                "content": {
                    _JSON: {
                        "schema": {
                            "type": "object",
                            "required": ["inletId", "batchId", "receivedTimeMs", "responses"],
                            "properties": {
                                "inletId": {"type": "string"},
                                "batchId": {"type": "string"},
                                "receivedTimeMs": {"type": "integer"},
                                "responses": {
                                    "type": "array",
                                    "items": {
                                        "oneOf": [
                                            {
                                                "type": "object",
                                                "required": ["xactionId"],
                                                "additionalProperties": False,
                                                "properties": {"xactionId": {"type": "string"}},
                                            },
                                            {
                                                "type": "object",
                                                "required": ["statusCode", "message"],
                                                "additionalProperties": False,
                                                "properties": {
                                                    "statusCode": {"type": "integer"},
                                                    "message": {"type": "string"},
                                                },
                                            },
                                        ]
                                    },
                                },
                            },
                        }
                    }
                },
            },
            **_collection_errors(),
        },
    }


def _health(operation_id: str, summary: str, status: str, *, ready: bool) -> dict[str, Any]:
    responses: dict[str, Any] = {
        "200": {
            "description": summary,
            "content": {
                _JSON: {
                    "schema": {
                        "type": "object",
                        "required": ["status"],
                        "properties": {"status": {"type": "string", "enum": [status]}},
                    }
                }
            },
        }
    }
    if ready:
        responses["503"] = {"$ref": "#/components/responses/QueueUnavailable"}
    return {"operationId": operation_id, "summary": summary, "security": [], "responses": responses}


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "content": {_JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if headers:
        response["headers"] = headers
    return response
