"""Settings and environments for a pipeline on this machine: a private Redis and the AEP sandbox."""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from devkit.sandbox import SandboxConfig
from shared.settings import Settings

#: The sandbox's built-in client, inlet and org.
SANDBOX = SandboxConfig()


def local_settings(redis_url: str, sandbox_url: str, **overrides: Any) -> Settings:
    """Production defaults, except that Redis is ``redis_url`` and AEP is the sandbox at ``sandbox_url``."""
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "aep_streaming_url": f"{sandbox_url}/collection/{SANDBOX.inlet_id}",
        "aep_ims_url": f"{sandbox_url}/ims/token/v3",
        "aep_platform_url": sandbox_url,
        "aep_client_id": SANDBOX.client_id,
        "aep_client_secret": SANDBOX.client_secret,
        "aep_org_id": SANDBOX.org_id,
        "aep_dataset_id": "5f0c0c0c0c0c0c0c0c0c0c0c",
        "aep_schema_id": "https://ns.adobe.com/acme/schemas/0123456789abcdef",
        "aep_tenant_id": "acme",
    }
    return Settings(**(values | overrides))


def setup_lines(output: str) -> dict[str, str]:
    """The ``AEP_*=value`` lines ``rainbridge aep setup`` ends with, as a dict (unset ones left out)."""
    found: dict[str, str] = {}
    for line in output.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("AEP_") and name.isupper() and value and not value.startswith(" "):
            found[name] = value.strip()
    return found


def settings_env(settings: Settings) -> dict[str, str]:
    """This process's environment with every rainbridge variable replaced by ``settings``."""
    names = {field.name.upper() for field in dataclasses.fields(settings)}
    # Inherited rainbridge variables (a SENTRY_DSN, a REDIS_URL) must not leak into what we start.
    env = {k: v for k, v in os.environ.items() if k not in names}
    for field in dataclasses.fields(settings):
        value = getattr(settings, field.name)
        if value is not None:
            env[field.name.upper()] = ",".join(value) if isinstance(value, tuple) else str(value)
    return env
