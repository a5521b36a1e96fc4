"""The sandbox's configuration and the limits it enforces, as Adobe documents them."""

from __future__ import annotations

from dataclasses import dataclass

MAX_REQUEST_BYTES = 1_000_000
# AEP Profile drops ExperienceEvents above this size; the data lake still takes them.
PROFILE_MAX_EVENT_BYTES = 10 * 1024
XDM_CONTENT_TYPE_PREFIX = "application/vnd.adobe.xed-full+json;version="
# Timestamps are truncated to milliseconds by senders; allow that much rounding, nothing more.
FUTURE_TOLERANCE_SECONDS = 1.0
DEFAULT_PAGE_LIMIT = 1000
PAGE_EVENTS = 200
STATE_KEY = "aep_sandbox"


@dataclass
class SandboxConfig:
    """Identity of the fake Adobe org, its credentials and its one inlet."""

    client_id: str = "sandbox-client"
    client_secret: str = "sandbox-secret"  # noqa: S105 - a published sandbox credential, not a secret
    inlet_id: str = "sandbox-inlet"
    org_id: str = "SANDBOX0000000000000000@AdobeOrg"
    tenant_id: str = "acme"
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
