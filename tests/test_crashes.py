"""Proof of "nothing lost": real processes killed while pushes stream in, then the ledger is checked.

Each test keeps a ledger of every push the receiver acknowledged; at the end each one must be at
the AEP sandbox (once, or repeated only under the same _id) or in the dead-letter store.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import redis
import requests

from devkit import samples
from devkit.ledger import Ledger, Streamer
from devkit.procfs import children
from devkit.procs import Process, RedisServer, free_port, gunicorn, wait_for
from shared import keys
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Stack:
    """Receiver (gunicorn) and workers on given settings, stopped together."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.receiver: Process = gunicorn(to_env(settings), self.port, workdir / "gunicorn.log")
        self.pipeline = Pipeline(settings, workdir)
        wait_for(lambda: requests.get(f"{self.url}/healthz", timeout=1).ok, what="gunicorn")

    def stop(self) -> None:
        self.pipeline.stop()
        self.receiver.stop()


@pytest.fixture
def quick(settings: Settings) -> Settings:
    """Settings that take over a dead worker's work after 2 s, so the tests stay short."""
    return dataclasses.replace(settings, pending_claim_seconds=2, delivery_backoff_cap_seconds=2)


@pytest.fixture
def stack(quick: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(quick, tmp_path)
    yield running
    running.stop()


@pytest.fixture
def own_redis(quick: Settings, tmp_path: Path) -> Iterator[tuple[RedisServer, Stack]]:
    """A stack on a redis-server of its own, for the tests that stop or kill Redis."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        running = Stack(dataclasses.replace(quick, redis_url=server.url), tmp_path)
        try:
            yield server, running
        finally:
            running.stop()
    finally:
        server.kill()


def assert_nothing_lost(verdict: dict[str, object]) -> None:
    assert verdict["missing"] == []
    assert verdict["conflicting_ids"] == []
    assert verdict["dead"] == {}


def held_in_flight(client: redis.Redis, sandbox: SandboxClient, pool: list[int]) -> set[str]:
    """transmissionIds the pool's processes hold pending in the outbox that AEP received from them.

    Those are a delivery request in flight: AEP (the sandbox) has the request, the worker has
    not had the answer, so the entries are still its own. Only a copy AEP received after the
    process read the entry counts: an earlier one came from a worker it took the entry over from.
    """
    now_ms = time.time() * 1000
    read_ms: dict[str, float] = {}
    for pid in pool:
        consumer = f"{socket.gethostname()}:{pid}"
        pending = client.xpending_range(keys.OUTBOX, keys.OUTBOX_GROUP, "-", "+", 1000, consumername=consumer)
        for entry in pending:
            found: list[tuple[str, dict[str, str]]] = client.xrange(  # type: ignore[assignment]
                keys.OUTBOX, entry["message_id"], entry["message_id"]
            )
            for _, fields in found:
                # 100 ms of slack for the two clocks; a previous owner sent it 2 s or more before.
                read_ms[fields["transmissionId"]] = now_ms - entry["time_since_delivered"] - 100
    if not read_ms:
        return set()
    return {
        event["transmissionId"]
        for event in sandbox.events()
        if event["transmissionId"] in read_ms and event["receivedTimeMs"] >= read_ms[event["transmissionId"]]
    }


def test_sigkill_of_a_worker_process_group_three_times_loses_nothing(
    stack: Stack, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    stack.pipeline.start_worker("steady")
    # AEP answers each request after 0.4 s, so a request in flight can be caught and killed.
    sandbox.faults(slow_ms=400)
    ledger = Ledger(stack.url, TOKEN)
    kills: list[tuple[float, set[str]]] = []
    with Streamer(ledger, rate=60):
        for round_ in range(3):
            victim = stack.pipeline.start_worker(f"victim{round_}")
            pool = children(victim.proc.pid)
            # Before each kill, the victim has a delivery request in flight
            held: set[str] = wait_for(
                partial(held_in_flight, redis_client, sandbox, pool),
                timeout=60,
                interval=0.05,
                what="the victim to have a request in flight",
            )
            kills.append((time.time() * 1000, held))
            victim.signal_group(signal.SIGKILL)

    # Then everything is delivered, and what each victim held was sent again after its death
    def taken_over() -> dict[str, object] | None:
        events = sandbox.events()
        # Counted after the events above, so its re-sent count includes every copy they hold.
        verdict = ledger.verdict(sandbox, redis_client)
        for killed_ms, held in kills:
            if not held <= {e["transmissionId"] for e in events if e["receivedTimeMs"] > killed_ms}:
                return None
        return verdict if not verdict["missing"] else None

    verdict = wait_for(taken_over, timeout=60, interval=0.5, what="the victims' entries to be sent again")
    assert_nothing_lost(verdict)
    assert verdict["acked"] >= 100  # pushes kept streaming in through all three kills
    held_total = sum(len(held) for _, held in kills)
    assert verdict["resent"] >= held_total > 0
    print(
        f"\n3 worker kills, each with a request in flight ({held_total} events held): "
        f"{verdict['acked']} acknowledged, all delivered, {verdict['resent']} re-sent"
    )


def _gunicorn_children(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True, check=False).stdout
    return [int(pid) for pid in out.split()]


def _request_in_flight(url: str) -> tuple[socket.socket, int]:
    """A push whose body is half sent, and the pid of the receiver worker holding it (from ss)."""
    port = int(url.rsplit(":", 1)[1])
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    body = json.dumps(samples.push()).encode()
    head = f"POST /v1/pushes HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
    head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    client.sendall(head.encode() + body[: len(body) // 2])
    mine = client.getsockname()[1]

    def owner() -> int | None:
        out = subprocess.run(
            ["ss", "-tnpH", "state", "established", f"( sport = :{port} and dport = :{mine} )"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout
        found = re.search(r"pid=(\d+)", out)
        return int(found.group(1)) if found else None

    return client, int(wait_for(owner, what="the receiver worker holding the request"))


def test_sigkill_of_a_receiver_worker_mid_request_never_loses_an_acknowledged_push(
    stack: Stack, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    stack.pipeline.start_worker()
    ledger = Ledger(stack.url, TOKEN)
    with Streamer(ledger, rate=150, batch=10):
        for _ in range(3):
            time.sleep(1)
            # Each kill hits a worker with a request in flight (its body half read)
            client, holder = _request_in_flight(stack.url)
            assert holder in _gunicorn_children(stack.receiver.proc.pid)
            os.kill(holder, signal.SIGKILL)
            # and that request gets no answer: nothing was promised for it
            try:
                answer = client.recv(1024)
            except OSError:
                answer = b""
            assert not answer.startswith(b"HTTP/1.1 2"), answer
            client.close()
            wait_for(
                lambda: len(_gunicorn_children(stack.receiver.proc.pid)) == 2, what="gunicorn to replace it"
            )
    verdict = ledger.wait_until_settled(sandbox, redis_client, timeout=60)
    assert_nothing_lost(verdict)
    print(
        f"\n3 receiver kills, each mid-request: {verdict['acked']} acknowledged and delivered; "
        f"{ledger.errors} requests got no answer (the sender retries those)"
    )


def test_redis_shutdown_and_restart_mid_stream_loses_nothing_acknowledged(
    sandbox: SandboxClient, own_redis: tuple[RedisServer, Stack]
) -> None:
    server, stack = own_redis
    stack.pipeline.start_worker()
    ledger = Ledger(stack.url, TOKEN)
    with Streamer(ledger, rate=60):
        time.sleep(3)
        # Redis stopped the way an operator stops it: SHUTDOWN writes out the AOF
        server.shutdown()
        time.sleep(0.5)
        down = requests.post(f"{stack.url}/v1/pushes", json=samples.push(), headers=AUTH, timeout=10)
        assert down.status_code == 503
        assert int(down.headers["Retry-After"]) > 0
        assert requests.get(f"{stack.url}/readyz", timeout=10).status_code == 503
        time.sleep(3)
        server.start()
        time.sleep(4)
    verdict = ledger.wait_until_settled(sandbox, server.client(), timeout=90)
    assert_nothing_lost(verdict)
    assert ledger.refused.get(503, 0) > 0
    assert requests.get(f"{stack.url}/readyz", timeout=5).status_code == 200
    print(f"\nRedis restart: {verdict['acked']} acknowledged, all delivered; {ledger.refused} refused")


def test_redis_killed_under_appendfsync_everysec_loses_nothing_acknowledged(
    sandbox: SandboxClient, own_redis: tuple[RedisServer, Stack]
) -> None:
    server, stack = own_redis
    stack.pipeline.start_worker()
    ledger = Ledger(stack.url, TOKEN)
    rate = 100
    with Streamer(ledger, rate=rate, batch=10):
        time.sleep(2)
        # The kill hits work in flight: pushes acknowledged and not yet at AEP
        wait_for(
            lambda: (s := server.client()).xlen(keys.INBOX) + s.xlen(keys.OUTBOX) > 0,
            interval=0.01,
            what="queued work in Redis",
        )
        acked_before = len(ledger.acked)
        server.kill()  # SIGKILL: Redis had written its AOF before each reply; fsync or not
        time.sleep(2)
        server.start()
        time.sleep(3)
    verdict = ledger.wait_until_settled(sandbox, server.client(), timeout=90)
    # Redis writes the AOF (to the kernel) before it replies, so a kill of the process alone
    # loses no acknowledged push; a power cut could lose the last second (README).
    assert_nothing_lost(verdict)
    assert acked_before > 0 and ledger.refused.get(503, 0) + ledger.errors > 0  # it was down for a while
    print(f"\nRedis SIGKILL under everysec: 0 of {verdict['acked']} acknowledged lost (rate {rate}/s)")


def test_warm_shutdown_of_a_worker_with_work_in_hand_loses_nothing_and_resends_nothing(
    stack: Stack, sandbox: SandboxClient, redis_client: redis.Redis
) -> None:
    worker = stack.pipeline.start_worker("leaving")
    sandbox.faults(slow_ms=1500)
    ledger = Ledger(stack.url, TOKEN)
    ledger.post([samples.push() for _ in range(30)])
    wait_for(
        lambda: redis_client.xpending(keys.OUTBOX, keys.OUTBOX_GROUP)["pending"] > 0, what="a batch in hand"
    )

    # SIGTERM to the worker's main process: what `docker stop` or systemd does
    worker.proc.send_signal(signal.SIGTERM)
    worker.proc.wait(timeout=30)
    sandbox.faults(slow_ms=0)
    stack.pipeline.start_worker("next")

    verdict = ledger.wait_until_settled(sandbox, redis_client, timeout=60)
    assert_nothing_lost(verdict)
    assert verdict["resent"] == 0


def test_workers_outlive_repeated_redis_restarts_and_carry_on_by_themselves(
    sandbox: SandboxClient, own_redis: tuple[RedisServer, Stack]
) -> None:
    server, stack = own_redis
    workers = [stack.pipeline.start_worker("w1"), stack.pipeline.start_worker("w2")]
    ledger = Ledger(stack.url, TOKEN)
    for _ in range(4):
        ledger.post([samples.push() for _ in range(20)])
        time.sleep(1.2)  # tasks in hand, unacknowledged, when Redis goes
        server.shutdown()
        time.sleep(1.5)
        server.start()
        time.sleep(1)
    ledger.post([samples.push() for _ in range(20)])
    verdict = ledger.wait_until_settled(sandbox, server.client(), timeout=60)
    assert verdict["conflicting_ids"] == []
    assert verdict["acked"] == 100
    # No worker died: each reconnected by itself and kept draining
    for worker in workers:
        assert worker.alive(), worker.output()[-3000:]
        assert "Unrecoverable error" not in worker.output()
    assert verdict["missing"] == []
