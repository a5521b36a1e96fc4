"""Managed Redis: TLS with a CA made here, and the README's least-privilege ACL user, end to end.

Once with one TLS-only Redis, once with a TLS-only master and replica behind three TLS-only
Sentinels, the master SIGKILLed on the way.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from devkit import samples
from devkit.procs import BIN, ROOT, Process, celery_worker, free_port, gunicorn, wait_for
from devkit.redisbin import redis_server_binary
from shared.settings import Settings
from tests.helpers import TOKEN, Pipeline, SandboxClient, to_env

PASSWORD = "acl-password-0123456789"
ADMIN_PASSWORD = "admin-password-0123456789"
MASTER = "rainbridge-tls"
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


def make_certs(certs: Path) -> tuple[Path, Path]:
    """A CA, another CA, and a server certificate for 127.0.0.1 signed by the first; the two CAs."""
    ca = make_ca(certs, "ca")
    other_ca = make_ca(certs, "other")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=certs)  # fmt: skip
    (certs / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.crt", "-days", "1", "-extfile", "ext.cnf", cwd=certs)  # fmt: skip
    return ca, other_ca


def tls_options(certs: Path, port: int) -> list[str]:
    """redis-server options to listen on ``port`` with TLS only, and to speak TLS to its master."""
    return [
        "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-replication", "yes",
        "--tls-cert-file", str(certs / "server.crt"), "--tls-key-file", str(certs / "server.key"),
        "--tls-ca-cert-file", str(certs / "ca.crt"), "--tls-auth-clients", "no",
    ]  # fmt: skip


def users() -> list[str]:
    """No default user; the README's least-privileged rainbridge user; an admin for the test."""
    found = README_ACL.search((ROOT / "README.md").read_text())
    assert found, "the README prints the ACL line"
    return [
        "--user", "default", "off",
        "--user", "rainbridge", "on", f">{PASSWORD}", *found.group(1).split(),
        "--user", "admin", "on", f">{ADMIN_PASSWORD}", "~*", "&*", "+@all",
    ]  # fmt: skip


def durable(home: Path) -> list[str]:
    home.mkdir(parents=True, exist_ok=True)
    return ["--dir", str(home), "--appendonly", "yes", "--save", "", "--maxmemory-policy", "noeviction",
            "--logfile", str(home / "redis.log")]  # fmt: skip


@pytest.fixture
def tls_redis(tmp_path: Path) -> Iterator[TlsRedis]:
    certs = tmp_path / "certs"
    ca, other_ca = make_certs(certs)
    port = free_port()
    args = [redis_server_binary(), *tls_options(certs, port), *durable(tmp_path), *users()]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server = TlsRedis(port, ca, other_ca, proc)
    try:

        def answers() -> bool:
            with server.client() as client:  # closed each time: an unclosed TLS socket warns
                return bool(client.ping())

        wait_for(answers, timeout=10, what="redis-server with TLS")
        yield server
    finally:
        proc.kill()
        proc.wait(timeout=10)


def admin(server: TlsRedis) -> redis.Redis:
    url = server.url().replace(f"rainbridge:{PASSWORD}", f"admin:{ADMIN_PASSWORD}")
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
    with admin(tls_redis) as client:
        assert client.acl_log() == []
    # (and +config|get let the start-up check read appendonly and maxmemory-policy)
    assert "cannot read CONFIG" not in pipeline.logs()


def start_worker(settings: Settings, tmp_path: Path) -> Process:
    return celery_worker(to_env(settings), tmp_path / "worker.log", name="doomed")


def assert_each_process_stops_with(bad: Settings, tmp_path: Path, said: str) -> None:
    """A worker and the receiver on ``bad`` each stop at start, their first config line saying ``said``."""
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

    assert_each_process_stops_with(bad, tmp_path, said)


@dataclass
class TlsSentinels:
    """A master and a replica speaking only TLS, with the README's ACL user; three TLS Sentinels."""

    workdir: Path
    ca: Path
    other_ca: Path
    master_port: int = field(default_factory=free_port)
    replica_port: int = field(default_factory=free_port)
    sentinel_ports: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    #: The test's own clients, one per server, closed by ``close`` (an unclosed TLS socket warns).
    clients: dict[int, redis.Redis] = field(default_factory=dict)

    @property
    def certs(self) -> Path:
        return self.workdir / "certs"

    def start(self) -> None:
        replica_of = ["--replicaof", "127.0.0.1", str(self.master_port),
                      "--masteruser", "admin", "--masterauth", ADMIN_PASSWORD]  # fmt: skip
        for name, port, extra in (
            ("master", self.master_port, []),
            ("replica", self.replica_port, replica_of),
        ):
            args = [redis_server_binary(), *tls_options(self.certs, port), *durable(self.workdir / name),
                    *users(), *extra]  # fmt: skip
            self.procs[name] = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(
            lambda: self.admin(self.master_port).info("replication")["connected_slaves"] == 1,
            timeout=20,
            what="the replica to connect over TLS",
        )
        for n, port in enumerate(self.sentinel_ports):
            conf = self.workdir / f"sentinel{n}.conf"
            conf.write_text(
                f"dir {self.workdir}\n"
                f"sentinel monitor {MASTER} 127.0.0.1 {self.master_port} 2\n"
                f"sentinel auth-user {MASTER} admin\n"
                f"sentinel auth-pass {MASTER} {ADMIN_PASSWORD}\n"
                f"sentinel down-after-milliseconds {MASTER} 1000\n"
                f"sentinel failover-timeout {MASTER} 5000\n"
            )
            self.procs[f"sentinel{n}"] = subprocess.Popen(
                [redis_server_binary(), str(conf), "--sentinel", *tls_options(self.certs, port),
                 "--logfile", str(self.workdir / f"sentinel{n}.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip

    def url(self, *, password: str = PASSWORD, ca: Path | None = None) -> str:
        """REDIS_URL: the three Sentinels over TLS, the master's rainbridge user."""
        first, *rest = self.sentinel_ports
        return (
            f"sentinel://rainbridge:{password}@127.0.0.1:{first};"
            + "".join(f"sentinel://127.0.0.1:{port};" for port in rest)[:-1]
            + f"/0?ssl_ca_certs={ca or self.ca}&ssl_cert_reqs=required"
        )

    def admin(self, port: int) -> redis.Redis:
        """The test's client for the server (as admin) or Sentinel on ``port``."""
        if port not in self.clients:
            user = {} if port in self.sentinel_ports else {"username": "admin", "password": ADMIN_PASSWORD}
            self.clients[port] = redis.Redis(port=port, ssl=True, ssl_ca_certs=str(self.ca),
                                             decode_responses=True, socket_timeout=5, **user)  # fmt: skip
        return self.clients[port]

    def master(self) -> int:
        """The port the Sentinels name as master now (asked over TLS)."""
        return int(self.admin(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER)[1])

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        for proc in self.procs.values():
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def tls_sentinels(tmp_path: Path) -> Iterator[TlsSentinels]:
    ca, other_ca = make_certs(tmp_path / "certs")
    built = TlsSentinels(tmp_path, ca, other_ca)
    try:
        built.start()
        wait_for(lambda: built.master() == built.master_port, timeout=20, what="the Sentinels to agree")
        yield built
    finally:
        built.close()


@pytest.mark.slow
def test_the_pipeline_follows_a_failover_behind_sentinels_over_tls_as_the_least_privileged_user(
    tls_sentinels: TlsSentinels,
    settings: Settings,
    sandbox: SandboxClient,
    make_app: Callable[[Settings], Flask],
    tmp_path: Path,
) -> None:
    behind = dataclasses.replace(settings, redis_url=tls_sentinels.url(), redis_sentinel_master=MASTER)
    # Given a worker (its Celery broker included) and the receiver behind TLS Sentinels
    pipeline = Pipeline(behind, tmp_path)
    pipeline.start_worker()
    receiver = make_app(behind).test_client()

    def push_all(pushes: list[dict[str, Any]]) -> None:
        for push in pushes:
            # While there is no master the receiver answers 503, and RainFocus sends again.
            wait_for(
                lambda push=push: (
                    receiver.post(
                        "/v1/pushes", json=push, headers={"Authorization": f"Bearer {TOKEN}"}
                    ).status_code
                    == 202
                ),
                timeout=30,
                interval=0.2,
                what="the push to be acknowledged",
            )

    try:
        before = [samples.push() for _ in range(10)]
        push_all(before)
        sandbox.wait_for_events(10)
        # When the master is SIGKILLed and the Sentinels promote the replica
        tls_sentinels.procs["master"].kill()
        wait_for(
            lambda: tls_sentinels.master() == tls_sentinels.replica_port, timeout=30, what="the failover"
        )
        after = [samples.push() for _ in range(10)]
        push_all(after)
        # Then the receiver and the worker follow it over TLS: everything is delivered
        events = sandbox.wait_for_events(20, timeout=60)
        assert {p["transmissionId"] for p in before + after} <= {e["transmissionId"] for e in events}
        # and the operator's commands reach the new master too
        assert rainbridge(behind, "dlq", "list").returncode == 0
    finally:
        pipeline.stop()
    # and the new master refused the least-privileged user nothing
    assert tls_sentinels.admin(tls_sentinels.replica_port).acl_log() == []


@pytest.mark.slow
@pytest.mark.parametrize(
    ("wrong", "said"),
    [
        ("ca", "REDIS_URL: Redis's TLS certificate is not trusted"),
        ("password", "REDIS_URL: Redis refused the user and password"),
    ],
)
def test_a_wrong_ca_or_password_behind_sentinels_stops_each_process_at_start_with_one_line(
    tls_sentinels: TlsSentinels, settings: Settings, tmp_path: Path, wrong: str, said: str
) -> None:
    url = (
        tls_sentinels.url(ca=tls_sentinels.other_ca)
        if wrong == "ca"
        else tls_sentinels.url(password="not-it-0123456789")
    )
    bad = dataclasses.replace(settings, redis_url=url, redis_sentinel_master=MASTER)
    assert_each_process_stops_with(bad, tmp_path, said)
