"""``make run`` as a newcomer runs it: it starts, the printed curl delivers, Ctrl-C leaves nothing.

Each test runs the real ``make run`` in this checkout (CI's is a fresh clone) on free ports, with
its data in a temporary ``var/``; every process it starts inherits that directory's name in its
environment, which is how the tests find any that outlived it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from devkit import ports
from devkit.procs import ROOT, free_port, wait_for

#: Settings a developer's shell might carry that would change what make run starts.
FOREIGN = ("REDIS_", "AEP_", "RECEIVER_", "SENTRY_", "RAINBRIDGE_", "MAPPING_")


class MakeRun:
    """One ``make run``, its output collected line by line as it comes."""

    def __init__(self, var: Path, chosen: dict[str, int]) -> None:
        self.var = var
        self.ports = chosen
        env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN)}
        env |= {f"RAINBRIDGE_{name.upper()}_PORT": str(port) for name, port in chosen.items()}
        env["RAINBRIDGE_VAR_DIR"] = str(var)
        self.proc = subprocess.Popen(
            ["make", "run"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group, like a shell's foreground job
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def wait_ready(self, timeout: float = 180) -> None:
        wait_for(
            lambda: "Ctrl-C stops everything." in self.output or self.proc.poll() is not None,
            timeout=timeout,
            interval=0.2,
            what="make run to say it is running",
        )
        assert self.proc.poll() is None, self.output

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to the whole foreground process group."""
        os.killpg(self.proc.pid, signal.SIGINT)

    def leftovers(self) -> list[str]:
        """Processes still running that this make run started (they carry its var dir)."""
        marker = f"RAINBRIDGE_VAR_DIR={self.var}".encode()
        found = []
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit() or int(pid_dir.name) == os.getpid():
                continue
            with contextlib.suppress(OSError):
                if marker in (pid_dir / "environ").read_bytes().split(b"\0"):
                    cmd = (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                    state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
                    if state != "Z":
                        found.append(f"{pid_dir.name}: {cmd.strip()}")
        return found

    def ports_in_use(self) -> list[int]:
        """Its ports that something still listens on (an outgoing connection may reuse one)."""
        return [port for port in self.ports.values() if ports.listening(port)]

    def assert_nothing_left(self, timeout: float = 45) -> None:
        deadline = time.monotonic() + timeout
        while self.leftovers() or self.ports_in_use():
            left, busy = self.leftovers(), self.ports_in_use()
            assert time.monotonic() < deadline, f"after {timeout:.0f} s: running {left}; listening {busy}"
            time.sleep(0.5)

    def kill_everything(self) -> None:
        for line in self.leftovers():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(line.split(":", 1)[0]), signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(timeout=10)


Start = Callable[..., MakeRun]


@pytest.fixture
def make_run(tmp_path: Path) -> Iterator[Start]:
    """Start ``make run`` on free ports (``sandbox=1234`` picks one); whatever it left is killed after."""
    started: list[MakeRun] = []
    free = {name: free_port() for name in ("redis", "sandbox", "receiver", "flower")}

    def start(**chosen: int) -> MakeRun:
        started.append(MakeRun(tmp_path / "var", free | chosen))
        return started[-1]

    yield start
    for run in started:
        run.kill_everything()


def test_make_run_answers_the_printed_curl_and_ctrl_c_leaves_nothing_running(make_run: Start) -> None:
    # Given make run, started as the README says
    run = make_run()
    run.wait_ready()
    assert run.leftovers(), "make run started nothing?"

    # When the curl it printed is pasted into a shell
    curl = next(line.strip() for line in run.lines if line.strip().startswith("curl "))
    answer = subprocess.run(["bash", "-c", curl], capture_output=True, text=True, timeout=30, check=True)
    assert '"accepted":1' in answer.stdout, answer.stdout + answer.stderr

    # Then the event is on the sandbox, as AEP would receive it
    tid = curl.split('"transmissionId": "', 1)[1].split('"', 1)[0]
    sandbox = f"http://127.0.0.1:{run.ports['sandbox']}"

    def arrived() -> bool:
        events = requests.get(f"{sandbox}/sandbox/events", timeout=5).json()["events"]
        return tid in {e["transmissionId"] for e in events}

    wait_for(arrived, timeout=30, what="the pasted push at the sandbox")

    # When Ctrl-C is pressed, nothing it started is left and every port is free
    run.ctrl_c()
    run.proc.wait(timeout=60)
    run.assert_nothing_left()


def test_a_taken_port_is_named_with_its_holder_and_nothing_is_left_running(make_run: Start) -> None:
    # Given something else listening on the port the sandbox is to use
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]

        # When make run starts
        started = time.monotonic()
        run = make_run(sandbox=port)
        code = run.proc.wait(timeout=30)

        # Then it fails at once with one line naming the port and who holds it
        assert code != 0
        assert time.monotonic() - started < 30
        ours = [line for line in run.lines if line.startswith("rainbridge:")]
        assert len(ours) == 1, run.output
        assert f"port {port} (for the AEP sandbox) is taken by pid {os.getpid()}" in ours[0]
        assert "RAINBRIDGE_SANDBOX_PORT" in ours[0]
        # And it started nothing that is still running
        assert run.leftovers() == []

    # When the port is free again, the next make run starts and stops as usual
    again = make_run(sandbox=port)
    again.wait_ready()
    again.ctrl_c()
    again.proc.wait(timeout=60)
    again.assert_nothing_left()


def test_a_sigkilled_make_run_takes_its_children_with_it_and_the_next_one_starts(make_run: Start) -> None:
    """SIGKILL of the supervisor, then of `make` itself: nothing outlives either for long."""
    # Given a running make run
    run = make_run()
    run.wait_ready()
    supervisor = [int(p.split(":")[0]) for p in run.leftovers() if "devkit.run" in p]
    assert len(supervisor) == 1, run.leftovers()

    # When its supervisor is SIGKILLed (nothing can catch that)
    os.kill(supervisor[0], signal.SIGKILL)

    # Then every process it started stops by itself (each gets SIGTERM when it dies)...
    deadline = time.monotonic() + 45
    while (left := run.leftovers()) and time.monotonic() < deadline:
        time.sleep(0.5)
    if left:
        print(f"still running 45 s after the supervisor's SIGKILL: {left}")

    # ...or else the next make run stops what is left, then starts as usual
    again = make_run()
    again.wait_ready()
    if left:
        assert "stopped what an earlier make run left running" in again.output, again.output
        survivors = {line.split(":", 1)[0] for line in left}
        assert not survivors & {line.split(":", 1)[0] for line in again.leftovers()}

    # When `make` itself is SIGKILLed, its supervisor stops everything it started
    os.kill(again.proc.pid, signal.SIGKILL)
    again.assert_nothing_left()

    # And the one after that starts and stops as usual
    third = make_run()
    third.wait_ready()
    third.ctrl_c()
    third.proc.wait(timeout=60)
    third.assert_nothing_left()
