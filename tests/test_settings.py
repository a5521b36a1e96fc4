"""Settings: defaults, parsing, and one clear line naming a bad variable at start-up."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from devkit.procs import BIN, ROOT, free_port
from shared.settings import ConfigError, Settings
from tests.helpers import to_env


def test_defaults_match_the_design() -> None:
    s = Settings.from_env({})
    assert s.receiver_max_bytes == 5 * 1024 * 1024
    assert s.receiver_max_pushes == 500
    assert (s.aep_batch_max_messages, s.aep_batch_max_bytes, s.aep_batch_max_wait_ms) == (200, 900_000, 1000)
    assert s.dedupe_ttl_seconds == 604_800
    assert s.aep_ims_url == "https://ims-na1.adobelogin.com/ims/token/v3"
    assert s.aep_sandbox_name == "prod"
    assert (s.aep_payload_mode, s.identity_namespace) == ("xdm", "Email")


def test_values_are_parsed_to_their_types() -> None:
    s = Settings.from_env(
        {
            "RECEIVER_TOKENS": "first-token-0123456789, second-token-0123456789",
            "AEP_BATCH_MAX_MESSAGES": "50",
            "AEP_TENANT_ID": "_acme",
            "AEP_STREAMING_URL": "https://dcs.adobedc.net/collection/abc123?synchronousValidation=false",
            "AEP_SCOPES": "openid,AdobeID",
            "IDENTITY_NAMESPACE": "Email_LC_SHA256",
            "LOG_LEVEL": "debug",
        }
    )
    assert s.receiver_tokens == ("first-token-0123456789", "second-token-0123456789")
    assert s.aep_batch_max_messages == 50
    assert s.tenant_key == "_acme"
    assert s.aep_batch_url == "https://dcs.adobedc.net/collection/batch/abc123?synchronousValidation=false"
    assert s.aep_scopes == ("openid", "AdobeID")
    assert s.identity_namespace == "Email_LC_SHA256"
    assert s.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AEP_BATCH_MAX_MESSAGES", "lots"),
        ("AEP_BATCH_MAX_MESSAGES", "0"),
        ("AEP_BATCH_MAX_BYTES", "2000000"),
        ("AEP_PAYLOAD_MODE", "json"),
        ("IDENTITY_NAMESPACE", "ECID"),
        ("REDIS_URL", "localhost:6379"),
        ("AEP_STREAMING_URL", "https://dcs.adobedc.net/somewhere"),
        ("RECEIVER_TOKENS", "short"),
        ("DEDUPE_TTL_SECONDS", "-1"),
        ("LOG_LEVEL", "LOUD"),
    ],
)
def test_a_bad_value_is_an_error_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        Settings.from_env({name: value})


def test_secrets_are_never_in_repr_or_redacted_output() -> None:
    s = Settings.from_env(
        {
            "RECEIVER_TOKENS": "token-that-is-secret-123",
            "AEP_CLIENT_SECRET": "client-secret-value",
            "REDIS_URL": "redis://user:redis-password@redis:6379/0",
        }
    )
    shown = repr(s) + repr(s.redacted())
    for secret in ("token-that-is-secret-123", "client-secret-value", "redis-password"):
        assert secret not in shown


def test_the_worker_requires_the_aep_target() -> None:
    with pytest.raises(ConfigError, match="AEP_STREAMING_URL"):
        Settings.from_env({}).require("worker")
    with pytest.raises(ConfigError, match="AEP_ORG_ID"):
        Settings.from_env({"AEP_STREAMING_URL": "https://dcs.adobedc.net/collection/x"}).require("worker")
    raw = Settings.from_env(
        {"AEP_STREAMING_URL": "https://dcs.adobedc.net/collection/x", "AEP_PAYLOAD_MODE": "raw"}
    )
    raw.require("worker")


def test_the_receiver_requires_an_open_door() -> None:
    with pytest.raises(ConfigError, match="RECEIVER_TOKENS"):
        Settings.from_env({}).require("receiver")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def test_a_bad_value_stops_each_process_at_start_with_one_line_naming_it(
    settings: Settings, tmp_path: Path
) -> None:
    env = {**to_env(settings), "AEP_BATCH_MAX_WAIT_MS": "soon"}
    port = free_port()
    commands = {
        "receiver": [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{port}", "receiver.app:create_app()"],
        "worker": [str(BIN / "celery"), "-A", "worker.app", "worker", "--pool", "solo"],
        "status": [str(BIN / "rainbridge"), "status"],
    }
    for name, args in commands.items():
        result = _run(args, env)
        assert result.returncode != 0, name
        lines = [
            line for line in (result.stdout + result.stderr).splitlines() if "AEP_BATCH_MAX_WAIT_MS" in line
        ]
        assert lines == [
            "rainbridge: configuration error: AEP_BATCH_MAX_WAIT_MS must be an integer, got 'soon'"
        ], (
            name,
            result.stdout + result.stderr,
        )


def test_a_worker_without_its_aep_settings_stops_at_start(settings: Settings) -> None:
    env = to_env(settings)
    del env["AEP_DATASET_ID"]
    result = _run([str(BIN / "celery"), "-A", "worker.app", "worker", "--pool", "solo"], env)
    assert result.returncode != 0
    assert "AEP_DATASET_ID is not set" in result.stdout + result.stderr
