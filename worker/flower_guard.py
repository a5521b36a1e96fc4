"""Refuse to start Flower beyond loopback without authentication.

Flower listens on every interface by default and has no login unless told to; it shows task
results and lets its user shut workers down. Celery loads this app before Flower parses its own
options, so the check reads the same command line and environment Flower will.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


def _option(argv: Sequence[str], name: str) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
        if arg == f"--{name}" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def problem(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> str | None:
    """Why this Flower command line must not start, or None when it may."""
    if "flower" not in argv:
        return None
    address = _option(argv, "address") or environ.get("FLOWER_ADDRESS", "")
    auth = any(_option(argv, name) for name in ("basic-auth", "basic_auth", "auth"))
    auth = auth or any(environ.get(name) for name in ("FLOWER_BASIC_AUTH", "FLOWER_AUTH"))
    if address in LOOPBACK or auth:
        return None
    where = address or "every interface"
    return f"Flower would listen on {where} without authentication: set --basic-auth (or FLOWER_BASIC_AUTH)"
