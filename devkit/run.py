"""``make run``: the whole pipeline on one machine, on embedded defaults; Ctrl-C stops it all.

Starts what is missing and nothing more: a private Redis when ``REDIS_URL`` is not set, the AEP
sandbox when no AEP credentials are set, then the receiver (gunicorn), a Celery worker and
Flower, each with the command the README gives. It waits for each to answer before going on, and
if anything fails it stops everything it started and says why in one line. Children die with it
(even on a SIGKILL of this process), and a later run stops any a crashed run left behind. Data
and logs go under ``var/`` (git-ignored; ``RAINBRIDGE_VAR_DIR`` moves it).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis
import requests

from devkit import ports, procfs
from devkit.local import local_settings, settings_env, setup_lines
from devkit.redisbin import redis_server_binary
from shared import keys, redisconn
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
VAR = Path(os.environ.get("RAINBRIDGE_VAR_DIR") or ROOT / "var")
BIN = Path(sys.executable).parent
#: What this run started, so a run that was SIGKILLed can be cleaned up by the next one.
STATE = VAR / "run.json"

PR_SET_PDEATHSIG = 1


#: The settings that point rainbridge at the sandbox instead of AEP.
SANDBOX_AEP = (
    "AEP_STREAMING_URL", "AEP_IMS_URL", "AEP_PLATFORM_URL", "AEP_CLIENT_ID", "AEP_CLIENT_SECRET",
    "AEP_ORG_ID", "AEP_DATASET_ID", "AEP_SCHEMA_ID", "AEP_TENANT_ID",
)  # fmt: skip


class StartFailed(Exception):
    """Starting failed; the message is the one line to print."""


class Stop(Exception):
    """Ctrl-C or SIGTERM."""


def _port(variable: str, default: int) -> int:
    raw = os.environ.get(variable, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise StartFailed(f"{variable} must be a TCP port number, got {raw!r}")
    return int(raw)


def _secret(name: str) -> str:
    """A random value kept in var/ so the URLs and tokens stay the same from one run to the next."""
    path = VAR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(24))
        path.chmod(0o600)
    return path.read_text().strip()


def _prctl_pdeathsig(sig: int) -> None:
    """Ask the kernel to send ``sig`` to this process when its parent dies (Linux)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig))


class Supervisor:
    """Starts child processes in their own process groups and stops them all together."""

    def __init__(self) -> None:
        self.children: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        """Start ``args``; its output goes to var/log/<name>.log; it gets SIGTERM if we die."""
        parent = os.getpid()

        def die_with_parent() -> None:
            _prctl_pdeathsig(signal.SIGTERM)
            if os.getppid() != parent:  # we died between fork and prctl
                os._exit(1)

        log = open(self.log_path(name), "ab")  # noqa: SIM115 - open for the child's life
        proc = subprocess.Popen(
            args,
            env=env,
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # noqa: PLW1509 - this process starts no threads
        )
        log.close()
        self.children.append((name, proc))
        self._save()
        return proc

    @staticmethod
    def log_path(name: str) -> Path:
        """Where a child's output goes."""
        return VAR / "log" / f"{name}.log"

    def _save(self) -> None:
        state = {
            "supervisor": {"pid": os.getpid(), "start": procfs.start_time(os.getpid())},
            "children": [
                {"name": n, "pid": p.pid, "start": procfs.start_time(p.pid)} for n, p in self.children
            ],
        }
        STATE.write_text(json.dumps(state))

    def stop(self) -> None:
        """SIGTERM every child group (warm shutdown), then SIGKILL what is left after 20 s."""
        for _, proc in reversed(self.children):
            _signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, proc in self.children:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
            _signal_group(proc.pid, signal.SIGKILL)  # stragglers of a group whose leader is gone
        with contextlib.suppress(FileNotFoundError):
            STATE.unlink()

    def exited(self) -> str | None:
        """The name of a child that exited, if any."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return name
        return None

    def wait_until(self, name: str, ready: Callable[[], bool], what: str, timeout: float) -> None:
        """Poll ``ready`` until it holds; fail with one line if ``name`` exits or time runs out."""
        proc = dict(self.children)[name]
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(Exception):
                if ready():
                    return
            if proc.poll() is not None:
                raise StartFailed(
                    f"{name} exited at start (exit code {proc.returncode}): {_last_line(self.log_path(name))}"
                )
            if time.monotonic() > deadline:
                raise StartFailed(
                    f"{what} did not answer within {timeout:.0f} s; see {self.log_path(name)}: "
                    f"{_last_line(self.log_path(name))}"
                )
            time.sleep(0.2)


def _signal_group(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:200] if lines else "(empty log)"


def clean_up_earlier_run() -> None:
    """Refuse to start beside a live ``make run``; stop what a killed one left behind."""
    try:
        state = json.loads(STATE.read_text())
    except (OSError, ValueError):
        return
    boss = state.get("supervisor", {})
    if (
        boss.get("pid")
        and boss.get("pid") != os.getpid()
        and procfs.start_time(boss["pid"]) == boss.get("start")
    ):
        raise StartFailed(f"make run is already running (pid {boss['pid']}); stop it with Ctrl-C first")
    left = [c for c in state.get("children", []) if procfs.start_time(c["pid"]) == c["start"]]
    for child in left:
        _signal_group(child["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 20
    while (
        left and time.monotonic() < deadline and any(procfs.start_time(c["pid"]) == c["start"] for c in left)
    ):
        time.sleep(0.2)
    for child in left:
        # The whole group, so pool processes whose leader is already gone go too.
        _signal_group(child["pid"], signal.SIGKILL)
    if left:
        names = ", ".join(c["name"] for c in left)
        print(f"rainbridge: stopped what an earlier make run left running ({names})", flush=True)
    STATE.unlink()


def _http_ok(url: str) -> bool:
    return requests.get(url, timeout=1).status_code == 200


def _drains_ran(env: dict[str, str], since_ms: int) -> bool:
    client = redisconn.connect(Settings.from_env(env), socket_timeout=1)
    try:
        runs = client.hgetall(keys.DRAINS)
    finally:
        client.close()
    return all(int(runs.get(stage, 0)) > since_ms for stage in ("ingest", "deliver"))


def _redis_answers(url: str) -> bool:
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        return bool(client.ping())
    finally:
        client.close()


def start_all(sup: Supervisor, env: dict[str, str]) -> list[str]:
    """Start every service, waiting for each to answer; the lines to print about them."""
    redis_port = _port("RAINBRIDGE_REDIS_PORT", 6390)
    receiver_port = _port("RAINBRIDGE_RECEIVER_PORT", 8000)
    sandbox_port = _port("RAINBRIDGE_SANDBOX_PORT", 8088)
    flower_port = _port("RAINBRIDGE_FLOWER_PORT", 5555)
    own_redis = not env.get("REDIS_URL")
    own_sandbox = not env.get("AEP_CLIENT_ID") and not env.get("AEP_STREAMING_URL")
    wanted = [
        ("receiver", receiver_port, "RAINBRIDGE_RECEIVER_PORT"),
        ("Flower", flower_port, "RAINBRIDGE_FLOWER_PORT"),
    ]
    if own_redis:
        wanted.insert(0, ("Redis", redis_port, "RAINBRIDGE_REDIS_PORT"))
    if own_sandbox:
        wanted.insert(1, ("AEP sandbox", sandbox_port, "RAINBRIDGE_SANDBOX_PORT"))
    for what, port, variable in wanted:
        if not ports.is_free(port):
            raise StartFailed(
                f"port {port} (for the {what}) is taken by {ports.holder(port)}; stop it or set {variable}"
            )
    notes: list[str] = []

    if own_redis:
        (VAR / "redis").mkdir(exist_ok=True)
        sup.start(
            "redis",
            [
                redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
                "--dir", str(VAR / "redis"), "--appendonly", "yes", "--appendfsync", "everysec",
                "--maxmemory-policy", "noeviction", "--save", "",
            ],
            env,
        )  # fmt: skip
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        sup.wait_until("redis", lambda: _redis_answers(env["REDIS_URL"]), "Redis (PING)", timeout=15)
        notes.append(f"Redis (private, AOF on)   {env['REDIS_URL']}   data in {VAR / 'redis'}/")

    if own_sandbox:
        sandbox = f"http://127.0.0.1:{sandbox_port}"
        sup.start("sandbox", [str(BIN / "rainbridge"), "sandbox", "--port", str(sandbox_port)], env)
        # Where AEP is and who we are there: the same as the tests and the benchmark use.
        aep = settings_env(local_settings(env["REDIS_URL"], sandbox))
        env.update({name: aep[name] for name in SANDBOX_AEP})
        sup.wait_until("sandbox", lambda: _http_ok(f"{sandbox}/sandbox/stats"), "the AEP sandbox", timeout=20)
        # As an operator would with AEP: the schema, dataset and dataflow, made by `aep setup`.
        # The sandbox then validates every event against that schema.
        made = subprocess.run(
            [str(BIN / "rainbridge"), "aep", "setup", "--apply"],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if made.returncode != 0:
            problems = [line for line in made.stdout.splitlines() if line.startswith("FAIL")]
            raise StartFailed("rainbridge aep setup failed: " + ("; ".join(problems) or made.stderr.strip()))
        env.update(setup_lines(made.stdout))
        notes.append(f"AEP sandbox (events page) {sandbox}/")

    env.setdefault("RECEIVER_TOKENS", _secret("receiver-token"))
    env.setdefault("RECEIVER_INLET_ID", _secret("receiver-inlet"))
    check = subprocess.run(
        [str(BIN / "rainbridge"), "check"], env=env, capture_output=True, text=True, check=False
    )
    if check.returncode != 0:
        problems = [line for line in check.stdout.splitlines() if line.startswith("FAIL")]
        raise StartFailed("rainbridge check failed: " + ("; ".join(problems) or check.stderr.strip()))

    receiver = f"http://127.0.0.1:{receiver_port}"
    sup.start(
        "receiver",
        [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{receiver_port}", "--workers", "2",
         "receiver.app:create_app()"],
        env,
    )  # fmt: skip
    sup.wait_until("receiver", lambda: _http_ok(f"{receiver}/readyz"), "the receiver (/readyz)", timeout=30)

    since_ms = int(time.time() * 1000)
    sup.start(
        "worker",
        [str(BIN / "celery"), "-A", "worker.app", "worker", "--loglevel", "INFO", "--concurrency", "2",
         "--hostname", "worker@%h"],
        env,
    )  # fmt: skip
    sup.wait_until("worker", lambda: _drains_ran(env, since_ms), "the worker (its first drains)", timeout=60)
    sup.start(
        "flower",
        [str(BIN / "celery"), "-A", "worker.app", "flower", "--address=127.0.0.1", f"--port={flower_port}"],
        env,
    )
    flower = f"http://127.0.0.1:{flower_port}"
    sup.wait_until("flower", lambda: _http_ok(f"{flower}/healthcheck"), "Flower", timeout=30)
    inlet = env["RECEIVER_INLET_ID"][:6]
    return [
        *notes,
        f"Receiver                  {receiver}   (POST /v1/pushes, /collection/{inlet}…)",
        f"Metrics (Prometheus)      {receiver}/metrics",
        f"Flower                    {flower}/",
        f"Logs                      {VAR / 'log'}/*.log",
    ]


def _curl(receiver: str, token: str) -> str:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - 60))
    return (
        f"curl -sS -X POST {receiver}/v1/pushes -H 'Authorization: Bearer {token}' "
        "-H 'Content-Type: application/json' "
        f'-d \'{{"transmissionId": "demo-{int(time.time())}", "eventType": "SessionScheduled", '
        f'"timestamp": "{stamp}", "event": {{"name": "Adobe Summit"}}, '
        '"attendee": {"email": "ada@example.com", "attendeeId": "1619119968857001fvLB"}, '
        '"session": {"code": "GS3", "title": "Inspiration Keynote", "length": 90}}\''
    )


def main() -> int:
    """Start everything, print how to use it, and wait for Ctrl-C."""
    parent = os.getppid()
    _prctl_pdeathsig(signal.SIGTERM)  # `make` killed: stop cleanly too
    if os.getppid() != parent:
        return 1
    stopping = False

    def on_signal(*_: object) -> None:
        if not stopping:
            raise Stop

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    sup = Supervisor()
    exit_code = 0
    try:
        (VAR / "log").mkdir(parents=True, exist_ok=True)
        clean_up_earlier_run()
        env = dict(os.environ)
        notes = start_all(sup, env)
        receiver = f"http://127.0.0.1:{_port('RAINBRIDGE_RECEIVER_PORT', 8000)}"
        print("\nrainbridge is running:\n  " + "\n  ".join(notes))
        print(f"\nFor `rainbridge status` in another shell:  export REDIS_URL={env['REDIS_URL']}")
        token = env["RECEIVER_TOKENS"].split(",")[0]
        print(f"\nSend a push:\n  {_curl(receiver, token)}\n\nCtrl-C stops everything.", flush=True)
        while (exited := sup.exited()) is None:
            time.sleep(0.5)
        print(
            f"\nrainbridge: {exited} exited; see {sup.log_path(exited)}. Stopping the rest.", file=sys.stderr
        )
        exit_code = 1
    except Stop:
        pass
    except StartFailed as exc:
        print(f"rainbridge: {exc}", file=sys.stderr, flush=True)
        exit_code = 1
    finally:
        stopping = True
        if sup.children:
            print("\nstopping…", flush=True)
        sup.stop()
    return exit_code


if __name__ == "__main__":
    sys.exit(main())
