"""The sandbox's Adobe IMS: OAuth server-to-server tokens for the configured client."""

from __future__ import annotations

import secrets
import time

from flask import Response, request

from devkit.sandbox.faults import take_failure
from devkit.sandbox.replies import UNAVAILABLE, json_reply, phrase, same_secret
from devkit.sandbox.state import SandboxState


def token(state: SandboxState) -> Response:
    """``POST /ims/token/v3``: mint an opaque bearer token for the configured client."""
    config = state.config
    now = time.monotonic()
    with state.lock:
        down = state.faults.down_until > now
        failure = None if down else take_failure(state.faults, "ims_fail_next")
    if down:
        return json_reply(UNAVAILABLE, 503)
    if failure:
        body = {"error": "server_error", "error_description": phrase(failure["status"])}
        headers = {"Retry-After": failure["retry_after"]} if "retry_after" in failure else None
        return json_reply(failure.get("body", body), failure["status"], headers)
    params = {**request.args.to_dict(), **request.form.to_dict()}
    grant_type = params.get("grant_type")
    if not grant_type:
        return json_reply(
            {"error": "invalid_request", "error_description": "missing grant_type parameter"}, 400
        )
    if grant_type != "client_credentials":
        description = f"grant_type {grant_type} is not supported"
        return json_reply({"error": "unsupported_grant_type", "error_description": description}, 400)
    if not same_secret(params.get("client_id", ""), config.client_id):
        return json_reply(
            {"error": "invalid_client", "error_description": "invalid client_id parameter"}, 400
        )
    if not same_secret(params.get("client_secret", ""), config.client_secret):
        description = "invalid client_secret parameter"
        return json_reply({"error": "invalid_client", "error_description": description}, 401)
    if not params.get("scope"):
        return json_reply({"error": "invalid_scope", "error_description": "missing scope parameter"}, 400)
    token = secrets.token_urlsafe(32)
    with state.lock:
        ttl = state.faults.token_ttl or config.token_ttl
        # Drop expired tokens here so a long run does not grow the table without bound.
        state.tokens = {t: expiry for t, expiry in state.tokens.items() if expiry > now}
        state.tokens[token] = now + ttl
        state.tokens_minted += 1
    return json_reply({"access_token": token, "token_type": "bearer", "expires_in": ttl}, 200)
