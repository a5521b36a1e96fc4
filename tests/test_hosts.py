"""Several hosts for real: a receiver host and worker hosts in network namespaces of their own.

The bed: a bridge in this namespace carries Redis (10.77.0.1) and the AEP sandbox (10.77.0.10);
the receiver host (10.77.0.30) runs gunicorn as the README says, on port 8000, and each worker
host is a network namespace on it (10.77.0.2N) whose worker runs under a hostname of its own
(``unshare --uts``), so rainbridge sees separate hosts; pushes come from this namespace over
HTTP. Links are cut with routes inside a host's namespace; a link is made slow by a delaying
relay (``devkit.slowlink``: this kernel has no ``netem``) and lossy by iptables ``statistic``
rules that drop packets at random on arrival, at both ends. Traffic stays on the bridge and in
the namespaces. It needs root, iproute2 and iptables (``.ci/run`` installs them); under
``CI=true`` a bed that cannot be built fails the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from devkit import samples
from devkit.local import local_settings, settings_env
from devkit.procs import BIN, Process, free_port, wait_for
from devkit.redisbin import redis_server_binary
from devkit.sandbox import SandboxServer
from devkit.sandbox.client import SandboxClient
from devkit.slowlink import SlowLink
from shared import keys
from shared.settings import Settings
from tests.helpers import SANDBOX, TOKEN
from worker import pause

REDIS_IP, AEP_IP, RECEIVER_IP = "10.77.0.1", "10.77.0.10", "10.77.0.30"
#: The name ``unshare --uts`` gives a host: the worker's hostname is what rainbridge tells hosts by.
NAME_IT = 'hostname "$0" && exec "$@"'


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=10)


def iptables(namespace: str | None, *args: str) -> str:
    """iptables in a host's namespace (or, with None, this one); its output."""
    where = ["ip", "netns", "exec", namespace] if namespace else []
    done = subprocess.run([*where, "iptables", *args], check=True, capture_output=True, timeout=10, text=True)
    return done.stdout


@dataclass
class Bed:
    """The bridge, Redis, the sandbox and the worker hosts; everything undone by ``close``."""

    tag: str
    workdir: Path
    hosts: list[str] = field(default_factory=list)
    receiver_host: str = ""
    procs: list[Process] = field(default_factory=list)
    redis_proc: subprocess.Popen[bytes] | None = None
    sandbox: SandboxServer | None = None
    redis_port: int = 0
    #: (namespace or None, rule) for each drop rule added, so ``close`` takes them out again.
    rules: list[tuple[str | None, list[str]]] = field(default_factory=list)
    links: list[SlowLink] = field(default_factory=list)

    @property
    def bridge(self) -> str:
        return f"rbb{self.tag}"

    def build(self) -> None:
        ip("link", "add", self.bridge, "type", "bridge")
        ip("addr", "add", f"{REDIS_IP}/24", "dev", self.bridge)
        ip("addr", "add", f"{AEP_IP}/24", "dev", self.bridge)
        ip("link", "set", self.bridge, "up")
        for n in (1, 2):
            self.hosts.append(self._host(f"w{n}", f"10.77.0.2{n}"))
        self.receiver_host = self._host("r", RECEIVER_IP)
        self.redis_port = free_port()
        self.redis_proc = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.redis_port), "--bind", f"127.0.0.1 {REDIS_IP}",
             "--dir", str(self.workdir), "--appendonly", "yes", "--save", "", "--protected-mode", "no",
             "--maxmemory-policy", "noeviction"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: self.local_redis().ping(), timeout=10, what="redis-server on the bridge")
        self.sandbox = SandboxServer(SANDBOX, host=AEP_IP, port=free_port())
        self.sandbox.start()

    def _host(self, name: str, address: str) -> str:
        """A namespace on the bridge at ``address``; its name."""
        namespace, outside = f"rb{self.tag}{name}", f"rbv{self.tag}{name}"
        ip("netns", "add", namespace)
        ip("link", "add", outside, "type", "veth", "peer", "name", "eth0", "netns", namespace)
        ip("link", "set", outside, "master", self.bridge, "up")
        ip("-n", namespace, "addr", "add", f"{address}/24", "dev", "eth0")
        ip("-n", namespace, "link", "set", "eth0", "up")
        ip("-n", namespace, "link", "set", "lo", "up")
        return namespace

    def local_redis(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, decode_responses=True, socket_timeout=5)

    def settings(self, redis_url: str | None = None) -> Settings:
        """What every host runs with: Redis and AEP at their bridge addresses."""
        assert self.sandbox is not None
        return local_settings(
            redis_url or f"redis://{REDIS_IP}:{self.redis_port}/0",
            self.sandbox.url,
            receiver_tokens=(TOKEN,),
            aep_batch_max_wait_ms=200,
            pending_claim_seconds=3,
        )

    def start_worker(self, n: int, redis_url: str | None = None, timeout: float = 40) -> Process:
        """A worker on host ``n``, started as the README says, under the hostname ``host<n>``."""
        namespace, hostname = self.hosts[n - 1], f"host{n}"
        args = ["ip", "netns", "exec", namespace, "unshare", "--uts", "sh", "-c", NAME_IT, hostname,
                str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO",
                "--concurrency", "2", "--hostname", f"w{n}@%h"]  # fmt: skip
        proc = Process(args, settings_env(self.settings(redis_url)), self.workdir / f"host{n}.log")
        self.procs.append(proc)
        wait_for(
            lambda: "ready." in proc.output() or not proc.alive(),
            timeout=timeout,
            what=f"the worker on host{n}",
        )
        assert proc.alive(), proc.output()[-3000:]
        return proc

    def start_receiver(self) -> str:
        """gunicorn on the receiver host, with the README's command; its base URL."""
        args = ["ip", "netns", "exec", self.receiver_host, "unshare", "--uts", "sh", "-c", NAME_IT,
                "receiver", str(BIN / "gunicorn"), "--bind", "0.0.0.0:8000", "--workers", "2",
                "receiver.app:create_app()"]  # fmt: skip
        proc = Process(args, settings_env(self.settings()), self.workdir / "receiver.log")
        self.procs.append(proc)
        url = f"http://{RECEIVER_IP}:8000"
        wait_for(
            lambda: not proc.alive() or requests.get(f"{url}/readyz", timeout=2).ok,
            timeout=40,
            what="the receiver host",
        )
        assert proc.alive(), proc.output()[-3000:]
        return url

    def unplug(self, n: int) -> None:
        """Host ``n``'s link goes down: connections it has are cut too, not just new ones."""
        ip("-n", self.hosts[n - 1], "link", "set", "eth0", "down")

    def plug(self, n: int) -> None:
        ip("-n", self.hosts[n - 1], "link", "set", "eth0", "up")

    def cut_from(self, n: int, address: str) -> None:
        """Host ``n`` can no longer reach ``address`` (its other links stay)."""
        ip("-n", self.hosts[n - 1], "route", "add", "unreachable", f"{address}/32")

    def mend_route(self, n: int, address: str) -> None:
        ip("-n", self.hosts[n - 1], "route", "del", "unreachable", f"{address}/32")

    def slow_redis(self, n: int, *, round_trip: float, loss: float) -> tuple[str, SlowLink]:
        """A Redis URL for host ``n`` over a link with ``round_trip`` s added and ``loss`` of packets dropped.

        Each way: half the round trip in the relay, and ``loss`` of the packets that arrive dropped.
        """
        port = free_port()
        link = SlowLink((REDIS_IP, port), ("127.0.0.1", self.redis_port), delay=round_trip / 2)
        link.start()
        self.links.append(link)
        host_ip = f"10.77.0.2{n}"
        odds = ["-m", "statistic", "--mode", "random", "--probability", str(loss), "-j", "DROP"]
        for namespace, rule in (
            (None, ["INPUT", "-s", host_ip, "-d", REDIS_IP, "-p", "tcp", "--dport", str(port), *odds]),
            (
                self.hosts[n - 1],
                ["INPUT", "-s", REDIS_IP, "-d", host_ip, "-p", "tcp", "--sport", str(port), *odds],
            ),
        ):
            iptables(namespace, "-A", *rule)
            self.rules.append((namespace, rule))
        return f"redis://{REDIS_IP}:{port}/0", link

    def dropped(self) -> int:
        """Packets the lossy links' rules have dropped so far, both ends together."""
        total = 0
        for namespace, rule in self.rules:
            flag = next(arg for arg in rule if arg in ("--dport", "--sport"))
            port = f"{flag[2]}pt:{rule[rule.index(flag) + 1]}"  # as iptables -L prints it: dpt:6380
            listing = iptables(namespace, "-L", rule[0], "-v", "-x", "-n")
            total += sum(
                int(line.split()[0]) for line in listing.splitlines() if "DROP" in line and port in line
            )
        return total

    def cut_from_aep(self, n: int) -> None:
        self.cut_from(n, AEP_IP)

    def mend(self, n: int) -> None:
        self.mend_route(n, AEP_IP)

    def close(self) -> None:
        for proc in self.procs:
            proc.stop()
        for link in self.links:
            link.stop()
        for namespace, rule in self.rules:
            with contextlib.suppress(subprocess.CalledProcessError):
                iptables(namespace, "-D", *rule)
        if self.sandbox is not None:
            self.sandbox.stop()
        if self.redis_proc is not None:
            self.redis_proc.kill()
            self.redis_proc.wait(timeout=10)
        for namespace in [*self.hosts, self.receiver_host]:
            with contextlib.suppress(subprocess.CalledProcessError):
                if namespace:
                    ip("netns", "del", namespace)
        with contextlib.suppress(subprocess.CalledProcessError):
            ip("link", "del", self.bridge)


@pytest.fixture
def bed(tmp_path: Path) -> Iterator[Bed]:
    built = Bed(tag=str(os.getpid() % 1000), workdir=tmp_path)
    try:
        built.build()
    except (subprocess.CalledProcessError, FileNotFoundError, PermissionError) as exc:
        built.close()
        stderr = getattr(exc, "stderr", b"") or b""
        why = f"cannot build network namespaces here: {exc} {stderr.decode(errors='replace')}".strip()
        if os.environ.get("CI"):
            pytest.fail(why)
        pytest.skip(why)
    try:
        yield built
    finally:
        built.close()


@dataclass
class Receiver:
    """RainFocus's side: pushes over HTTP to the receiver host, one connection kept open."""

    url: str
    http: requests.Session = field(default_factory=requests.Session)

    def post_pushes(self, n: int) -> list[str]:
        """Post ``n`` new pushes (each acknowledged); their transmissionIds."""
        pushes = [samples.push() for _ in range(n)]
        for push in pushes:
            answer = self.http.post(
                f"{self.url}/v1/pushes", json=push, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10
            )
            assert answer.status_code == 202, answer.text
        return [p["transmissionId"] for p in pushes]


@pytest.mark.slow
def test_a_host_cut_off_from_aep_backs_off_alone_while_the_other_keeps_delivering(
    bed: Bed,
) -> None:
    assert bed.sandbox is not None
    sandbox = SandboxClient(bed.sandbox.url)
    client = bed.local_redis()
    host1 = bed.start_worker(1)
    host2 = bed.start_worker(2)
    receiver = Receiver(bed.start_receiver())

    def post(n: int) -> list[str]:
        return receiver.post_pushes(n)

    # Given both hosts delivering
    first = post(10)
    sandbox.wait_for_events(10, timeout=30)

    # When host1 loses its route to AEP (and only to AEP: Redis is still reachable)
    bed.cut_from_aep(1)
    second = []
    fleet_paused = False
    deadline = time.monotonic() + 12
    while time.monotonic() < deadline:
        second += post(5)
        fleet_paused = fleet_paused or client.get(keys.PAUSE) is not None
        time.sleep(0.25)

    # Then host1 found out and backs off on its own; the fleet was never paused for it
    wait_for(lambda: "AEP unreachable from host1" in host1.output(), timeout=30, what="host1 to try and fail")
    assert not fleet_paused
    assert int(client.hget(pause.HOST_FAILURES, "host1") or 0) >= 1
    # and host2 delivered everything, the pushes host1 had in hand included
    events = sandbox.wait_for_events(len(first) + len(second), timeout=60)
    delivered = {e["transmissionId"] for e in events}
    assert set(first + second) <= delivered

    # When the route comes back and host2 is gone, host1 (the only worker left) delivers again
    bed.mend(1)
    host2.stop()
    assert not host2.alive()
    third = post(20)
    wait_for(
        lambda: set(third) <= {e["transmissionId"] for e in sandbox.events()},
        timeout=120,
        what="host1 to deliver again once its back-off ends",
    )
    readers = {c["name"].split(":")[0] for c in client.xinfo_consumers(keys.OUTBOX, keys.OUTBOX_GROUP)}
    assert "host1" in readers and "host2" in readers  # two hosts, as rainbridge saw them


def held(client: redis.Redis, host: str) -> int:
    """Outbox entries a host's processes hold (read, not yet settled)."""
    return sum(
        c["pending"]
        for c in client.xinfo_consumers(keys.OUTBOX, keys.OUTBOX_GROUP)
        if c["name"].split(":")[0] == host
    )


@pytest.mark.slow
def test_a_host_cut_off_mid_batch_is_taken_over_and_recovers_by_itself(
    bed: Bed,
) -> None:
    assert bed.sandbox is not None
    sandbox = SandboxClient(bed.sandbox.url)
    client = bed.local_redis()
    host1 = bed.start_worker(1)
    receiver = Receiver(bed.start_receiver())
    acked: list[str] = []

    def post(n: int) -> list[str]:
        sent = receiver.post_pushes(n)
        acked.extend(sent)
        return sent

    # Given host1 alone, in the middle of a slow AEP request with a batch in hand
    sandbox.faults(slow_ms=3000)
    batch = post(30)
    wait_for(lambda: held(client, "host1") == 30, timeout=30, what="host1 to hold the batch")
    # (its request is at AEP, which answers it 3 s later)
    wait_for(lambda: len(sandbox.events()) == 30, timeout=30, what="host1's request at AEP")

    # When host1's link goes down mid-batch (Redis gone for it), and host2 is there
    bed.unplug(1)
    cut_at = time.monotonic()
    sandbox.faults(slow_ms=0)
    bed.start_worker(2)
    ready_at = time.monotonic()

    # Then host2 takes the batch over and sends it again (host1's answer never reached Redis)
    def taken_over() -> bool:
        copies = [e["transmissionId"] for e in sandbox.events()]
        return held(client, "host1") == 0 and all(copies.count(tid) >= 2 for tid in batch)

    wait_for(taken_over, timeout=60, what="host2 to take host1's batch over")
    print(
        f"\nhost1 cut off mid-batch: host2 sent its 30 again {time.monotonic() - cut_at:.1f} s after the cut"
        f" ({time.monotonic() - ready_at:.1f} s after host2 was ready; PENDING_CLAIM_SECONDS=3)"
    )

    # When the link comes back, host1 recovers by itself: with host2 gone, it delivers the rest
    bed.plug(1)
    bed.procs[-1].stop()
    more = post(20)
    wait_for(
        lambda: set(more) <= {e["transmissionId"] for e in sandbox.events()}, timeout=90, what="host1 again"
    )
    assert host1.alive()

    # and nothing was lost, and no push went out under two _ids
    ids_by_tid: dict[str, set[str]] = {}
    for event in sandbox.events():
        ids_by_tid.setdefault(event["transmissionId"], set()).add(event["id"])
    assert set(acked) <= set(ids_by_tid)
    assert all(len(ids) == 1 for ids in ids_by_tid.values())


def deliver(receiver: Receiver, sandbox: SandboxClient, n: int, timeout: float) -> tuple[list[str], float]:
    """Post ``n`` pushes and wait until AEP has them all; their transmissionIds and the seconds it took."""
    started = time.monotonic()
    sent = receiver.post_pushes(n)
    wait_for(
        lambda: set(sent) <= {e["transmissionId"] for e in sandbox.events()}, timeout=timeout, what="delivery"
    )
    return sent, time.monotonic() - started


@pytest.mark.slow
def test_latency_and_loss_between_a_worker_and_redis_slow_it_down_and_lose_nothing(
    bed: Bed,
) -> None:
    assert bed.sandbox is not None
    sandbox = SandboxClient(bed.sandbox.url)
    client = bed.local_redis()
    receiver = Receiver(bed.start_receiver())
    count = 300

    # Given host1 delivering over a clean link to Redis (the pace to compare with)
    host1 = bed.start_worker(1)
    clean, clean_s = deliver(receiver, sandbox, count, timeout=120)
    host1.stop()

    # When host2, alone, reaches Redis over a link with 200 ms added per round trip and 5% of
    # packets lost each way
    url, link = bed.slow_redis(2, round_trip=0.2, loss=0.05)
    probe = redis.Redis.from_url(url, socket_timeout=10)
    started = time.monotonic()
    probe.ping()
    probe_s = time.monotonic() - started
    bed.start_worker(2, redis_url=url, timeout=120)
    slow, slow_s = deliver(receiver, sandbox, count, timeout=600)

    # Then every push arrived, each under one _id and none twice, and nothing was dead-lettered
    ids_by_tid: dict[str, set[str]] = {}
    copies: dict[str, int] = {}
    for event in sandbox.events():
        ids_by_tid.setdefault(event["transmissionId"], set()).add(event["id"])
        copies[event["transmissionId"]] = copies.get(event["transmissionId"], 0) + 1
    assert set(clean + slow) <= set(ids_by_tid)
    assert all(len(ids) == 1 for ids in ids_by_tid.values())
    resent = sum(copies[tid] - 1 for tid in slow)
    assert client.xlen(keys.DEADLETTER) == 0
    # and the link was what it says: the worker's traffic went through it, delayed, and lost packets
    dropped = bed.dropped()
    assert link.connections > 0 and link.chunks > 0
    assert probe_s >= 0.2
    assert dropped > 0
    print(
        f"\nworker to Redis with 200 ms per round trip and 5% loss each way: {count} pushes in"
        f" {slow_s:.1f} s ({count / slow_s:.0f}/s) against {clean_s:.1f} s ({count / clean_s:.0f}/s)"
        f" on a clean link; {dropped} packets dropped, {link.connections} connections, 0 lost,"
        f" {resent} re-sent"
    )
