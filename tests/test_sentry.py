"""Sentry for real: a local server records the envelopes; a request and a task fail; nothing leaks."""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
import requests

from devkit import samples
from devkit.procs import Process, free_port, wait_for
from shared import keys
from shared.settings import Settings
from tests.helpers import INLET, TOKEN, Pipeline, to_env

EMAIL = "ada.lovelace@example.com"


class Envelopes:
    """A stand-in Sentry ingest endpoint that keeps every envelope it is sent."""

    def __init__(self) -> None:
        self.received: list[str] = []
        envelopes = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = self.headers.get("Content-Encoding", "")
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                envelopes.received.append(body.decode("utf-8", errors="replace"))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.dsn = f"http://publickey@127.0.0.1:{self.server.server_address[1]}/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        found = []
        for envelope in self.received:
            for line in envelope.splitlines():
                try:
                    item = json.loads(line)
                except ValueError:
                    continue
                if isinstance(item, dict) and "exception" in item:
                    found.append(item)
        return found

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def envelopes() -> Iterator[Envelopes]:
    server = Envelopes()
    yield server
    server.close()


FAILING_APP = """
import sys
from receiver.app import create_app

app = create_app()

@app.post("/boom")
def boom():
    attendee = {"email": "%(email)s"}
    raise RuntimeError(f"could not store a push for {attendee['email']} (token %(token)s)")

app.run(host="127.0.0.1", port=int(sys.argv[1]))
"""


def assert_clean(text: str, settings: Settings) -> None:
    for secret in (EMAIL, TOKEN, INLET, settings.aep_client_secret or "-"):
        assert secret not in text


def test_a_failed_request_is_reported_scrubbed_with_environment_and_release(
    settings: Settings, envelopes: Envelopes, redis_client: redis.Redis, tmp_path: Path
) -> None:
    reporting = dataclasses.replace(settings, sentry_dsn=envelopes.dsn, sentry_environment="staging")
    port = free_port()
    script = tmp_path / "failing_app.py"
    script.write_text(FAILING_APP % {"email": EMAIL, "token": TOKEN})
    proc = Process([sys.executable, str(script), str(port)], to_env(reporting), tmp_path / "app.log")
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, what="the receiver")
        push = samples.push(attendee={"email": EMAIL})
        resp = requests.post(
            f"{url}/boom", json=push, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5
        )
        assert resp.status_code == 500
        assert EMAIL not in resp.text and TOKEN not in resp.text

        (event,) = wait_for(envelopes.events, timeout=15, what="the Sentry event")
        assert event["environment"] == "staging"
        assert event["release"].startswith("rainbridge@")
        assert event["tags"]["component"] == "receiver"
        assert "RuntimeError" in json.dumps(event["exception"])
        assert_clean("\n".join(envelopes.received), reporting)
    finally:
        proc.stop()


def test_a_failed_task_is_reported_scrubbed(
    settings: Settings, envelopes: Envelopes, redis_client: redis.Redis, tmp_path: Path
) -> None:
    reporting = dataclasses.replace(settings, sentry_dsn=envelopes.dsn)
    fleet = Pipeline(reporting, tmp_path)
    try:
        # Given an outbox key of the wrong type, so the ingest hand-off fails in Redis
        redis_client.set(keys.OUTBOX, "not a stream")
        redis_client.xadd(
            keys.INBOX, {"push": json.dumps(samples.push(attendee={"email": EMAIL})), "receipt": "t"}
        )
        fleet.start_worker()

        events = wait_for(envelopes.events, timeout=30, what="the Sentry event of the failed task")
        assert any(e["tags"].get("component") == "worker" for e in events)
        assert any("WRONGTYPE" in json.dumps(e["exception"]) for e in events)
        assert_clean("\n".join(envelopes.received), reporting)
        # The push is not lost: it waits in the inbox for the hand-off to work again
        assert redis_client.xlen(keys.INBOX) == 1
    finally:
        fleet.stop()
