"""Redis behind Sentinel: the receiver, the stages and Celery all find the master through it."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from devkit import samples
from devkit.procs import RedisServer, celery_worker, free_port, wait_for
from devkit.redisbin import redis_server_binary
from receiver.app import create_app
from shared import redisconn
from shared.settings import ConfigError, Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

MASTER = "rainbridge-master"


SENTINEL_PASSWORD = "sentinel-password-0123456789"


@pytest.fixture(params=["open", "guarded"])
def sentinel_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A private Redis and one Sentinel watching it (asking for a password, when guarded); its URL."""
    server = RedisServer(tmp_path / "master")
    server.start()
    port = free_port()
    conf = tmp_path / "sentinel.conf"
    guarded = request.param == "guarded"
    conf.write_text(
        f"port {port}\nbind 127.0.0.1\nsentinel monitor {MASTER} 127.0.0.1 {server.port} 1\n"
        + (f"requirepass {SENTINEL_PASSWORD}\n" if guarded else "")
    )
    proc = subprocess.Popen(
        [redis_server_binary(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        url = f"sentinel://127.0.0.1:{port}/0" + (
            f"?sentinel_password={SENTINEL_PASSWORD}" if guarded else ""
        )
        probe = Settings(redis_url=url, redis_sentinel_master=MASTER)
        wait_for(lambda: redisconn.connect(probe).ping(), what="the master through Sentinel")
        yield url
    finally:
        proc.kill()
        proc.wait(timeout=10)
        server.kill()


def test_a_sentinel_url_needs_the_master_name() -> None:
    with pytest.raises(ConfigError, match="REDIS_SENTINEL_MASTER"):
        Settings.from_env({"REDIS_URL": "sentinel://10.0.0.1:26379;sentinel://10.0.0.2:26379/0"})
    with pytest.raises(ConfigError, match="REDIS_URL"):
        Settings.from_env({"REDIS_URL": "redis://a:6379;redis://b:6379"})


def test_the_pipeline_runs_through_sentinel(
    settings: Settings, sentinel_url: str, sandbox: SandboxClient, tmp_path: Path
) -> None:
    behind = dataclasses.replace(settings, redis_url=sentinel_url, redis_sentinel_master=MASTER)
    app = create_app(behind)
    fleet = Pipeline(behind, tmp_path)
    try:
        fleet.start_worker()
        pushes = [samples.push() for _ in range(5)]
        http = app.test_client()
        for push in pushes:
            assert (
                http.post("/v1/pushes", json=push, headers={"Authorization": f"Bearer {TOKEN}"}).status_code
                == 202
            )
        events = sandbox.wait_for_events(5)
        assert {e["transmissionId"] for e in events} == {p["transmissionId"] for p in pushes}
    finally:
        fleet.stop()
        app.extensions["rainbridge"].redis.close()


def test_a_sentinel_url_reads_the_user_the_database_and_tls_options() -> None:
    raw = (
        "sentinel://rainbridge:p%40ss@10.0.0.1:26380;sentinel://10.0.0.2/3"
        "?ssl_ca_certs=/etc/ssl/ca.pem&ssl_cert_reqs=required"
    )
    named = Settings.from_env({"REDIS_URL": raw, "REDIS_SENTINEL_MASTER": MASTER}).sentinels
    assert named.hosts == (("10.0.0.1", 26380), ("10.0.0.2", 26379))
    assert (named.db, named.username, named.password) == (3, "rainbridge", "p@ss")
    assert named.tls == {"ssl_ca_certs": "/etc/ssl/ca.pem", "ssl_cert_reqs": "required"}
    # Celery is told the user and the database on every Sentinel, and TLS apart from the URL.
    assert named.broker_url == (
        "sentinel://rainbridge:p%40ss@10.0.0.1:26380/3;sentinel://rainbridge:p%40ss@10.0.0.2:26379/3"
    )
    plain = Settings.from_env(
        {"REDIS_URL": "sentinel://a:1;sentinel://b:2/0", "REDIS_SENTINEL_MASTER": MASTER}
    )
    assert plain.sentinels.tls == {}
    assert Settings(redis_url="sentinel://a:1/0?ssl=true").sentinels.tls == {"ssl_cert_reqs": "required"}
    assert Settings(redis_url="sentinel://a:1/0?ssl=false&ssl_ca_certs=/x").sentinels.tls == {}
    # Sentinels that ask for a password of their own are told it apart from the master's
    guarded = Settings(redis_url="sentinel://a:1/0?sentinel_password=s%26cret&ssl_ca_certs=/x").sentinels
    assert guarded.sentinel_kwargs == {
        "ssl": True,
        "ssl_ca_certs": "/x",
        "ssl_cert_reqs": "required",
        "password": "s&cret",
    }
    assert guarded.password is None


@pytest.mark.parametrize(
    ("raw", "said"),
    [
        ("sentinel://a:1/0?ssl_ca=/x", "unknown option 'ssl_ca'"),
        ("sentinel://a:1?ssl=true;sentinel://b:2/0", "TLS options once, at the end"),
        ("sentinel://a:1/1;sentinel://b:2/0", "one database"),
        ("sentinel://a:1;sentinel://b:2/zero", "one database"),
        ("sentinel://a:1/0?ssl_cert_reqs=maybe", "ssl_cert_reqs= other than"),
        ("sentinel://a:1/0?sentinel_username=u", "sentinel_username without sentinel_password"),
    ],
)
def test_a_malformed_sentinel_url_is_refused_naming_the_variable(raw: str, said: str) -> None:
    with pytest.raises(ConfigError, match="REDIS_URL") as refused:
        Settings.from_env({"REDIS_URL": raw, "REDIS_SENTINEL_MASTER": MASTER})
    assert said in str(refused.value)


@pytest.mark.parametrize("sentinel_url", ["guarded"], indirect=True)
def test_a_wrong_sentinel_password_stops_the_worker_at_start_with_one_line(
    settings: Settings, sentinel_url: str, tmp_path: Path
) -> None:
    wrong = sentinel_url.replace(SENTINEL_PASSWORD, "not-it-0123456789")
    worker = celery_worker(
        to_env(dataclasses.replace(settings, redis_url=wrong, redis_sentinel_master=MASTER)),
        tmp_path / "worker.log",
        name="refused",
    )
    try:
        wait_for(lambda: not worker.alive(), timeout=30, what="the worker to stop")
        lines = [line for line in worker.output().splitlines() if "configuration error" in line]
        assert lines and "REDIS_URL: a Sentinel refused the password" in lines[0], worker.output()[-2000:]
        assert "not-it-0123456789" not in worker.output()
    finally:
        worker.stop()
