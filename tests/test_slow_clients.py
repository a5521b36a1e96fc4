"""Slow, idle and malformed clients against the receiver as shipped (gunicorn from the project dir).

Two idle sockets used to hold a two-worker receiver for 30 s. Here 200 hostile connections of
five kinds stay open while a normal client is served at once; each hostile one is closed by the
server within its deadline; a body cut off mid-way is never acknowledged or stored.
"""

from __future__ import annotations

import contextlib
import json
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from devkit import procfs, samples
from devkit.procs import Process, free_port, gunicorn, wait_for
from shared import keys
from shared.settings import Settings
from tests.helpers import TOKEN, to_env

HEADER_TIMEOUT = 3.0
BODY_TIMEOUT = 6.0
#: How late past its deadline the server may close a connection on a busy 2-core machine.
SLACK = 3.0
PER_KIND = 40
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@dataclass
class Hostile:
    """One hostile connection: what it sends, and when the server closed it."""

    kind: str
    sock: socket.socket
    opened: float
    drip: bytes = b""
    received: bytes = b""
    closed_after: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _headers(port: int, length: int) -> bytes:
    return (
        f"POST /v1/pushes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{AUTH}"
        f"Content-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
    ).encode()


def open_hostile(port: int, kind: str) -> Hostile:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.setblocking(False)
    conn = Hostile(kind, sock, time.monotonic())
    if kind == "headers_never_finished":
        sock.send(f"POST /v1/pushes HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n".encode())
    elif kind == "body_never_sent":
        sock.send(_headers(port, 100))
    elif kind == "headers_dripped":
        conn.drip = _headers(port, 2)
    elif kind == "body_dripped":
        sock.send(_headers(port, 100))
        conn.drip = b"[" + b" " * 98 + b"]"
    # "idle": connected, nothing sent
    return conn


class Watcher:
    """Drips one byte a second into each dripping connection and notes when the server closes each."""

    def __init__(self, conns: list[Hostile]) -> None:
        self.conns = conns
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.conns:
            conn.sock.close()

    def open_count(self) -> int:
        return sum(1 for c in self.conns if c.closed_after is None)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        for conn in self.conns:
            selector.register(conn.sock, selectors.EVENT_READ, conn)
        next_drip = time.monotonic()
        while not self._stop.is_set():
            for key, _ in selector.select(timeout=0.1):
                conn = key.data
                try:
                    chunk = conn.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    conn.received += chunk
                    continue
                conn.closed_after = time.monotonic() - conn.opened
                selector.unregister(conn.sock)
            if time.monotonic() >= next_drip:
                next_drip += 1.0
                for conn in self.conns:
                    if conn.drip and conn.closed_after is None:
                        try:
                            conn.sock.send(conn.drip[:1])
                            conn.drip = conn.drip[1:]
                        except OSError:
                            pass


@pytest.fixture
def receiver(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[tuple[int, Process]]:
    """The receiver started as the README starts it, from the project directory, short deadlines."""
    env = to_env(settings) | {
        "RECEIVER_HEADER_TIMEOUT_SECONDS": str(HEADER_TIMEOUT),
        "RECEIVER_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT),
    }
    port = free_port()
    proc = gunicorn(env, port, tmp_path / "gunicorn.log")
    wait_for(
        lambda: requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok, timeout=30, what="gunicorn"
    )
    yield port, proc
    proc.stop()


def _timed_push(port: int) -> tuple[float, int]:
    started = time.monotonic()
    resp = requests.post(
        f"http://127.0.0.1:{port}/v1/pushes",
        json=samples.push(),
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=10,
    )
    return time.monotonic() - started, resp.status_code


def test_200_hostile_connections_neither_stall_a_normal_client_nor_outstay_their_deadlines(
    receiver: tuple[int, Process], redis_client: redis.Redis
) -> None:
    port, proc = receiver
    kinds = ["headers_never_finished", "body_never_sent", "headers_dripped", "body_dripped", "idle"]

    workers = procfs.children(proc.proc.pid)
    rss_before = sum(procfs.rss_bytes(pid) for pid in workers)

    # Given 200 hostile connections, 40 of each kind, all open at once
    conns = [open_hostile(port, kind) for kind in kinds for _ in range(PER_KIND)]
    with Watcher(conns) as watcher:
        time.sleep(0.5)
        assert watcher.open_count() == len(conns)
        # Each costs the receiver a greenlet and its buffers, not a process
        per_connection = (sum(procfs.rss_bytes(pid) for pid in workers) - rss_before) / len(conns)
        print(f"receiver memory per hostile connection: {per_connection / 1024:.1f} KiB")
        assert per_connection < 256 * 1024

        # When a normal client pushes and asks for readiness, again and again while they are open
        pushes, slowest = 0, 0.0
        for _ in range(10):
            took, status = _timed_push(port)
            assert status == 202
            pushes += 1
            slowest = max(slowest, took)
            started = time.monotonic()
            assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).ok
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.1)
        # Then each answer came within a second
        assert slowest < 1.0, f"slowest answer {slowest:.2f} s with 200 hostile connections open"

        # And a push cut off mid-body is neither acknowledged nor stored
        body = json.dumps(samples.push()).encode()
        cut = socket.create_connection(("127.0.0.1", port), timeout=5)
        cut.sendall(_headers(port, len(body)) + body[: len(body) // 2])
        cut.shutdown(socket.SHUT_WR)
        cut.settimeout(BODY_TIMEOUT + SLACK)
        answer = b""
        with contextlib.suppress(OSError):  # reset, or no answer at all: both mean "not taken"
            while chunk := cut.recv(65536):
                answer += chunk
        cut.close()
        assert b" 2" not in answer.split(b"\r\n", 1)[0], answer[:200]

        # And each hostile connection is closed by the server within its deadline
        wait_for(
            lambda: watcher.open_count() == 0,
            timeout=BODY_TIMEOUT + HEADER_TIMEOUT + 2 * SLACK,
            interval=0.2,
            what="the server to close every hostile connection",
        )
    held = {kind: max(c.closed_after or 0 for c in conns if c.kind == kind) for kind in kinds}
    print(
        "longest held, by kind:", {k: round(v, 1) for k, v in held.items()}, f"slowest answer {slowest:.3f} s"
    )
    for kind in ("headers_never_finished", "headers_dripped", "idle"):
        assert held[kind] <= HEADER_TIMEOUT + SLACK, held
    for kind in ("body_never_sent", "body_dripped"):
        assert held[kind] <= BODY_TIMEOUT + SLACK, held
        # Those whose headers were in were told why, in the receiver's JSON
        for conn in (c for c in conns if c.kind == kind):
            assert conn.received.startswith(b"HTTP/1.1 408"), conn.received[:100]
            assert b'"error":"request_timeout"' in conn.received.replace(b" ", b"")

    # And only the normal pushes were stored
    assert redis_client.xlen(keys.INBOX) == pushes
    assert proc.alive()


def _raw(port: int, request: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize(
    ("request_head", "status", "code"),
    [
        (
            "POST /v1/pushes HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            400,
            "bad_request",
        ),
        ("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + "a" * 9000 + "\r\n\r\n", 431, "headers_too_large"),
        ("GET /" + "a" * 5000 + " HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
        ("NOT-HTTP\r\n\r\n", 400, "bad_request"),
    ],
    ids=["content-length-and-chunked", "oversized-header", "oversized-request-line", "not-http"],
)
def test_malformed_http_that_gunicorn_refuses_gets_the_receivers_json_error(
    receiver: tuple[int, Process], request_head: str, status: int, code: str
) -> None:
    port, _ = receiver
    answer = _raw(port, request_head.encode())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert b"Content-Type: application/json" in head
    error = json.loads(body)
    assert error["error"] == code
    assert "aaaa" not in error["detail"]  # never echoes what was sent
