"""Sentry: errors from the receiver and every worker process, with attendee data scrubbed out."""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, cast

import sentry_sdk

from shared.logs import EMAIL
from shared.settings import Settings

#: Keys whose values are dropped wherever they appear in an event.
SENSITIVE_KEYS = re.compile(
    r"authorization|token|secret|password|passwd|cookie|api[-_]?key|dsn|push|body|data", re.I
)
MASK = "[scrubbed]"


def release() -> str:
    """``rainbridge@<version>``, the release Sentry groups errors by."""
    try:
        return f"rainbridge@{version('rainbridge')}"
    except PackageNotFoundError:
        return "rainbridge@unknown"


def init(settings: Settings, component: str) -> bool:
    """Start reporting to Sentry when ``SENTRY_DSN`` is set; returns whether it did."""
    if not settings.sentry_dsn:
        return False
    sentry_sdk.init(
        dsn=settings.sentry_dsn,
        environment=settings.sentry_environment,
        release=release(),
        send_default_pii=False,
        # Stack frames' local variables would carry pushes (emails, names): never send them.
        include_local_variables=False,
        max_request_body_size="never",
        traces_sample_rate=0.0,
        before_send=cast(Any, scrubber(settings)),
        before_breadcrumb=lambda crumb, _hint: _scrub(crumb, _secrets(settings)),
    )
    sentry_sdk.set_tag("component", component)
    return True


def _secrets(settings: Settings) -> list[str]:
    values = [*settings.receiver_tokens, settings.receiver_signing_secret, settings.receiver_inlet_id]
    values += [settings.aep_client_secret]
    return sorted((v for v in values if v), key=len, reverse=True)


def scrubber(settings: Settings) -> Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]]:
    """A ``before_send`` that masks emails and known secrets everywhere, and drops sensitive fields."""
    secrets = _secrets(settings)

    def before_send(event: dict[str, Any], _hint: dict[str, Any]) -> dict[str, Any]:
        request = event.get("request")
        if isinstance(request, dict):
            request.pop("data", None)
            request.pop("cookies", None)
            request.pop("query_string", None)  # may carry x-adobe-flow-id; the URL path keeps the route
        scrubbed: dict[str, Any] = _scrub(event, secrets)
        return scrubbed

    return before_send


def _scrub(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return EMAIL.sub(MASK, value)
    if isinstance(value, dict):
        return {key: _scrub_item(key, item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_scrub(item, secrets) for item in value]
    return value


def _scrub_item(key: Any, item: Any, secrets: list[str]) -> Any:
    if isinstance(key, str) and SENSITIVE_KEYS.search(key) and not isinstance(item, (dict, list)):
        return MASK
    return _scrub(item, secrets)
