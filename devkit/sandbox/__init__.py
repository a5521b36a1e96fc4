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

from devkit.sandbox.app import create_sandbox_app
from devkit.sandbox.cli import main
from devkit.sandbox.config import SandboxConfig
from devkit.sandbox.faults import Faults, apply_fault_instructions
from devkit.sandbox.server import SandboxServer
from devkit.sandbox.state import SandboxState

__all__ = [
    "Faults",
    "SandboxConfig",
    "SandboxServer",
    "SandboxState",
    "apply_fault_instructions",
    "create_sandbox_app",
    "main",
]
