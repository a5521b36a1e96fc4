"""The stack started with exactly the commands the README and the design give, no extra flags.

``celery -A worker.app worker`` with no flags must consume every queue, and no single process
(beat included, which rainbridge no longer needs) may take delivery down with it.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests

from devkit import samples
from devkit.procs import BIN, Process, free_port, wait_for
from shared import keys
from shared.settings import Settings
from tests.helpers import TOKEN, SandboxClient, to_env

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Stack:
    """Processes started by their plain commands, from a directory of their own."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.env = to_env(settings)
        self.workdir = workdir
        self.procs: list[Process] = []

    def start(self, name: str, *args: str) -> Process:
        proc = Process(list(args), self.env, self.workdir / f"{name}.log", cwd=self.workdir)
        self.procs.append(proc)
        return proc

    def status(self, *flags: str) -> str:
        done = subprocess.run(
            [str(BIN / "rainbridge"), "status", *flags],
            env=self.env,
            capture_output=True,
            text=True,
            check=False,
        )
        # It exits 1 exactly when it says a stage is STALLED.
        if "--json" in flags:
            stalled = any(d["stalled"] for d in json.loads(done.stdout)["drains"].values())
        else:
            stalled = "STALLED" in done.stdout.split("drains:")[1].split("\n")[0]
        assert done.returncode == (1 if stalled else 0), done.stdout + done.stderr
        return done.stdout

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()


@pytest.fixture
def stack(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(settings, tmp_path)
    yield running
    running.stop()


def drains_since(client: redis.Redis, since_ms: int) -> set[str]:
    """The stages whose drains ran after ``since_ms``."""
    return {stage for stage, ms in client.hgetall(keys.DRAINS).items() if int(ms) > since_ms}


def post(url: str, pushes: list[dict[str, object]]) -> None:
    """Post in groups of ten, alternately one by one and as one array (RainFocus sends both)."""
    with requests.Session() as http:
        for n, i in enumerate(range(0, len(pushes), 10)):
            group = pushes[i : i + 10]
            bodies: list[object] = list(group) if n % 2 == 0 else [group]
            for body in bodies:
                resp = http.post(f"{url}/v1/pushes", json=body, headers=AUTH, timeout=10)
                assert resp.status_code == 202, resp.text


def delivered(sandbox: SandboxClient, pushes: list[dict[str, object]], timeout: float = 60) -> None:
    wanted = {str(p["transmissionId"]) for p in pushes}
    wait_for(
        lambda: wanted <= {e["transmissionId"] for e in sandbox.events()},
        timeout=timeout,
        interval=0.25,
        what=f"{len(wanted)} pushes at the sandbox",
    )


def test_the_design_commands_deliver_and_a_killed_beat_never_restarted_stops_nothing(
    stack: Stack, settings: Settings, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    # Given the receiver, two workers and beat, started exactly as the README says (the receiver
    # needs a port of its own here; that is all it is given)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started_ms = int(time.time() * 1000)
    stack.start("receiver", str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "receiver.app:create_app()")
    workers = [stack.start(f"worker{n}", str(BIN / "celery"), "-A", "worker.app", "worker") for n in (1, 2)]
    beat = stack.start("beat", str(BIN / "celery"), "-A", "worker.app", "beat")
    wait_for(lambda: requests.get(f"{url}/readyz", timeout=1).ok, timeout=30, what="the receiver")
    wait_for(
        lambda: drains_since(redis_client, started_ms) >= {"ingest", "deliver"},
        timeout=60,
        what="both stages' drains to run",
    )

    # When pushes are posted, they reach AEP
    first = [samples.push() for _ in range(60)]
    post(url, first)
    delivered(sandbox, first)

    # When beat is SIGKILLed and never restarted, pushes posted then still reach AEP
    assert beat.alive()
    beat.signal_group(signal.SIGKILL)
    wait_for(lambda: not beat.alive(), timeout=10, what="beat to die")
    second = [samples.push() for _ in range(40)]
    post(url, second)
    delivered(sandbox, second)

    # And so do pushes posted after the pipeline has been idle for 20 s
    time.sleep(20)
    third = [samples.push() for _ in range(40)]
    post(url, third)
    delivered(sandbox, third)

    # Then each push arrived once, and status and /metrics say the drains are running
    everything = first + second + third
    events = sandbox.events()
    assert sorted(e["transmissionId"] for e in events) == sorted(str(p["transmissionId"]) for p in everything)
    status = stack.status()
    assert "STALLED" not in status.split("drains:")[1].split("\n")[0], status
    assert re.search(r"delivery latency, receipt to AEP \(last 5 min, \d+ events\): p50 [\d.]+s, p99", status)
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'rainbridge_drain_stalled{stage="ingest"} 0.0' in metrics
    assert 'rainbridge_drain_stalled{stage="deliver"} 0.0' in metrics

    # When every worker is gone, status and /metrics say the drains have stalled
    for worker in workers:
        worker.signal_group(signal.SIGKILL)
    wait_for(
        lambda: "ingest ran" in (s := stack.status()) and "STALLED" in s.split("drains:")[1].split("\n")[0],
        timeout=40,
        interval=1,
        what="status to say STALLED",
    )
    metrics = requests.get(f"{url}/metrics", timeout=5).text
    assert 'rainbridge_drain_stalled{stage="ingest"} 1.0' in metrics
    assert 'rainbridge_drain_stalled{stage="deliver"} 1.0' in metrics


def test_queues_still_split_the_stages_between_workers(
    stack: Stack, settings: Settings, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    # Given only a worker narrowed to the ingest stage, as the README's scaling section shows
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    stack.start("receiver", str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "receiver.app:create_app()")
    stack.start("ingest", str(BIN / "celery"), "-A", "worker.app", "worker", "--queues", "ingest")
    wait_for(lambda: requests.get(f"{url}/readyz", timeout=1).ok, timeout=30, what="the receiver")

    # When pushes are posted, they are validated into the outbox and wait there
    pushes = [samples.push() for _ in range(30)]
    post(url, pushes)
    wait_for(lambda: redis_client.xlen(keys.OUTBOX) == 30, timeout=60, what="30 messages in the outbox")
    time.sleep(3)  # a deliver drain, if anything ran one, would have sent them by now
    assert sandbox.events() == []
    assert "deliver" not in redis_client.hgetall(keys.DRAINS)

    # When a worker narrowed to delivery joins, they reach AEP
    stack.start("deliver", str(BIN / "celery"), "-A", "worker.app", "worker", "--queues", "deliver")
    delivered(sandbox, pushes)
    wait_for(
        lambda: json.loads(stack.status("--json"))["drains"]["deliver"]["stalled"] is False,
        timeout=10,
        what="status to show the deliver drains running",
    )
