"""The processes under test (Redis, receiver, workers), restarted when they exit by themselves."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from devkit.local import settings_env
from devkit.procs import Process, RedisServer, celery_worker, free_port, gunicorn, wait_for
from devkit.sandbox import SandboxServer
from devkit.soak.accounting import tree_rss_kb
from devkit.soak.options import SANDBOX, WORKER_READY_TIMEOUT, SoakError, soak_settings


@dataclass
class Slot:
    """One long-running process by name (a worker, the receiver), across its restarts."""

    name: str
    process: Process
    incarnation: int = 1
    #: Times the soak killed it, and times it exited by itself; each was followed by a restart.
    kills: int = 0
    crashes: int = 0
    #: Held by whoever is killing or restarting the process, so the two never cross.
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


@dataclass
class Crash:
    """A process that exited without being told to, and why, from its log."""

    at: float
    name: str
    exit_code: int | None
    last_words: str


def last_words(log_path: Path) -> str:
    """The last critical (else error) message of a log of JSON lines, else its last line."""
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    for level in ("CRITICAL", "ERROR"):
        for line in reversed(lines):
            if f'"level": "{level}"' in line:
                with contextlib.suppress(ValueError):
                    return str(json.loads(line).get("message", line))[:300]
    return lines[-1][:300] if lines else ""


class Stack:
    """Every process of the pipeline, started under ``workdir``, restarted when it dies, stopped together."""

    def __init__(self, workdir: Path, workers: int) -> None:
        self.workdir = workdir
        self.worker_names = [f"w{n}" for n in range(1, workers + 1)]
        self.redis = RedisServer(workdir / "redis")
        self.sandbox = SandboxServer(SANDBOX)
        self.slots: dict[str, Slot] = {}
        self.crashes: list[Crash] = []
        self.env: dict[str, str] = {}
        self.port = 0
        self.url = ""
        self._lock = threading.Lock()
        self._closed = False

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has begun: nothing is started any more."""
        return self._closed

    @property
    def workers(self) -> dict[str, Slot]:
        """The Celery workers' slots by name."""
        return {name: self.slots[name] for name in self.worker_names if name in self.slots}

    def start(self) -> None:
        """Start Redis, the sandbox, the receiver and the workers; wait until they are ready."""
        with self._lock:
            self.redis.start()
        self.sandbox.start()
        self.env = settings_env(soak_settings(self.redis.url, self.sandbox.url))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        with self._lock:
            for name in ["receiver", *self.worker_names]:
                self.slots[name] = Slot(name, self._spawn(name, 1))
        for slot in self.slots.values():
            self._wait_ready(slot)

    def _spawn(self, name: str, incarnation: int) -> Process:
        log = self.workdir / f"{name}-{incarnation}.log"
        if name == "receiver":
            return gunicorn(self.env, self.port, log)
        return celery_worker(self.env, log, name=name)

    def _wait_ready(self, slot: Slot) -> None:
        proc = slot.process
        if slot.name == "receiver":
            ready = wait_for(
                lambda: not proc.alive() or requests.get(f"{self.url}/healthz", timeout=1).ok,
                timeout=WORKER_READY_TIMEOUT,
                what="the receiver",
            )
        else:
            ready = wait_for(
                lambda: "ready." in proc.output() or not proc.alive(),
                timeout=WORKER_READY_TIMEOUT,
                what=f"worker {slot.name}",
            )
        if not ready or not proc.alive():
            raise SoakError(f"{slot.name} did not start; see {proc.log_path}")

    def _restart(self, slot: Slot) -> bool:
        with self._lock:
            if self._closed:
                return False
            slot.incarnation += 1
            slot.process = self._spawn(slot.name, slot.incarnation)
        self._wait_ready(slot)
        return True

    def kill_worker(self, name: str, down: float) -> int:
        """SIGKILL a worker's whole process group, restart it ``down`` s later; returns the old pid."""
        slot = self.slots[name]
        with slot.lock:
            pid = slot.process.proc.pid
            slot.process.signal_group(signal.SIGKILL)
            slot.process.stop(timeout=5)
            time.sleep(down)
            if self._restart(slot):
                slot.kills += 1
        return pid

    def start_redis(self) -> None:
        """Start Redis again on its port, from its AOF."""
        with self._lock:
            if not self._closed:
                self.redis.start()

    def supervise(self, started: float) -> list[Crash]:
        """Restart processes that exited by themselves, as a restart policy would; return those exits."""
        found = []
        for slot in self.slots.values():
            # A slot whose lock is taken is being killed on purpose.
            if slot.process.alive() or not slot.lock.acquire(blocking=False):
                continue
            try:
                if slot.process.alive():
                    continue
                crash = Crash(
                    round(time.monotonic() - started, 2),
                    slot.name,
                    slot.process.proc.returncode,
                    last_words(slot.process.log_path),
                )
                slot.process.stop(timeout=1)
                found.append(crash)
                if self._restart(slot):
                    slot.crashes += 1
            finally:
                slot.lock.release()
        self.crashes += found
        return found

    def worker_rss_kb(self) -> dict[str, int]:
        """Resident memory of each worker (main process and pool), in kB."""
        return {name: tree_rss_kb(slot.process.proc.pid) for name, slot in self.workers.items()}

    def close(self) -> None:
        """Stop everything this stack started: SIGTERM to all at once, SIGKILL after 15 s."""
        with self._lock:
            self._closed = True
        procs = [slot.process for slot in self.slots.values()]
        for proc in procs:
            if proc.alive():
                proc.signal_group(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.stop(timeout=1)
        with contextlib.suppress(Exception):
            self.redis.kill()
        with contextlib.suppress(Exception):
            self.sandbox.stop()
