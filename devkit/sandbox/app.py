"""The sandbox's Flask app: IMS, the DCS collection routes, and the inspection and control routes."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, request

from devkit.sandbox import ims, platform, xdm
from devkit.sandbox.config import MAX_REQUEST_BYTES, PAGE_EVENTS, STATE_KEY, SandboxConfig
from devkit.sandbox.faults import Faults, apply_fault_instructions, take_failure
from devkit.sandbox.messages import inspect_message, message_ids
from devkit.sandbox.page import render_page
from devkit.sandbox.replies import (
    FORBIDDEN,
    MISSING_ORG,
    UNAUTHORIZED,
    UNAVAILABLE,
    Reply,
    error_body,
    json_reply,
    page_args,
    problem,
    read_limited,
    same_secret,
)
from devkit.sandbox.state import SandboxState


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
        user_ok = same_secret(auth.username or "", username) if auth else False
        password_ok = same_secret(auth.password or "", password) if auth else False
        if auth is not None and auth.type == "basic" and user_ok and password_ok:
            return None
        return Response("Authentication required\n", 401, {"WWW-Authenticate": 'Basic realm="AEP sandbox"'})

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
            failure = None if down else take_failure(self.state.faults, "fail_next")
        call = _Call(inlet_id, batch, int(time.time() * 1000), now, faults, down, failure)
        call.size = request.content_length or 0
        status, body, headers = self._gate(call) or self._ingest(call)
        self._record_request(call, status)
        if faults.slow_ms:
            time.sleep(faults.slow_ms / 1000)
        return json_reply(body, status, headers)

    def _prefix(self, call: _Call) -> str:
        return f"inletId: [{call.inlet_id}] imsOrgId: [{self.config.org_id}]"

    def _gate(self, call: _Call) -> Reply | None:
        """Checks made before the body is read: faults, inlet, size, credentials, content type."""
        if call.down:
            return 503, UNAVAILABLE, None
        if call.failure:
            spec = call.failure
            headers = {"Retry-After": spec["retry_after"]} if "retry_after" in spec else None
            return spec["status"], spec.get("body", error_body(spec["status"])), headers
        with self.state.lock:
            known = call.inlet_id == self.config.inlet_id or call.inlet_id in self.state.registry.inlets()
        if not known:
            return 404, problem(404, "Not Found", f"inletId: [{call.inlet_id}] Inlet not found"), None
        if call.size > MAX_REQUEST_BYTES:
            return 413, problem(413, "Payload Too Large", f"{self._prefix(call)} Request is over 1MB"), None
        if self.config.authenticated:
            scheme, _, token = request.headers.get("Authorization", "").partition(" ")
            with self.state.lock:
                expiry = self.state.tokens.get(token.strip()) if scheme.lower() == "bearer" else None
            if expiry is None or expiry <= call.now:
                return 401, dict(UNAUTHORIZED), None
            org = request.headers.get("x-gw-ims-org-id")
            if not org:
                return 400, dict(MISSING_ORG), None
            if org != self.config.org_id:
                return 403, dict(FORBIDDEN), None
        if request.mimetype != "application/json":
            return 400, problem(400, "BadRequestError", "A valid content-type must be specified"), None
        return None

    def _read_messages(self, call: _Call) -> list[Any] | Reply:
        """Read and parse the body into its list of messages, or say why it cannot be."""
        prefix = self._prefix(call)
        raw = read_limited(request.stream, MAX_REQUEST_BYTES)
        if raw is None:
            call.size = max(call.size, MAX_REQUEST_BYTES + 1)
            return 413, problem(413, "Payload Too Large", f"{prefix} Request is over 1MB"), None
        call.size = len(raw)
        try:
            payload = json.loads(raw)
        except ValueError:
            return 400, problem(400, "Invalid JSON", f"{prefix} Request body is not valid JSON"), None
        if not call.batch:
            return [payload]
        messages = payload.get("messages") if isinstance(payload, dict) else None
        if not isinstance(messages, list) or not messages:
            detail = f'{prefix} Request body must be {{"messages": [...]}} with at least one message'
            return 400, problem(400, "Invalid Request", detail), None
        return messages

    def _ingest(self, call: _Call) -> Reply:
        """Judge each message, record the accepted ones and build the AEP response."""
        messages = self._read_messages(call)
        if isinstance(messages, tuple):
            return messages
        call.count = len(messages)
        faults, prefix = call.faults, self._prefix(call)
        rejected = f"{prefix} {faults.reject_message}"
        hits = [bool(faults.reject_ids & message_ids(m)) for m in messages]
        if faults.reject_mode == "request" and any(hits):
            return faults.reject_status, error_body(faults.reject_status, rejected), None
        flow_id = request.headers.get("x-adobe-flow-id") or request.args.get("x-adobe-flow-id")
        wall_now = datetime.now(UTC)
        conforms = self._schema_judge()
        outcomes: list[tuple[dict[str, Any] | None, int, str]] = []
        for message, hit in zip(messages, hits, strict=True):
            if hit:
                outcomes.append((None, faults.reject_status, rejected))
                continue
            fields, error = inspect_message(message, flow_id, self.config, wall_now)
            if fields is not None and fields["kind"] == "xdm" and conforms is not None:
                error = conforms(message)
                fields = None if error else fields
            outcomes.append((fields, 400, f"{prefix} {error}"))
        if not call.batch and outcomes[0][0] is None:
            _, status, text = outcomes[0]
            if status == 400:
                return 400, problem(400, "Invalid XDM Message Format", text), None
            return status, error_body(status, text), None
        batch_id, responses = self._record_events(call, messages, outcomes)
        if call.batch:
            body = {"inletId": call.inlet_id, "batchId": batch_id, "receivedTimeMs": call.received_ms}
            return 207, {**body, "responses": responses}, None
        body = {"inletId": call.inlet_id, "xactionId": batch_id, "receivedTimeMs": call.received_ms}
        return 200, {**body, "syncValidation": {"skipped": True}}, None

    def _schema_judge(self) -> Callable[[dict[str, Any]], str | None] | None:
        """With schemas registered here, a judge of each XDM message against its own; else None."""
        with self.state.lock:
            registry = self.state.registry
            if not registry.schemas:
                return None  # nothing registered: envelopes are checked, fields are not
            checks = xdm.checks(registry, self.state.xdm_cache)
            datasets = {i: str((d.get("schemaRef") or {}).get("id")) for i, d in registry.datasets.items()}

        def judge(message: dict[str, Any]) -> str | None:
            header = message["header"]
            schema_id, dataset_id = header["schemaRef"]["id"], header["datasetId"]
            check = checks.get(schema_id)
            if check is None:
                return f"Message has unknown xdm format: schema [{schema_id}] not found"
            if dataset_id not in datasets:
                return f"Message is invalid: dataset [{dataset_id}] not found"
            if datasets[dataset_id] != schema_id:
                return f"Message is invalid: schema [{schema_id}] is not the schema of dataset [{dataset_id}]"
            problems = check(message["body"]["xdmEntity"])
            if problems:
                return f"Message is invalid: {len(problems)} schema violation(s) found: " + "; ".join(
                    problems
                )
            return None

        return judge

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
        return self._page("events")

    def list_requests(self) -> Response:
        """``GET /sandbox/requests?since=&limit=``."""
        return self._page("requests")

    def _page(self, name: str) -> Response:
        since, limit = page_args()
        with self.state.lock:
            records: list[dict[str, Any]] = getattr(self.state, name)  # a reset replaces the list
            # seq n lives at index n - 1, so the page is a plain slice.
            page = records[since : since + limit]
            total = len(records)
        return json_reply({"count": total, name: page}, 200)

    def stats(self) -> Response:
        """``GET /sandbox/stats``."""
        with self.state.lock:
            return json_reply(self.state.stats(time.monotonic()), 200)

    def reset(self) -> Response:
        """``POST /sandbox/reset``."""
        with self.state.lock:
            self.state.reset()
            return json_reply(self.state.stats(time.monotonic()), 200)

    def faults(self) -> Response:
        """``GET|POST|DELETE /sandbox/faults``."""
        now = time.monotonic()
        data = request.get_json(silent=True) if request.method == "POST" else None
        with self.state.lock:
            if request.method == "POST":
                try:
                    apply_fault_instructions(self.state, data, now)
                except ValueError as exc:
                    return json_reply({"error": "invalid_fault", "detail": str(exc)}, 400)
            elif request.method == "DELETE":
                self.state.faults = Faults()
            return json_reply(self.state.faults.describe(now), 200)

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
    platform.add_routes(app, platform.Platform(state))
    app.add_url_rule("/ims/token/v3", "ims_token", lambda: ims.token(state), methods=["POST"])
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
