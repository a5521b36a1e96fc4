"""What the soak counts: every acknowledged push in the ledger, and each process tree's memory."""

from __future__ import annotations

import random
import threading
import time
from collections import deque
from typing import Any

import requests

from devkit import procfs
from devkit.ledger import Ledger
from devkit.sandbox import SandboxState
from devkit.sandbox.client import SandboxClient
from devkit.soak.options import REPEAT_AGE


def tree_rss_kb(pid: int) -> int:
    """Resident memory of a process and its direct children (a Celery worker and its pool), in kB."""
    return sum(procfs.rss_bytes(one) for one in [pid, *procfs.children(pid)]) // 1024


class LocalSandboxClient(SandboxClient):
    """The sandbox client, reading events straight from the in-process sandbox's state."""

    def __init__(self, url: str, state: SandboxState) -> None:
        super().__init__(url)
        self._state = state

    def events(self) -> list[dict[str, Any]]:
        """All events AEP accepted, oldest first (a copy, without an HTTP round trip)."""
        with self._state.lock:
            return list(self._state.events)

    def count(self) -> int:
        """How many events AEP accepted so far."""
        with self._state.lock:
            return len(self._state.events)


class SoakLedger(Ledger):
    """The ledger, plus when and as what each push was acknowledged, for the soak's checks."""

    def __init__(self, url: str, token: str, started: float) -> None:
        super().__init__(url, token)
        self.started = started
        self.lock = threading.Lock()
        #: transmissionId → first acknowledgement (monotonic s), receipt and kind.
        self.first_ack: dict[str, float] = {}
        self.receipts: dict[str, str] = {}
        self.kinds: dict[str, str] = {}
        #: transmissionId → (first acknowledgement, the repeat's acknowledgement).
        self.repeats: dict[str, tuple[float, float]] = {}
        #: Plain pushes acknowledged, oldest first: candidates for a repeat.
        self.recent: deque[tuple[float, str]] = deque()
        #: Originals already picked for a repeat (possibly still in flight).
        self.picked: set[str] = set()
        self.requests = 0
        self.refused_pushes = 0
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self.lock:
                self._sessions.append(session)
        return session

    def send(self, pushes: list[dict[str, Any]], kinds: list[str]) -> None:
        """Post one request (a push, or an array of them) and record what was acknowledged."""
        body: Any = pushes[0] if len(pushes) == 1 else pushes
        try:
            resp = self._session().post(f"{self.url}/v1/pushes", json=body, headers=self.headers, timeout=10)
        except requests.RequestException:
            with self.lock:
                self.requests += 1
                self.errors += 1  # no answer: nothing was promised, a sender would retry
            return
        now = time.monotonic()
        with self.lock:
            self.requests += 1
            if resp.status_code != 202:
                self.refused[resp.status_code] = self.refused.get(resp.status_code, 0) + 1
                self.refused_pushes += len(pushes)
                return
            try:
                receipt = str(resp.json().get("receipt", ""))
            except ValueError:
                receipt = ""
            for push, kind in zip(pushes, kinds, strict=True):
                tid = push["transmissionId"]
                self.acked[tid] = push
                if kind == "repeat":
                    self.repeats[tid] = (self.first_ack[tid], now)
                    continue
                self.first_ack[tid] = now
                self.receipts[tid] = receipt
                self.kinds[tid] = kind
                if kind == "plain":
                    self.recent.append((now, tid))

    def repeat_candidate(self, rng: random.Random) -> str | None:
        """A plain push acknowledged a few seconds ago and not repeated yet, if there is one."""
        now = time.monotonic()
        with self.lock:
            while self.recent and self.recent[0][0] < now - REPEAT_AGE[1]:
                self.recent.popleft()
            eligible = sum(1 for at, _ in self.recent if at <= now - REPEAT_AGE[0])
            for _ in range(5):
                if not eligible:
                    return None
                _, tid = self.recent[rng.randrange(eligible)]
                if tid not in self.picked:
                    self.picked.add(tid)
                    return tid
        return None

    def close(self) -> None:
        """Close every HTTP session the posting threads opened."""
        with self.lock:
            for session in self._sessions:
                session.close()
        self.http.close()
