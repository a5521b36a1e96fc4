"""Flower never starts beyond loopback without authentication."""

from __future__ import annotations

import subprocess

import pytest

from devkit.procs import BIN, ROOT
from shared.settings import Settings
from tests.helpers import to_env
from worker.flower_guard import problem


@pytest.mark.parametrize(
    ("argv", "env", "refused"),
    [
        (["celery", "-A", "worker.app", "flower"], {}, True),
        (["celery", "-A", "worker.app", "flower", "--address=0.0.0.0"], {}, True),
        (["celery", "-A", "worker.app", "flower", "--address", "10.1.2.3", "--port=5555"], {}, True),
        (["celery", "-A", "worker.app", "flower", "--address=127.0.0.1"], {}, False),
        (["celery", "-A", "worker.app", "flower", "--basic-auth=ops:secret"], {}, False),
        (["celery", "-A", "worker.app", "flower"], {"FLOWER_BASIC_AUTH": "ops:secret"}, False),
        (["celery", "-A", "worker.app", "flower"], {"FLOWER_ADDRESS": "::1"}, False),
        (["celery", "-A", "worker.app", "worker"], {}, False),
    ],
)
def test_flower_beyond_loopback_needs_auth(argv: list[str], env: dict[str, str], refused: bool) -> None:
    assert (problem(argv, env) is not None) == refused


def test_an_open_flower_stops_at_start_with_one_line(settings: Settings) -> None:
    env = {k: v for k, v in to_env(settings).items() if not k.startswith("FLOWER_")}
    result = subprocess.run(
        [str(BIN / "celery"), "-A", "worker.app", "flower", "--address=0.0.0.0"],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert "without authentication" in result.stderr
