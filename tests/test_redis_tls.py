"""Managed Redis: TLS with a CA made here, and the README's least-privilege ACL user, end to end."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from flask import Flask

from devkit import samples
from devkit.procs import BIN, ROOT, Process, celery_worker, free_port, gunicorn, wait_for
from devkit.redisbin import redis_server_binary
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

PASSWORD = "acl-password-0123456789"
README_ACL = re.compile(r"^user rainbridge on >PASSWORD (.+)$", re.MULTILINE)


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(where: Path, name: str) -> Path:
    """A CA, and (for the first one) a server certificate for 127.0.0.1 signed by it."""
    where.mkdir(parents=True, exist_ok=True)
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
            "-days", "1", "-subj", f"/CN=rainbridge test {name}", cwd=where)  # fmt: skip
    return where / f"{name}.crt"


@dataclass
class TlsRedis:
    """redis-server speaking only TLS, with the README's ACL user and no default user."""

    port: int
    ca: Path
    other_ca: Path
    proc: subprocess.Popen[bytes]

    def url(self, *, password: str = PASSWORD, ca: Path | None = None) -> str:
        return (
            f"rediss://rainbridge:{password}@127.0.0.1:{self.port}/0"
            f"?ssl_ca_certs={ca or self.ca}&ssl_cert_reqs=required"
        )

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url(), decode_responses=True, socket_timeout=5)


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    certs = tmp_path / "certs"
    ca = make_ca(certs, "ca")
    other_ca = make_ca(certs, "other")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=certs)  # fmt: skip
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf", cwd=certs)  # fmt: skip
    found = README_ACL.search((ROOT / "README.md").read_text())
    assert found, "the README prints the ACL line"
    rules = found.group(1).split()
    port = free_port()
    args = [
        redis_server_binary(), "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1",
        "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(ca), "--tls-auth-clients", "no",
        "--dir", str(tmp_path), "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction",
        "--logfile", str(tmp_path / "redis.log"),
        "--user", "default", "off",
        "--user", "rainbridge", "on", f">{PASSWORD}", *rules,
        "--user", "admin", "on", ">admin-password-0123456789", "~*", "&*", "+@all",
    ]  # fmt: skip
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsRedis(port, ca, other_ca, proc)
    try:
        wait_for(lambda: server.client().ping(), timeout=10, what="redis-server with TLS")
        yield server
    finally:
        proc.kill()
        proc.wait(timeout=10)


def admin(server: TlsRedis) -> redis.Redis:
    url = server.url().replace(f"rainbridge:{PASSWORD}", "admin:admin-password-0123456789")
    return redis.Redis.from_url(url, decode_responses=True, socket_timeout=5)


def rainbridge(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "rainbridge"), *args],
        env=to_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.slow
def test_the_whole_pipeline_runs_over_tls_as_the_least_privileged_user(
    tls_redis: TlsRedis,
    settings: Settings,
    sandbox: SandboxClient,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    managed = dataclasses.replace(settings, redis_url=tls_redis.url())
    # Given a worker (its Celery broker included) and the receiver on that Redis
    pipeline = Pipeline(managed, tmp_path)
    pipeline.start_worker()
    try:
        receiver = make_app(managed).test_client()
        pushes = [samples.push() for _ in range(10)]
        for push in pushes:
            answer = receiver.post("/v1/pushes", json=push, headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 202
        # Then every push is delivered
        events = sandbox.wait_for_events(10)
        assert sorted(e["transmissionId"] for e in events) == sorted(p["transmissionId"] for p in pushes)
        # and the operator's commands work as that user too
        wait_for(lambda: "housekeep ran" in rainbridge(managed, "status").stdout, timeout=90, interval=1)
        assert rainbridge(managed, "dlq", "list").returncode == 0
    finally:
        pipeline.stop()
    # and Redis refused that user nothing: the ACL line is enough
    assert admin(tls_redis).acl_log() == []
    # (and +config|get let the start-up check read appendonly and maxmemory-policy)
    assert "cannot read CONFIG" not in pipeline.logs()


def start_worker(settings: Settings, tmp_path: Path) -> Process:
    return celery_worker(to_env(settings), tmp_path / "worker.log", name="doomed")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        ("ca", "REDIS_URL: Redis's TLS certificate is not trusted"),
        ("password", "REDIS_URL: Redis refused the user and password"),
    ],
)
def test_a_wrong_ca_or_password_stops_each_process_at_start_with_one_line(
    tls_redis: TlsRedis, settings: Settings, tmp_path: Path, wrong: str, said: str
) -> None:
    url = (
        tls_redis.url(ca=tls_redis.other_ca) if wrong == "ca" else tls_redis.url(password="not-it-0123456789")
    )
    bad = dataclasses.replace(settings, redis_url=url)

    worker = start_worker(bad, tmp_path)
    receiver = gunicorn(to_env(bad), free_port(), tmp_path / "gunicorn.log")
    try:
        for proc in (worker, receiver):
            wait_for(lambda proc=proc: not proc.alive(), timeout=30, what="the process to stop")
            lines = [line for line in proc.output().splitlines() if "configuration error" in line]
            assert lines and said in lines[0], proc.output()[-2000:]
            assert PASSWORD not in proc.output() and "not-it-0123456789" not in proc.output()
    finally:
        worker.stop()
        receiver.stop()
