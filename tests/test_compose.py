"""The docker-compose stack and image, checked without a Docker engine."""

from __future__ import annotations

import dataclasses
import importlib
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ops.cli import main as rainbridge
from shared.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
KNOWN = {field.name.upper() for field in dataclasses.fields(Settings)}
#: Read by Flower and by the sandbox's compose service, not by rainbridge's settings.
EXTRA = {"FLOWER_BASIC_AUTH", "SANDBOX_USERNAME", "SANDBOX_PASSWORD"}


def env_example() -> dict[str, str]:
    pairs = {}
    for raw in (ROOT / ".env.example").read_text().splitlines():
        line = raw.strip().lstrip("# ")
        if "=" in line and line.split("=", 1)[0].isupper():
            name, value = line.split("=", 1)
            pairs[name] = value
    return pairs


def test_the_services_are_there() -> None:
    assert {"redis", "receiver", "worker", "flower", "sandbox"} <= set(SERVICES)
    assert SERVICES["sandbox"]["profiles"] == ["sandbox"]
    # Workers keep their own drains going: no scheduler to run exactly once.
    assert "beat" not in SERVICES


def test_the_worker_runs_the_plain_command_that_consumes_every_queue() -> None:
    command = SERVICES["worker"]["command"]
    assert command[:4] == ["celery", "-A", "worker.app", "worker"]
    assert not {"-Q", "--queues", "-B", "--beat"} & set(command)


def test_redis_keeps_what_it_acknowledged() -> None:
    redis = SERVICES["redis"]
    command = " ".join(redis["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command
    assert redis["volumes"] and redis["healthcheck"]["test"]


def test_the_receiver_is_checked_on_readiness_and_flower_needs_a_password() -> None:
    assert "/readyz" in " ".join(SERVICES["receiver"]["healthcheck"]["test"])
    assert "FLOWER_BASIC_AUTH" in SERVICES["flower"]["environment"]
    assert "--password" in SERVICES["sandbox"]["command"]


@pytest.mark.parametrize("name", ["receiver", "worker", "flower", "sandbox"])
def test_every_command_names_a_real_entry_point(name: str) -> None:
    command = SERVICES[name]["command"]
    program = command[0]
    if program == "gunicorn":
        module, _, call = command[-1].partition(":")
        assert callable(getattr(importlib.import_module(module), call.removesuffix("()")))
    elif program == "celery":
        assert command[1:3] == ["-A", "worker.app"]
        assert importlib.import_module("worker.app").app.main == "rainbridge"
        assert command[3] in {"worker", "flower"}
    elif program == "rainbridge":
        with pytest.raises(SystemExit) as exited:
            rainbridge([command[1], "--help"])
        assert exited.value.code == 0
    else:
        pytest.fail(f"{name} runs {program}, not a rainbridge entry point")


def test_every_variable_set_is_one_the_settings_know() -> None:
    for name, service in SERVICES.items():
        env = service.get("environment") or {}
        unknown = set(env) - KNOWN - EXTRA
        assert not unknown, f"{name} sets {unknown}"
    assert set(env_example()) - KNOWN - EXTRA == set()


def test_env_example_lists_every_setting() -> None:
    assert KNOWN - set(env_example()) == set()


def test_the_image_runs_as_a_non_root_user_from_a_slim_base() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "FROM python:3.11-slim" in dockerfile
    assert "\nUSER " in dockerfile
    final_stage = dockerfile.rsplit("FROM ", 1)[1]
    assert "gcc" not in final_stage and "build-essential" not in final_stage
    assert "pip install --no-cache-dir /wheels/*" in final_stage  # from the project's own metadata
    # The receiver's worker class comes from gunicorn.conf.py in the working directory.
    assert "COPY gunicorn.conf.py ./" in final_stage.split("WORKDIR", 1)[1]


@pytest.mark.skipif(
    shutil.which("docker-compose") is None and not os.environ.get("CI"),
    reason="docker-compose is not installed (under CI=true this fails instead: .ci/run installs it)",
)
def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    assert shutil.which("docker-compose"), "docker-compose is missing: .ci/run installs it"
    shutil.copy(ROOT / "docker-compose.yml", tmp_path / "docker-compose.yml")
    env = env_example() | {"FLOWER_BASIC_AUTH": "admin:secret", "SANDBOX_PASSWORD": "secret"}
    (tmp_path / ".env").write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    result = subprocess.run(
        ["docker-compose", "--profile", "sandbox", "config", "--services"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert set(result.stdout.split()) == set(SERVICES)
