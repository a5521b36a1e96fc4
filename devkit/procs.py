"""Real processes on this machine: a private redis-server, Celery workers, gunicorn."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import redis

from devkit.redisbin import redis_server_binary

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


#: Where free_port looks: below Linux's ephemeral range (32768-60999), which every outgoing
#: connection draws its local port from. A port taken from that range can be handed to a
#: client socket (a Redis or HTTP connection) before the server meant for it binds.
PORT_RANGE = (20000, 32000)


def free_port() -> int:
    """A TCP port nobody uses right now, outside the range outgoing connections use."""
    for _ in range(200):
        port = random.randrange(*PORT_RANGE)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {PORT_RANGE}")


def wait_for(check: Callable[[], Any], timeout: float = 20.0, interval: float = 0.05, what: str = "") -> Any:
    """Poll ``check`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}; last error: {last_error}")


class RedisServer:
    """A private redis-server on a free port, configured as rainbridge requires (AOF, noeviction)."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        args = [
            redis_server_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: self.client().ping(), timeout=10, what="redis-server to start")

    def shutdown(self) -> None:
        """Stop the way an operator would: SHUTDOWN, which flushes the AOF."""
        if self.proc and self.proc.poll() is None:
            with contextlib.suppress(redis.ConnectionError):
                self.client().shutdown(nosave=False)
            self.proc.wait(timeout=10)
        self.proc = None

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


class Process:
    """A subprocess in its own process group, stopped with its children."""

    def __init__(self, args: list[str], env: Mapping[str, str], log_path: Path, cwd: Path = ROOT) -> None:
        self.log_path = log_path
        self._log = open(log_path, "ab")  # noqa: SIM115 - kept open for the process's life
        self.proc = subprocess.Popen(
            args, env=dict(env), cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 15) -> None:
        if self.alive():
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.signal_group(signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.signal_group(signal.SIGKILL)  # stragglers (pool children) of a dead parent
        self._log.close()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")


def celery_worker(
    env: Mapping[str, str],
    log_path: Path,
    name: str = "w1",
    concurrency: int = 2,
    queues: str | None = None,
) -> Process:
    """A real Celery worker started as the README says: every queue unless ``queues`` narrows it.

    Only flags the README documents: the log level (the tests wait for its "ready." line), the
    process count, a node name (several workers run on one host) and, since rainbridge uses
    neither, no mingle or gossip (they only slow a worker's start).
    """
    args = [
        str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
        "--concurrency", str(concurrency), "--hostname", f"{name}@%h", "--without-mingle", "--without-gossip",
    ]  # fmt: skip
    if queues:
        args += ["--queues", queues]
    return Process(args, env, log_path)


def gunicorn(env: Mapping[str, str], port: int, log_path: Path, workers: int = 2) -> Process:
    """The receiver under gunicorn, as in production."""
    args = [
        str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "--workers", str(workers),
        "receiver.app:create_app()",
    ]  # fmt: skip
    return Process(args, env, log_path)
