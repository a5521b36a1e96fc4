"""What the sandbox remembers: events, requests, tokens and faults, under one lock."""

from __future__ import annotations

import itertools
import threading
from collections import Counter
from typing import Any

from devkit.sandbox.config import SandboxConfig
from devkit.sandbox.faults import Faults
from devkit.sandbox.platform import Registry


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
        self.registry = Registry()
        # Compiled schema checks, by schema and field-group versions: never stale, so never reset.
        self.xdm_cache: dict[tuple[str, ...], Any] = {}

    def reset(self) -> None:
        """Forget events, requests, tokens, faults and counters (caller holds ``lock``)."""
        self.events = []
        self.requests = []
        self.requests_by_status = Counter()
        self.tokens = {}
        self.tokens_minted = 0
        self.faults = Faults()
        self.registry = Registry()

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
            "platform": self.registry.summary(),
        }
