"""Fixtures: a private Redis, the AEP sandbox, settings, the receiver app, real workers."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import requests
from flask import Flask
from flask.testing import FlaskClient

from devkit.local import local_settings
from devkit.procs import RedisServer, free_port, gunicorn, wait_for
from devkit.sandbox import SandboxServer
from devkit.sandbox.client import SandboxClient
from receiver.app import create_app
from shared import metrics
from shared.settings import Settings
from tests.helpers import INLET, SANDBOX, TOKEN, Pipeline, to_env


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private redis-server for the session; tests that stop Redis make their own."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    """A client of the private Redis, emptied before each test."""
    if redis_server.proc is None or redis_server.proc.poll() is not None:
        redis_server.start()
    client = redis_server.client()
    # Counts this process made for an earlier test must not land in this test's metrics.
    metrics.RECORDER.discard()
    client.flushall()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The AEP sandbox, over real HTTP on a free port."""
    server = SandboxServer(SANDBOX)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> Iterator[SandboxClient]:
    """The sandbox, reset for this test, with helpers to read what it received."""
    client = SandboxClient(sandbox_server.url)
    client.reset()
    yield client
    client.reset()
    client.http.close()


@pytest.fixture
def settings(redis_server: RedisServer, sandbox_server: SandboxServer) -> Settings:
    """Settings for a test: the private Redis, the sandbox as AEP, short waits."""
    return local_settings(
        redis_server.url,
        sandbox_server.url,
        receiver_tokens=(TOKEN,),
        receiver_inlet_id=INLET,
        aep_batch_max_wait_ms=300,
        pending_claim_seconds=5,
        aep_timeout_seconds=5,
    )


@pytest.fixture
def session() -> Iterator[requests.Session]:
    """An HTTP session for a test's in-process AEP client."""
    with requests.Session() as http:
        yield http


@pytest.fixture
def make_app(redis_client: redis.Redis) -> Iterator[Callable[[Settings], Flask]]:
    """Build receiver apps for this test (with other settings), closing their Redis clients after."""
    apps: list[Flask] = []

    def make(settings: Settings) -> Flask:
        apps.append(create_app(settings))
        return apps[-1]

    yield make
    for built in apps:
        built.extensions["rainbridge"].redis.close()


@pytest.fixture
def app(settings: Settings, make_app: Callable[[Settings], Flask]) -> Flask:
    """The receiver app, built for this test."""
    return make_app(settings)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the receiver app."""
    return app.test_client()


@pytest.fixture
def pipeline(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[Pipeline]:
    """A running pipeline: one worker (2 processes). Tests may add workers or kill them."""
    running = Pipeline(settings, tmp_path)
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
def receiver_url(settings: Settings, redis_client: redis.Redis, tmp_path: Path) -> Iterator[str]:
    """The receiver under gunicorn (2 workers), over real HTTP."""
    port = free_port()
    proc = gunicorn(to_env(settings), port, tmp_path / "gunicorn.log")
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: requests.get(f"{url}/healthz", timeout=1).ok, timeout=20, what="gunicorn")
    yield url
    proc.stop()


#: Fixtures that start real processes (gunicorn, Celery workers): tests using them are `slow`.
PROCESS_FIXTURES = {"pipeline", "receiver_url"}
#: Modules whose every test starts processes of its own.
PROCESS_MODULES = {
    "test_aep_end_to_end", "test_crashes", "test_faults", "test_make_run", "test_mapping_reload",
    "test_overload", "test_sentinel", "test_slow_clients", "test_soak", "test_user_commands",
}  # fmt: skip


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the process-level tests `slow`, so `pytest -m "not slow"` is a quick loop."""
    for item in items:
        owner = getattr(item, "module", None)
        module = owner.__name__.rsplit(".", 1)[-1] if owner is not None else ""
        if module in PROCESS_MODULES or PROCESS_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
