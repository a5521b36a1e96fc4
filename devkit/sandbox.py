"""Local stand-in for Adobe IMS and the AEP streaming-ingestion (DCS) collection endpoints.

It is the sink for local runs and for the test suite. It follows Adobe's documented behaviour:

* ``POST /ims/token/v3`` — OAuth server-to-server token. Parameters (``client_id``, ``client_secret``,
  ``grant_type=client_credentials``, ``scope``) may come as form fields or query parameters. 200
  ``{"access_token", "token_type": "bearer", "expires_in": <seconds>}``; unknown client id 400 and
  wrong secret 401 ``{"error": "invalid_client", ...}``; other grant types 400 ``unsupported_grant_type``;
  missing parameters 400 ``invalid_request`` / ``invalid_scope``.
* ``POST /collection/<inlet>`` — one message. 200 ``{"inletId", "xactionId", "receivedTimeMs",
  "syncValidation": {"skipped": true}}``; an invalid message fails the whole request (400).
* ``POST /collection/batch/<inlet>`` — ``{"messages": [...]}``. 207 ``{"inletId", "batchId",
  "receivedTimeMs", "responses": [...]}``, one entry per message in order: ``{"xactionId"}`` when
  accepted, ``{"statusCode": 400, "message"}`` when rejected.
* Whole-request failures: unknown inlet 404, body over 1,000,000 bytes 413, bad JSON or content type
  400 (DCS "problem" shape ``{"type", "status", "title", "report": {"message"}}``). On an authenticated
  inlet: missing, unknown, expired or revoked bearer token 401 ``{"error_code": "401013", ...}``;
  missing ``x-gw-ims-org-id`` 400 ``{"error_code": "400003", ...}``; another org 403
  ``{"error_code": "403025", "message": "Profile is not valid"}``.

A message with ``header``/``body`` is an XDM envelope and is validated (org, schemaRef, datasetId,
``_id``, ``timestamp`` with a zone and not in the future, ``eventType``). Any other JSON object is a raw
push for an AEP Data Prep flow, accepted only when the request carries ``x-adobe-flow-id`` (header or
query parameter).

Inspection and control, JSON unless noted (HTTP Basic when ``username``/``password`` are set):

* ``GET /sandbox/events?since=<seq>&limit=<n>`` / ``GET /sandbox/requests?since=&limit=`` →
  ``{"count": <total>, "events"|"requests": [...]}`` (records with ``seq`` > ``since``, oldest first).
* ``GET /sandbox/stats``, ``POST /sandbox/reset``, ``GET|POST|DELETE /sandbox/faults``.
* ``GET /`` and ``GET /sandbox/`` — HTML page of the newest events, refreshing every 2 s.

Fault instructions (``POST /sandbox/faults`` merges them into the current ones; ``null`` clears one)::

    {"fail_next": {"count": 2, "status": 503, "retry_after": "5", "body": {...}},
     "reject_ids": ["<_id or transmissionId>"], "reject_status": 400,
     "reject_message": "...", "reject_mode": "message" | "request",
     "slow_ms": 250, "down_for_ms": 3000, "expire_tokens": true, "token_ttl": 60,
     "ims_fail_next": {"count": 1, "status": 500}}

State lives in a :class:`SandboxState` attached to the Flask app, so it survives a server restart:
``server.stop(); server.start()`` (or ``server.restart()``) rebinds the same port, and
``SandboxServer(port=old.port, app=old.app)`` serves the same state from a new server object.
"""

from __future__ import annotations

import argparse
import dataclasses
import hmac
import html
import ipaddress
import itertools
import json
import os
import secrets
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import IO, Any

from flask import Flask, Response, request
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

MAX_REQUEST_BYTES = 1_000_000
# AEP Profile drops ExperienceEvents above this size; the data lake still takes them.
PROFILE_MAX_EVENT_BYTES = 10 * 1024
XDM_CONTENT_TYPE_PREFIX = "application/vnd.adobe.xed-full+json;version="
# Timestamps are truncated to milliseconds by senders; allow that much rounding, nothing more.
FUTURE_TOLERANCE_SECONDS = 1.0
DEFAULT_PAGE_LIMIT = 1000
PAGE_EVENTS = 200
STATE_KEY = "aep_sandbox"

_PROBLEM_TYPE = "http://ns.adobe.com/adobecloud/problem/data-collection-service/inlet"
_UNAUTHORIZED = {"error_code": "401013", "message": "Oauth token is not valid"}
_FORBIDDEN = {"error_code": "403025", "message": "Profile is not valid"}
_MISSING_ORG = {"error_code": "400003", "message": "Missing header"}
_UNAVAILABLE = {"message": "Service Unavailable"}
_DEFAULT_REJECT_MESSAGE = "Message rejected by the sandbox (fault instruction reject_ids)"


@dataclass
class SandboxConfig:
    """Identity of the fake Adobe org, its credentials and its one inlet."""

    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"  # noqa: S105 - a published sandbox credential, not a secret
    inlet_id: str = "sandbox-inlet"
    org_id: str = "SANDBOX0000000000000000@AdobeOrg"
    authenticated: bool = True
    token_ttl: int = 86399
    store_bodies: bool = True
    username: str | None = None
    password: str | None = None

    def __post_init__(self) -> None:
        if self.token_ttl < 1:
            raise ValueError("token_ttl must be at least 1 second")
        if (self.username is None) != (self.password is None):
            raise ValueError("username and password must be given together")


@dataclass
class Faults:
    """Current fault instructions; ``down_until`` is on the ``time.monotonic`` clock."""

    fail_next: dict[str, Any] | None = None
    ims_fail_next: dict[str, Any] | None = None
    reject_ids: frozenset[str] = frozenset()
    reject_status: int = 400
    reject_message: str = _DEFAULT_REJECT_MESSAGE
    reject_mode: str = "message"
    slow_ms: int = 0
    down_until: float = 0.0
    token_ttl: int | None = None

    def describe(self, now: float) -> dict[str, Any]:
        """Return the instructions in force, in the shape ``POST /sandbox/faults`` accepts."""
        out: dict[str, Any] = {}
        if self.fail_next:
            out["fail_next"] = dict(self.fail_next)
        if self.reject_ids or self.reject_status != 400 or self.reject_mode != "message":
            out.update(
                reject_ids=sorted(self.reject_ids),
                reject_status=self.reject_status,
                reject_message=self.reject_message,
                reject_mode=self.reject_mode,
            )
        if self.slow_ms:
            out["slow_ms"] = self.slow_ms
        if self.down_until > now:
            out["down_for_ms"] = int((self.down_until - now) * 1000)
        if self.token_ttl is not None:
            out["token_ttl"] = self.token_ttl
        if self.ims_fail_next:
            out["ims_fail_next"] = dict(self.ims_fail_next)
        return out


class SandboxState:
    """Everything the sandbox remembers; guard every access with ``lock``."""

    def __init__(self, config: SandboxConfig) -> None:
        self.config = config
        self.lock = threading.Lock()
        # Never reset, so transaction ids stay unique across resets and restarts.
        self._transactions = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.requests_by_status: Counter[str] = Counter()
        self.tokens: dict[str, float] = {}
        self.tokens_minted = 0
        self.faults = Faults()

    def reset(self) -> None:
        """Forget events, requests, tokens, faults and counters (caller holds ``lock``)."""
        self.events = []
        self.requests = []
        self.requests_by_status = Counter()
        self.tokens = {}
        self.tokens_minted = 0
        self.faults = Faults()

    def next_transaction(self) -> int:
        """Return a number for the next request's xactionId/batchId."""
        return next(self._transactions)

    def stats(self, now: float) -> dict[str, Any]:
        """Return counters and current faults (caller holds ``lock``)."""
        return {
            "events": len(self.events),
            "requests": len(self.requests),
            "requests_by_status": dict(self.requests_by_status),
            "tokens_minted": self.tokens_minted,
            "faults": self.faults.describe(now),
        }


class _BadInstruction(ValueError):
    """A fault instruction that cannot be applied."""


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _json(payload: Any, status: int, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(payload), status=status, headers=headers, mimetype="application/json")


def _problem(status: int, title: str, message: str) -> dict[str, Any]:
    return {"type": _PROBLEM_TYPE, "status": status, "title": title, "report": {"message": message}}


def _error_body(status: int, message: str | None = None) -> dict[str, Any]:
    """Body Adobe's gateway or DCS would send with a whole-request failure of this status."""
    if status == 401:
        return dict(_UNAUTHORIZED)
    if status == 403:
        return dict(_FORBIDDEN)
    if status == 429 or status >= 500:
        return {"message": message or _phrase(status)}
    return _problem(status, _phrase(status), message or _phrase(status))


def _int_field(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadInstruction(f"{name} must be an integer from {low} to {high}")
    return value


def _failure_spec(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _BadInstruction(f"{name} must be an object")
    unknown = set(value) - {"count", "status", "retry_after", "body"}
    if unknown:
        raise _BadInstruction(f"{name} has unknown keys: {sorted(unknown)}")
    if "status" not in value:
        raise _BadInstruction(f"{name}.status is required")
    spec: dict[str, Any] = {
        "count": _int_field(value.get("count", 1), f"{name}.count", 0, 1_000_000),
        "status": _int_field(value["status"], f"{name}.status", 200, 599),
    }
    retry_after = value.get("retry_after")
    if retry_after is not None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, (str, int)) or retry_after == "":
            raise _BadInstruction(f"{name}.retry_after must be seconds or an HTTP-date string")
        spec["retry_after"] = str(retry_after)
    if "body" in value:
        spec["body"] = value["body"]
    return spec if spec["count"] else None


def apply_fault_instructions(state: SandboxState, data: Any, now: float) -> None:
    """Merge instructions into ``state.faults`` atomically; raise ValueError if any is invalid."""
    if not isinstance(data, dict):
        raise _BadInstruction("fault instructions must be a JSON object")
    known = {
        "fail_next",
        "ims_fail_next",
        "reject_ids",
        "reject_status",
        "reject_message",
        "reject_mode",
        "slow_ms",
        "down_for_ms",
        "expire_tokens",
        "token_ttl",
    }
    unknown = set(data) - known
    if unknown:
        raise _BadInstruction(f"unknown fault instructions: {sorted(unknown)}")
    new = dataclasses.replace(state.faults)
    if "fail_next" in data:
        new.fail_next = _failure_spec(data["fail_next"], "fail_next")
    if "ims_fail_next" in data:
        new.ims_fail_next = _failure_spec(data["ims_fail_next"], "ims_fail_next")
    if "reject_ids" in data:
        ids = data["reject_ids"] or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadInstruction("reject_ids must be a list of strings")
        new.reject_ids = frozenset(ids)
    if "reject_status" in data:
        new.reject_status = _int_field(data["reject_status"] or 400, "reject_status", 400, 599)
    if "reject_message" in data:
        message = data["reject_message"] or _DEFAULT_REJECT_MESSAGE
        if not isinstance(message, str):
            raise _BadInstruction("reject_message must be a string")
        new.reject_message = message
    if "reject_mode" in data:
        mode = data["reject_mode"] or "message"
        if mode not in ("message", "request"):
            raise _BadInstruction('reject_mode must be "message" or "request"')
        new.reject_mode = mode
    if "slow_ms" in data:
        new.slow_ms = _int_field(data["slow_ms"] or 0, "slow_ms", 0, 600_000)
    if "down_for_ms" in data:
        down_ms = _int_field(data["down_for_ms"] or 0, "down_for_ms", 0, 86_400_000)
        new.down_until = now + down_ms / 1000 if down_ms else 0.0
    if "token_ttl" in data:
        ttl = data["token_ttl"]
        new.token_ttl = None if ttl is None else _int_field(ttl, "token_ttl", 1, 10 * 86400)
    expire = data.get("expire_tokens", False)
    if not isinstance(expire, bool):
        raise _BadInstruction("expire_tokens must be true or false")
    state.faults = new
    if expire:
        state.tokens.clear()


def _take_failure(faults: Faults, attr: str) -> dict[str, Any] | None:
    """Consume one use of a ``fail_next``-style instruction (caller holds the lock)."""
    spec: dict[str, Any] | None = getattr(faults, attr)
    if not spec:
        return None
    remaining = spec["count"] - 1
    setattr(faults, attr, {**spec, "count": remaining} if remaining > 0 else None)
    return spec


def _parse_timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _tenant_transmission_id(entity: dict[str, Any]) -> str | None:
    for key, value in entity.items():
        if key.startswith("_") and isinstance(value, dict) and isinstance(value.get("transmissionId"), str):
            return str(value["transmissionId"])
    return None


def _is_envelope(message: dict[str, Any]) -> bool:
    # A message with only one of the two halves was meant as XDM; Adobe answers "unknown xdm format".
    return "header" in message or "body" in message


def _message_ids(message: Any) -> set[str]:
    """Best-effort ids of a message, for ``reject_ids`` matching even when it is invalid."""
    if not isinstance(message, dict):
        return set()
    ids: set[str] = set()
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else None
    if isinstance(entity, dict):
        if isinstance(entity.get("_id"), str):
            ids.add(entity["_id"])
        transmission_id = _tenant_transmission_id(entity)
        if transmission_id:
            ids.add(transmission_id)
    if isinstance(message.get("transmissionId"), str):
        ids.add(message["transmissionId"])
    return ids


def _schema_ref_error(ref: Any, where: str) -> str | None:
    if not isinstance(ref, dict):
        return f"{where} is missing"
    if not isinstance(ref.get("id"), str) or not ref["id"]:
        return f"{where}.id is missing"
    content_type = ref.get("contentType")
    if not isinstance(content_type, str) or not content_type.startswith(XDM_CONTENT_TYPE_PREFIX):
        return f"{where}.contentType must be {XDM_CONTENT_TYPE_PREFIX}<schema version>"
    return None


def _envelope_error(message: dict[str, Any], config: SandboxConfig, now: datetime) -> str | None:
    """Return why an XDM envelope would be rejected by DCS, or None when it is acceptable."""
    header, body = message.get("header"), message.get("body")
    if not isinstance(header, dict) or not isinstance(body, dict):
        return "Message has unknown xdm format: it needs both a header and a body object"
    if header.get("imsOrgId") != config.org_id:
        return "Message has an absent or wrong ims org in the header"
    error = _schema_ref_error(header.get("schemaRef"), "header.schemaRef")
    if error:
        return f"Message has unknown xdm format: {error}"
    if not isinstance(header.get("datasetId"), str) or not header["datasetId"]:
        return "Message is invalid: header.datasetId is missing"
    if "flowId" in header and not isinstance(header["flowId"], str):
        return "Message is invalid: header.flowId must be a string"
    source = header.get("source")
    if source is not None and not (isinstance(source, dict) and isinstance(source.get("name"), str)):
        return 'Message is invalid: header.source must be {"name": <string>}'
    meta = body.get("xdmMeta")
    if not isinstance(meta, dict) or meta.get("schemaRef") != header["schemaRef"]:
        return "Message has unknown xdm format: body.xdmMeta.schemaRef must equal header.schemaRef"
    entity = body.get("xdmEntity")
    if not isinstance(entity, dict):
        return "Message has unknown xdm format: body.xdmEntity is missing"
    if not isinstance(entity.get("_id"), str) or not entity["_id"]:
        return "Message is invalid: xdmEntity._id must be a non-empty string"
    timestamp = _parse_timestamp(entity.get("timestamp"))
    if timestamp is None:
        return "Message is invalid: xdmEntity.timestamp must be an ISO-8601 date-time with a time zone"
    if (timestamp - now).total_seconds() > FUTURE_TOLERANCE_SECONDS:
        return "Message is invalid: xdmEntity.timestamp is in the future"
    if not isinstance(entity.get("eventType"), str) or not entity["eventType"]:
        return "Message is invalid: xdmEntity.eventType must be a non-empty string"
    return None


def _inspect(
    message: Any, flow_id: str | None, config: SandboxConfig, now: datetime
) -> tuple[dict[str, Any] | None, str | None]:
    """Return (event fields, None) for an acceptable message, or (None, reason) for a rejected one."""
    if not isinstance(message, dict):
        return None, "Message has unknown xdm format: a message must be a JSON object"
    if _is_envelope(message):
        error = _envelope_error(message, config, now)
        if error:
            return None, error
        entity = message["body"]["xdmEntity"]
        size = len(json.dumps(entity, separators=(",", ":")).encode())
        return {
            "kind": "xdm",
            "id": entity["_id"],
            "transmissionId": _tenant_transmission_id(entity),
            "eventType": entity["eventType"],
            "oversize": size > PROFILE_MAX_EVENT_BYTES,
        }, None
    if not flow_id:
        return (
            None,
            "Message has unknown xdm format: a raw message needs the x-adobe-flow-id of a Data Prep flow",
        )
    size = len(json.dumps(message, separators=(",", ":")).encode())
    return {
        "kind": "raw",
        "id": None,
        "transmissionId": message.get("transmissionId"),
        "eventType": message.get("eventType"),
        "oversize": size > PROFILE_MAX_EVENT_BYTES,
    }, None


def _read_limited(stream: IO[bytes], limit: int) -> bytes | None:
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


def _page_args() -> tuple[int, int]:
    try:
        since = max(0, int(request.args.get("since", 0)))
        limit = max(0, int(request.args.get("limit", DEFAULT_PAGE_LIMIT)))
    except ValueError:
        since, limit = 0, DEFAULT_PAGE_LIMIT
    return since, limit


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


# A whole-request answer: status, JSON body, extra headers.
_Reply = tuple[int, Any, dict[str, str] | None]


@dataclass
class _Call:
    """One collection request as it goes through the checks."""

    inlet_id: str
    batch: bool
    received_ms: int
    now: float
    faults: Faults
    down: bool
    failure: dict[str, Any] | None
    size: int = 0
    count: int = 0


class _Handlers:
    """The sandbox's routes; one instance per app, bound to its state."""

    def __init__(self, state: SandboxState) -> None:
        self.state = state
        self.config = state.config

    def require_basic_auth(self) -> Response | None:
        """Guard the page and /sandbox/ routes with HTTP Basic when credentials are configured."""
        path = request.path
        protected = path in {"/", "/sandbox"} or path.startswith("/sandbox/")
        username, password = self.config.username, self.config.password
        if not protected or username is None or password is None:
            return None
        auth = request.authorization
        # Compare both fields every time so a wrong username takes as long as a wrong password.
        user_ok = _same(auth.username or "", username) if auth else False
        password_ok = _same(auth.password or "", password) if auth else False
        if auth is not None and auth.type == "basic" and user_ok and password_ok:
            return None
        return Response("Authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="AEP sandbox"'})

    def ims_token(self) -> Response:
        """``POST /ims/token/v3``: mint an opaque bearer token for the configured client."""
        state, config = self.state, self.config
        now = time.monotonic()
        with state.lock:
            down = state.faults.down_until > now
            failure = None if down else _take_failure(state.faults, "ims_fail_next")
        if down:
            return _json(_UNAVAILABLE, 503)
        if failure:
            body = {"error": "server_error", "error_description": _phrase(failure["status"])}
            headers = {"Retry-After": failure["retry_after"]} if "retry_after" in failure else None
            return _json(failure.get("body", body), failure["status"], headers)
        params = {**request.args.to_dict(), **request.form.to_dict()}
        grant_type = params.get("grant_type")
        if not grant_type:
            return _json(
                {"error": "invalid_request", "error_description": "missing grant_type parameter"}, 400
            )
        if grant_type != "client_credentials":
            description = f"grant_type {grant_type} is not supported"
            return _json({"error": "unsupported_grant_type", "error_description": description}, 400)
        if not _same(params.get("client_id", ""), config.client_id):
            return _json({"error": "invalid_client", "error_description": "invalid client_id parameter"}, 400)
        if not _same(params.get("client_secret", ""), config.client_secret):
            description = "invalid client_secret parameter"
            return _json({"error": "invalid_client", "error_description": description}, 401)
        if not params.get("scope"):
            return _json({"error": "invalid_scope", "error_description": "missing scope parameter"}, 400)
        token = secrets.token_urlsafe(32)
        with state.lock:
            ttl = state.faults.token_ttl or config.token_ttl
            # Drop expired tokens here so a long run does not grow the table without bound.
            state.tokens = {t: expiry for t, expiry in state.tokens.items() if expiry > now}
            state.tokens[token] = now + ttl
            state.tokens_minted += 1
        return _json({"access_token": token, "token_type": "bearer", "expires_in": ttl}, 200)

    def collect_single(self, inlet_id: str) -> Response:
        """``POST /collection/<inlet>``: one message, 200 or a whole-request error."""
        return self._collect(inlet_id, batch=False)

    def collect_batch(self, inlet_id: str) -> Response:
        """``POST /collection/batch/<inlet>``: many messages, 207 with one response each."""
        return self._collect(inlet_id, batch=True)

    def _collect(self, inlet_id: str, batch: bool) -> Response:
        now = time.monotonic()
        with self.state.lock:
            faults = dataclasses.replace(self.state.faults)
            down = faults.down_until > now
            failure = None if down else _take_failure(self.state.faults, "fail_next")
        call = _Call(inlet_id, batch, int(time.time() * 1000), now, faults, down, failure)
        call.size = request.content_length or 0
        status, body, headers = self._gate(call) or self._ingest(call)
        self._record_request(call, status)
        if faults.slow_ms:
            time.sleep(faults.slow_ms / 1000)
        return _json(body, status, headers)

    def _prefix(self, call: _Call) -> str:
        return f"inletId: [{call.inlet_id}] imsOrgId: [{self.config.org_id}]"

    def _gate(self, call: _Call) -> _Reply | None:
        """Checks made before the body is read: faults, inlet, size, credentials, content type."""
        if call.down:
            return 503, _UNAVAILABLE, None
        if call.failure:
            spec = call.failure
            headers = {"Retry-After": spec["retry_after"]} if "retry_after" in spec else None
            return spec["status"], spec.get("body", _error_body(spec["status"])), headers
        if call.inlet_id != self.config.inlet_id:
            return 404, _problem(404, "Not Found", f"inletId: [{call.inlet_id}] Inlet not found"), None
        if call.size > MAX_REQUEST_BYTES:
            return 413, _problem(413, "Payload Too Large", f"{self._prefix(call)} Request is over 1MB"), None
        if self.config.authenticated:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            with self.state.lock:
                expiry = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if expiry is None or expiry <= call.now:
                return 401, dict(_UNAUTHORIZED), None
            org = request.headers.get("x-gw-ims-org-id")
            if not org:
                return 400, dict(_MISSING_ORG), None
            if org != self.config.org_id:
                return 403, dict(_FORBIDDEN), None
        if request.mimetype != "application/json":
            return 400, _problem(400, "BadRequestError", "A valid content-type must be specified"), None
        return None

    def _read_messages(self, call: _Call) -> list[Any] | _Reply:
        """Read and parse the body into its list of messages, or say why it cannot be."""
        prefix = self._prefix(call)
        raw = _read_limited(request.stream, MAX_REQUEST_BYTES)
        if raw is None:
            call.size = max(call.size, MAX_REQUEST_BYTES + 1)
            return 413, _problem(413, "Payload Too Large", f"{prefix} Request is over 1MB"), None
        call.size = len(raw)
        try:
            payload = json.loads(raw)
        except ValueError:
            return 400, _problem(400, "Invalid JSON", f"{prefix} Request body is not valid JSON"), None
        if not call.batch:
            return [payload]
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not messages:
            detail = f'{prefix} Request body must be {{"messages": [...]}} with at least one message'
            return 400, _problem(400, "Invalid Request", detail), None
        return messages

    def _ingest(self, call: _Call) -> _Reply:
        """Judge each message, record the accepted ones and build the AEP response."""
        messages = self._read_messages(call)
        if isinstance(messages, tuple):
            return messages
        call.count = len(messages)
        faults, prefix = call.faults, self._prefix(call)
        rejected = f"{prefix} {faults.reject_message}"
        hits = [bool(faults.reject_ids & _message_ids(m)) for m in messages]
        if faults.reject_mode == "request" and any(hits):
            return faults.reject_status, _error_body(faults.reject_status, rejected), None
        flow_id = request.headers.get("x-adobe-flow-id") or request.args.get("x-adobe-flow-id")
        wall_now = datetime.now(UTC)
        outcomes: list[tuple[dict[str, Any] | None, int, str]] = []
        for message, hit in zip(messages, hits, strict=True):
            if hit:
                outcomes.append((None, faults.reject_status, rejected))
            else:
                fields, error = _inspect(message, flow_id, self.config, wall_now)
                outcomes.append((fields, 400, f"{prefix} {error}"))
        if not call.batch and outcomes[0][0] is None:
            _, status, text = outcomes[0]
            if status == 400:
                return 400, _problem(400, "Invalid XDM Message Format", text), None
            return status, _error_body(status, text), None
        batch_id, responses = self._record_events(call, messages, outcomes)
        if call.batch:
            body = {"inletId": call.inlet_id, "batchId": batch_id, "receivedTimeMs": call.received_ms}
            return 207, {**body, "responses": responses}, None
        body = {"inletId": call.inlet_id, "xactionId": batch_id, "receivedTimeMs": call.received_ms}
        return 200, {**body, "syncValidation": {"skipped": True}}, None

    def _record_events(
        self, call: _Call, messages: list[Any], outcomes: list[tuple[dict[str, Any] | None, int, str]]
    ) -> tuple[str, list[dict[str, Any]]]:
        state = self.state
        batch_id = f"{call.received_ms}:{os.getpid() % 10000}:{state.next_transaction()}"
        responses: list[dict[str, Any]] = []
        with state.lock:
            for index, (message, (fields, status, text)) in enumerate(zip(messages, outcomes, strict=True)):
                if fields is None:
                    responses.append({"statusCode": status, "message": text})
                    continue
                xaction_id = f"{batch_id}:{index}" if call.batch else batch_id
                event = {"seq": len(state.events) + 1, "xactionId": xaction_id}
                event.update(receivedTimeMs=call.received_ms, inletId=call.inlet_id, **fields)
                if self.config.store_bodies:
                    event["message"] = message
                state.events.append(event)
                responses.append({"xactionId": xaction_id})
        return batch_id, responses

    def _record_request(self, call: _Call, status: int) -> None:
        record = {
            "timeMs": call.received_ms,
            "path": request.path,
            "query": request.query_string.decode("latin-1"),
            "status": status,
            "messages": call.count,
            "bytes": call.size,
            "headers": {name.lower(): value for name, value in request.headers.items()},
        }
        with self.state.lock:
            self.state.requests.append({"seq": len(self.state.requests) + 1, **record})
            self.state.requests_by_status[str(status)] += 1

    def list_events(self) -> Response:
        """``GET /sandbox/events?since=&limit=``."""
        since, limit = _page_args()
        with self.state.lock:
            # seq n lives at index n - 1, so the page is a plain slice.
            page = self.state.events[since : since + limit]
            total = len(self.state.events)
        return _json({"count": total, "events": page}, 200)

    def list_requests(self) -> Response:
        """``GET /sandbox/requests?since=&limit=``."""
        since, limit = _page_args()
        with self.state.lock:
            page = self.state.requests[since : since + limit]
            total = len(self.state.requests)
        return _json({"count": total, "requests": page}, 200)

    def stats(self) -> Response:
        """``GET /sandbox/stats``."""
        with self.state.lock:
            return _json(self.state.stats(time.monotonic()), 200)

    def reset(self) -> Response:
        """``POST /sandbox/reset``."""
        with self.state.lock:
            self.state.reset()
            return _json(self.state.stats(time.monotonic()), 200)

    def faults(self) -> Response:
        """``GET|POST|DELETE /sandbox/faults``."""
        now = time.monotonic()
        data = request.get_json(silent=True) if request.method == "POST" else None
        with self.state.lock:
            if request.method == "POST":
                try:
                    apply_fault_instructions(self.state, data, now)
                except ValueError as exc:
                    return _json({"error": "invalid_fault", "detail": str(exc)}, 400)
            elif request.method == "DELETE":
                self.state.faults = Faults()
            return _json(self.state.faults.describe(now), 200)

    def page(self) -> Response:
        """``GET /`` and ``GET /sandbox/``: the HTML overview."""
        with self.state.lock:
            recent = self.state.events[-PAGE_EVENTS:][::-1]
            counters = self.state.stats(time.monotonic())
        return Response(render_page(self.config, counters, recent), 200, mimetype="text/html")


def create_sandbox_app(config: SandboxConfig) -> Flask:
    """Build the Flask app; its :class:`SandboxState` is ``app.extensions["aep_sandbox"]``."""
    app = Flask(__name__)
    state = SandboxState(config)
    app.extensions[STATE_KEY] = state
    handlers = _Handlers(state)
    app.before_request(handlers.require_basic_auth)
    app.add_url_rule("/ims/token/v3", view_func=handlers.ims_token, methods=["POST"])
    app.add_url_rule("/collection/<inlet_id>", view_func=handlers.collect_single, methods=["POST"])
    app.add_url_rule("/collection/batch/<inlet_id>", view_func=handlers.collect_batch, methods=["POST"])
    app.add_url_rule("/sandbox/events", view_func=handlers.list_events)
    app.add_url_rule("/sandbox/requests", view_func=handlers.list_requests)
    app.add_url_rule("/sandbox/stats", view_func=handlers.stats)
    app.add_url_rule("/sandbox/reset", view_func=handlers.reset, methods=["POST"])
    app.add_url_rule("/sandbox/faults", view_func=handlers.faults, methods=["GET", "POST", "DELETE"])
    app.add_url_rule("/", view_func=handlers.page, endpoint="index")
    app.add_url_rule("/sandbox/", view_func=handlers.page, endpoint="sandbox_page")
    return app


def _identity(message: Any) -> str:
    """First identity of an XDM event, or the attendee email of a raw push."""
    if not isinstance(message, dict):
        return ""
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else None
    if isinstance(entity, dict):
        identity_map = entity.get("identityMap")
        if isinstance(identity_map, dict):
            for namespace, entries in identity_map.items():
                if isinstance(entries, list) and entries and isinstance(entries[0], dict):
                    return f"{namespace}: {entries[0].get('id', '')}"
        return ""
    attendee = message.get("attendee")
    email = attendee.get("email") if isinstance(attendee, dict) else message.get("attendee.email")
    return str(email or "")


def _event_timestamp(message: Any) -> str:
    if not isinstance(message, dict):
        return ""
    body = message.get("body")
    entity = body.get("xdmEntity") if isinstance(body, dict) else message
    return str(entity.get("timestamp", "")) if isinstance(entity, dict) else ""


_PAGE_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5rem;color:#1d1d1f;background:#fafafa}
h1{font-size:1.3rem;margin:0 0 .8rem}
.counters{display:flex;gap:1rem;flex-wrap:wrap;margin-bottom:1rem}
.counter{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.5rem .9rem}
.counter b{display:block;font-size:1.2rem}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{border-bottom:1px solid #eee;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f0f0f0;position:sticky;top:0}
code,pre{font:12px ui-monospace,monospace}
pre{white-space:pre-wrap;max-width:70rem;margin:.3rem 0}
.warn{color:#b00020}
"""


def render_page(config: SandboxConfig, counters: dict[str, Any], events: list[dict[str, Any]]) -> str:
    """Render the HTML overview; every value from a request is escaped."""
    esc = html.escape
    boxes = "".join(
        f'<div class="counter">{esc(label)}<b>{esc(str(value))}</b></div>'
        for label, value in (
            ("events", counters["events"]),
            ("requests", counters["requests"]),
            ("tokens minted", counters["tokens_minted"]),
            ("by status", json.dumps(counters["requests_by_status"], sort_keys=True)),
        )
    )
    faults = json.dumps(counters["faults"], sort_keys=True) if counters["faults"] else "none"
    rows = []
    for event in events:
        message = event.get("message")
        received = datetime.fromtimestamp(event["receivedTimeMs"] / 1000, UTC).strftime("%H:%M:%S.%f")
        short_id = (event.get("id") or "")[:12]
        oversize = ' <span class="warn">(over 10 KB)</span>' if event.get("oversize") else ""
        details = (
            f"<details><summary>message</summary><pre>{esc(json.dumps(message, indent=2))}</pre></details>"
            if message is not None
            else "<em>not stored</em>"
        )
        cells = [
            esc(received[:-3]),
            esc(str(event.get("eventType") or "")) + oversize,
            esc(_event_timestamp(message)),
            f"<code>{esc(short_id)}</code>",
            f"<code>{esc(str(event.get('transmissionId') or ''))}</code>",
            esc(_identity(message)),
            details,
        ]
        rows.append("<tr>" + "".join(f"<td>{cell}</td>" for cell in cells) + "</tr>")
    header = "".join(
        f"<th>{name}</th>"
        for name in ("received (UTC)", "eventType", "timestamp", "_id", "transmissionId", "identity", "")
    )
    table = f"<table><tr>{header}</tr>{''.join(rows)}</table>" if rows else "<p>No events received yet.</p>"
    return (
        '<!doctype html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
        f"<title>AEP sandbox</title><style>{_PAGE_STYLE}</style></head><body>"
        f"<h1>AEP sandbox · inlet <code>{esc(config.inlet_id)}</code></h1>"
        f'<div class="counters">{boxes}</div><p>Faults: <code>{esc(faults)}</code></p>'
        f"<p>Newest {PAGE_EVENTS} events first.</p>{table}</body></html>"
    )


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log every request (benchmarks send thousands)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """Serve a sandbox app from a background thread on ``host:port`` (port 0 picks a free one).

    The state belongs to the app, not to the server: ``stop()`` then ``start()`` (or ``restart()``)
    rebinds the same port with the same state, and ``SandboxServer(port=old.port, app=old.app)``
    does the same from a new object. While stopped, connections are refused.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: Flask | None = None,
    ) -> None:
        if config is not None and app is not None:
            raise ValueError("pass a config or an existing app, not both")
        self.app = app if app is not None else create_sandbox_app(config or SandboxConfig())
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> SandboxState:
        """The state shared by every server of this app."""
        state: SandboxState = self.app.extensions[STATE_KEY]
        return state

    @property
    def config(self) -> SandboxConfig:
        """The configuration the app was built with."""
        return self.state.config

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8088``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("sandbox server is already running")
        try:
            server = make_server(self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler)
        except SystemExit as exc:
            # werkzeug exits the process when the port is taken; a library caller wants an exception.
            raise OSError(f"cannot bind {self.host}:{self.port}") from exc
        self.port = server.port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aep-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections and close the listening socket; state is kept."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def restart(self) -> SandboxServer:
        """Stop and start again on the same port with the same state."""
        self.stop()
        return self.start()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def main(argv: list[str] | None = None) -> int:
    """Run the sandbox until interrupted (``rainbridge sandbox``)."""
    defaults = SandboxConfig()
    parser = argparse.ArgumentParser(
        prog="rainbridge sandbox", description="Local stand-in for Adobe IMS + AEP."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8088)
    parser.add_argument("--client-id", default=defaults.client_id)
    parser.add_argument("--client-secret", default=defaults.client_secret)
    parser.add_argument("--inlet-id", default=defaults.inlet_id)
    parser.add_argument("--org-id", default=defaults.org_id)
    parser.add_argument("--token-ttl", type=int, default=defaults.token_ttl, help="token lifetime in seconds")
    parser.add_argument("--no-auth", action="store_true", help="inlet accepts requests without a token")
    parser.add_argument("--no-store-bodies", action="store_true", help="keep only ids (long benchmarks)")
    parser.add_argument("--username", help="HTTP Basic user for the page and /sandbox/ routes")
    parser.add_argument("--password", help="HTTP Basic password for the page and /sandbox/ routes")
    args = parser.parse_args(argv)
    if not _is_loopback(args.host) and not (args.username and args.password):
        print(
            f"sandbox: refusing to listen on {args.host} without --username and --password", file=sys.stderr
        )
        return 2
    try:
        config = SandboxConfig(
            client_id=args.client_id,
            client_secret=args.client_secret,
            inlet_id=args.inlet_id,
            org_id=args.org_id,
            authenticated=not args.no_auth,
            token_ttl=args.token_ttl,
            store_bodies=not args.no_store_bodies,
            username=args.username,
            password=args.password,
        )
    except ValueError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    server = SandboxServer(config, host=args.host, port=args.port)
    try:
        server.start()
    except OSError as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 1
    url = server.url
    collection = f"{url}/collection/{config.inlet_id}"
    print(f"AEP sandbox: collection {collection} · IMS {url}/ims/token/v3 · page {url}/sandbox/", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
