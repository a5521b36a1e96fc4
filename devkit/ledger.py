"""A ledger of acknowledged pushes, and the check that each one ended at AEP or as a dead letter."""

from __future__ import annotations

import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import redis
import requests

from devkit import samples
from devkit.procs import wait_for
from devkit.sandbox.client import SandboxClient
from shared import deadletter


class Ledger:
    """Every push the receiver acknowledged, and the check that each one ended somewhere."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.acked: dict[str, dict[str, Any]] = {}
        self.refused: dict[int, int] = {}
        self.errors = 0
        self.http = requests.Session()

    def post(self, pushes: list[dict[str, Any]], workers: int = 8) -> None:
        def one(push: dict[str, Any]) -> None:
            try:
                resp = self.http.post(f"{self.url}/v1/pushes", json=push, headers=self.headers, timeout=10)
            except requests.RequestException:
                self.errors += 1  # no answer: the sender would retry; nothing was promised
                return
            if resp.status_code == 202:
                self.acked[push["transmissionId"]] = push
            else:
                self.refused[resp.status_code] = self.refused.get(resp.status_code, 0) + 1

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(one, pushes))

    def verdict(self, sandbox: SandboxClient, client: redis.Redis) -> dict[str, Any]:
        """Delivered, dead-lettered, duplicates under different _ids, and missing."""
        ids_by_tid: dict[str, set[str]] = defaultdict(set)
        copies: dict[str, int] = defaultdict(int)
        for event in sandbox.events():
            ids_by_tid[event["transmissionId"]].add(event["id"])
            copies[event["transmissionId"]] += 1
        dead = {letter.transmission_id: letter.reason for letter in deadletter.read_all(client)}
        missing = [tid for tid in self.acked if tid not in ids_by_tid and tid not in dead]
        return {
            "acked": len(self.acked),
            "delivered": len(set(ids_by_tid) & set(self.acked)),
            "dead": dead,
            "missing": missing,
            "conflicting_ids": [tid for tid, ids in ids_by_tid.items() if len(ids) > 1],
            "resent": sum(n - 1 for n in copies.values()),
        }

    def wait_until_settled(
        self, sandbox: SandboxClient, client: redis.Redis, timeout: float
    ) -> dict[str, Any]:
        return dict(
            wait_for(
                lambda: (v := self.verdict(sandbox, client)) and not v["missing"] and v,
                timeout=timeout,
                interval=0.5,
                what="every acknowledged push to be delivered or dead-lettered",
            )
        )


class Streamer:
    """Posts pushes in the background at about ``rate`` per second until stopped."""

    def __init__(self, ledger: Ledger, rate: float, batch: int = 5) -> None:
        self.ledger = ledger
        self.rate = rate
        self.batch = batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Streamer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:

        while not self._stop.is_set():
            self.ledger.post([samples.push() for _ in range(self.batch)], workers=self.batch)
            self._stop.wait(self.batch / self.rate)
