"""The soak's traffic: pushes, arrays, invalid pushes and repeats, posted at a steady rate."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from devkit import samples
from devkit.soak.accounting import SoakLedger
from devkit.soak.options import ARRAY_SHARE, ARRAY_SIZES, CONCURRENCY, INVALID_SHARE, REPEAT_SHARE


class Traffic:
    """Makes the requests to post: single pushes and arrays, with invalid pushes and repeats."""

    def __init__(self, ledger: SoakLedger, rng: random.Random) -> None:
        self.ledger = ledger
        self.rng = rng
        self._to_reject: deque[str] = deque()
        self._lock = threading.Lock()

    def reject_next(self, ids: list[str]) -> None:
        """Use these transmissionIds (already on AEP's reject list) for the next pushes."""
        with self._lock:
            self._to_reject.extend(ids)

    def next_request(self) -> tuple[list[dict[str, Any]], list[str]]:
        """The pushes of the next request and the kind of each."""
        size = self.rng.randint(*ARRAY_SIZES) if self.rng.random() < ARRAY_SHARE else 1
        pushes: list[dict[str, Any]] = []
        kinds: list[str] = []
        tids: set[str] = set()
        while len(pushes) < size:
            push, kind = self._one()
            # A repeat and its original in one array would be one request's business, not dedupe's.
            if push["transmissionId"] in tids:
                continue
            tids.add(push["transmissionId"])
            pushes.append(push)
            kinds.append(kind)
        return pushes, kinds

    def _one(self) -> tuple[dict[str, Any], str]:
        with self._lock:
            rejected = self._to_reject.popleft() if self._to_reject else None
        if rejected:
            return samples.push(rejected), "reject"
        draw = self.rng.random()
        if draw < INVALID_SHARE:
            return samples.push(timestamp="not a time"), "invalid"
        if draw < INVALID_SHARE + REPEAT_SHARE and (tid := self.ledger.repeat_candidate(self.rng)):
            # Another eventType, so the sandbox shows which version AEP got if both got through.
            return samples.push(tid, eventType="SessionAttended"), "repeat"
        return samples.push(), "plain"


class Poster:
    """Posts the traffic at about ``rate`` pushes per second from a pool of threads until stopped."""

    def __init__(self, ledger: SoakLedger, traffic: Traffic, rate: float) -> None:
        self.ledger = ledger
        self.traffic = traffic
        self.rate = rate
        self.posted = 0
        self._stop = threading.Event()
        self._slots = threading.BoundedSemaphore(CONCURRENCY * 2)
        self._thread = threading.Thread(target=self._run, name="soak-poster", daemon=True)

    def start(self) -> None:
        """Start posting."""
        self._thread.start()

    def stop(self) -> None:
        """Stop posting and wait for the requests in flight."""
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        started = time.monotonic()
        with ThreadPoolExecutor(CONCURRENCY, thread_name_prefix="soak-post") as pool:
            while not self._stop.is_set():
                now = time.monotonic()
                due = started + self.posted / self.rate
                if due > now:
                    self._stop.wait(due - now)
                    continue
                if due < now - 1:
                    # Fell behind (a slow receiver): resume the pace instead of bursting to catch up.
                    started = now - self.posted / self.rate
                if not self._slots.acquire(timeout=0.5):
                    continue
                pushes, kinds = self.traffic.next_request()
                self.posted += len(pushes)
                pool.submit(self._send, pushes, kinds)

    def _send(self, pushes: list[dict[str, Any]], kinds: list[str]) -> None:
        try:
            self.ledger.send(pushes, kinds)
        finally:
            self._slots.release()
