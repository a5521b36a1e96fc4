"""A client of the AEP sandbox's inspection and fault routes, for tests and the soak run."""

from __future__ import annotations

from typing import Any

import requests

from devkit.procs import wait_for


class SandboxClient:
    """Reads the sandbox's records and sets its fault instructions over HTTP."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()

    def reset(self) -> None:
        self.http.post(f"{self.url}/sandbox/reset", timeout=5).raise_for_status()

    def events(self) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.url}/sandbox/events", params={"limit": 1_000_000}, timeout=10)
        resp.raise_for_status()
        events: list[dict[str, Any]] = resp.json()["events"]
        return events

    def requests(self) -> list[dict[str, Any]]:
        resp = self.http.get(f"{self.url}/sandbox/requests", params={"limit": 1_000_000}, timeout=10)
        resp.raise_for_status()
        records: list[dict[str, Any]] = resp.json()["requests"]
        return records

    def stats(self) -> dict[str, Any]:
        resp = self.http.get(f"{self.url}/sandbox/stats", timeout=5)
        resp.raise_for_status()
        stats: dict[str, Any] = resp.json()
        return stats

    def faults(self, **instructions: Any) -> None:
        self.http.post(f"{self.url}/sandbox/faults", json=instructions, timeout=5).raise_for_status()

    def wait_for_events(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        return list(
            wait_for(
                lambda: (ev := self.events()) and len(ev) >= count and ev,
                timeout=timeout,
                interval=0.2,
                what=f"{count} events at the sandbox",
            )
        )
