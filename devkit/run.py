"""``make run``: the whole pipeline on one machine, on embedded defaults; Ctrl-C stops it all.

Starts what is missing and nothing more: a private Redis when ``REDIS_URL`` is not set, the AEP
sandbox when no AEP credentials are set, then the receiver (gunicorn), a Celery worker, beat
and Flower. Data and logs go under ``var/`` (git-ignored).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

import redis

from devkit.redisbin import redis_server_binary
from devkit.sandbox import SandboxConfig

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"
BIN = Path(sys.executable).parent

REDIS_PORT = int(os.environ.get("RAINBRIDGE_REDIS_PORT", "6390"))
RECEIVER_PORT = int(os.environ.get("RAINBRIDGE_RECEIVER_PORT", "8000"))
SANDBOX_PORT = int(os.environ.get("RAINBRIDGE_SANDBOX_PORT", "8088"))
FLOWER_PORT = int(os.environ.get("RAINBRIDGE_FLOWER_PORT", "5555"))
#: The sandbox's built-in client, inlet and org, used when no AEP credentials are set.
SANDBOX = SandboxConfig()


def _secret(name: str) -> str:
    """A random value kept in var/ so the URLs and tokens stay the same from one run to the next."""
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


class Supervisor:
    """Starts child processes in their own process groups and stops them all together."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``args``; its output goes to var/log/<name>.log."""
        log = open(VAR / "log" / f"{name}.log", "ab")  # noqa: SIM115 - open for the child's life
        proc = subprocess.Popen(
            args, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.children.append((name, proc))
        return proc

    def stop(self) -> None:
        """SIGTERM every child group (warm shutdown), then SIGKILL what is left after 20 s."""
        for _, proc in reversed(self.children):
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)

    def watch(self) -> str | None:
        """The name of a child that exited, if any."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return name
        return None


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)


def _wait_for_redis(url: str, timeout: float = 15) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.ping()
            return
        except redis.RedisError:
            if time.monotonic() > deadline:
                raise SystemExit(
                    f"rainbridge: Redis at {url} did not come up; see var/log/redis.log"
                ) from None
            time.sleep(0.1)
        finally:
            client.close()


def main() -> int:
    """Start everything, print how to use it, and wait for Ctrl-C."""
    (VAR / "log").mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    sup = Supervisor()
    notes: list[str] = []

    if not env.get("REDIS_URL"):
        (VAR / "redis").mkdir(exist_ok=True)
        sup.start(
            "redis",
            [
                redis_server_binary(), "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                "--dir", str(VAR / "redis"), "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--save", "",
            ],
            env,
        )  # fmt: skip
        env["REDIS_URL"] = f"redis://127.0.0.1:{REDIS_PORT}/0"
        notes.append(f"Redis (private, AOF on)   {env['REDIS_URL']}   data in var/redis/")
    _wait_for_redis(env["REDIS_URL"])

    if not env.get("AEP_CLIENT_ID") and not env.get("AEP_STREAMING_URL"):
        sandbox = f"http://127.0.0.1:{SANDBOX_PORT}"
        sup.start("sandbox", [str(BIN / "rainbridge"), "sandbox", "--port", str(SANDBOX_PORT)], env)
        env.update(
            AEP_STREAMING_URL=f"{sandbox}/collection/{SANDBOX.inlet_id}",
            AEP_IMS_URL=f"{sandbox}/ims/token/v3",
            AEP_CLIENT_ID=SANDBOX.client_id,
            AEP_CLIENT_SECRET=SANDBOX.client_secret,
            AEP_ORG_ID=SANDBOX.org_id,
            AEP_DATASET_ID="sandbox-dataset",
            AEP_SCHEMA_ID="https://ns.adobe.com/sandbox/schemas/rainfocus-experience-event",
            AEP_TENANT_ID="sandbox",
        )
        notes.append(f"AEP sandbox (events page) {sandbox}/")

    token = env.setdefault("RECEIVER_TOKENS", _secret("receiver-token")).split(",")[0]
    inlet = env.setdefault("RECEIVER_INLET_ID", _secret("receiver-inlet"))
    receiver = f"http://127.0.0.1:{RECEIVER_PORT}"

    check = subprocess.run(
        [str(BIN / "rainbridge"), "check"], env=env, capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        print(check.stdout + check.stderr, file=sys.stderr)
        return 2

    sup.start(
        "receiver",
        [
            str(BIN / "gunicorn"),
            "--bind",
            f"127.0.0.1:{RECEIVER_PORT}",
            "--workers",
            "2",
            "receiver.app:create_app()",
        ],
        env,
    )
    sup.start(
        "worker",
        [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO", "--concurrency", "2",
         "--queues", "ingest,deliver", "--hostname", "worker@%h"],
        env,
    )  # fmt: skip
    sup.start(
        "beat",
        [str(BIN / "celery"), "-A", "worker.app", "beat", "--schedule", str(VAR / "beat-schedule")],
        env,
    )
    sup.start(
        "flower",
        [str(BIN / "celery"), "-A", "worker.app", "flower", "--address=127.0.0.1", f"--port={FLOWER_PORT}"],
        env,
    )
    notes += [
        f"Receiver                  {receiver}   (POST /v1/pushes, /collection/{inlet[:6]}…)",
        f"Metrics (Prometheus)      {receiver}/metrics",
        f"Flower                    http://127.0.0.1:{FLOWER_PORT}/",
        "Logs                      var/log/*.log",
    ]
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    curl = (
        f"curl -sS -X POST {receiver}/v1/pushes -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' "
        f'-d \'{{"transmissionId": "demo-{int(time.time())}", "eventType": "SessionScheduled", '
        f'"timestamp": "{stamp}", "event": {{"name": "Adobe Summit"}}, '
        '"attendee": {"email": "ada@example.com", "attendeeId": "1619119968857001fvLB"}, '
        '"session": {"code": "GS3", "title": "Inspiration Keynote", "length": 90}}\''
    )
    print("\nrainbridge is running:\n  " + "\n  ".join(notes))
    print(f"\nFor `rainbridge status` in another shell:  export REDIS_URL={env['REDIS_URL']}")
    print(f"\nSend a push:\n  {curl}\n\nCtrl-C stops everything.", flush=True)

    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)
    exited = None
    while not stopping and exited is None:
        time.sleep(0.5)
        exited = sup.watch()
    if exited:
        print(f"\nrainbridge: {exited} exited; see var/log/{exited}.log. Stopping the rest.", file=sys.stderr)
    print("\nstopping…", flush=True)
    sup.stop()
    return 1 if exited else 0


if __name__ == "__main__":
    sys.exit(main())
