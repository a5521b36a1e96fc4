"""What the tests share besides fixtures: credentials, the sandbox's identity, a worker fleet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import redis

from devkit.local import settings_env
from devkit.procs import Process, celery_worker, wait_for
from devkit.sandbox import SandboxConfig
from devkit.sandbox.client import SandboxClient
from shared import keys
from shared.settings import Settings
from worker import ingest

__all__ = ["INLET", "SANDBOX", "TOKEN", "Pipeline", "SandboxClient", "to_env"]

TOKEN = "test-token-0123456789abcdef"
INLET = "test-inlet-0123456789abcdef"
SANDBOX = SandboxConfig()


def to_env(settings: Settings) -> dict[str, str]:
    """Settings as the environment variables that would produce them."""
    return settings_env(settings)


class Pipeline:
    """Celery workers running against the test's settings (they tick their own drains)."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.workdir = workdir
        self.env = to_env(settings)
        self.workers: list[Process] = []

    def start_worker(
        self, name: str | None = None, concurrency: int = 2, queues: str | None = None
    ) -> Process:
        name = name or f"w{len(self.workers) + 1}"
        log_path = self.workdir / f"{name}.log"
        proc = celery_worker(self.env, log_path, name=name, concurrency=concurrency, queues=queues)
        self.workers.append(proc)
        wait_for(lambda: "ready." in proc.output() or not proc.alive(), timeout=30, what=f"worker {name}")
        assert proc.alive(), proc.output()
        return proc

    def stop(self) -> None:
        for proc in self.workers:
            proc.stop()

    def logs(self) -> str:
        return "\n".join(p.output() for p in self.workers)


def load(client: redis.Redis, settings: Settings, pushes: list[dict[str, Any]]) -> None:
    """Put pushes through the real ingest stage so the outbox holds their AEP messages."""
    for push in pushes:
        client.xadd(keys.INBOX, {"push": json.dumps(push), "receipt": "test"})
    while ingest.drain(client, settings, "ingest", budget_s=0.05).read:
        pass
