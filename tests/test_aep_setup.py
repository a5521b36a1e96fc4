"""``rainbridge aep setup`` against the sandbox's Platform APIs; the sandbox validating events by schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from devkit.local import setup_lines
from devkit.sandbox.client import SandboxClient
from ops.cli import main as rainbridge
from shared.settings import Settings
from tests.helpers import to_env
from worker import mapfile


@pytest.fixture
def env(settings: Settings, sandbox: SandboxClient, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The test's settings in the environment, with nothing of AEP's set-up ids yet."""
    for name in ("AEP_SCHEMA_ID", "AEP_DATASET_ID", "AEP_FLOW_ID", "AEP_TENANT_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in to_env(settings).items():
        if name not in ("AEP_SCHEMA_ID", "AEP_DATASET_ID", "AEP_TENANT_ID"):
            monkeypatch.setenv(name, value)
    return settings


def run_setup(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = rainbridge(["aep", "setup", *args])
    return code, capsys.readouterr().out


def platform(sandbox: SandboxClient) -> dict[str, list[str]]:
    return dict(sandbox.stats()["platform"])


def headers(settings: Settings, token: str) -> dict[str, str]:
    return {
        "Authorization": f"Bearer {token}",
        "x-api-key": settings.aep_client_id or "",
        "x-gw-ims-org-id": settings.aep_org_id or "",
        "x-sandbox-name": "prod",
    }


def token(settings: Settings) -> str:
    form = {
        "client_id": settings.aep_client_id,
        "client_secret": settings.aep_client_secret,
        "grant_type": "client_credentials",
        "scope": "openid",
    }
    return str(requests.post(settings.aep_ims_url, data=form, timeout=5).json()["access_token"])


def test_a_dry_run_reads_prints_every_write_with_secrets_masked_and_makes_nothing(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_setup(capsys)

    assert code == 0
    assert all(not made for made in platform(sandbox).values())
    for call in (
        "would POST {}/data/foundation/schemaregistry/tenant/fieldgroups",
        "would POST {}/data/foundation/schemaregistry/tenant/schemas",
        "would POST {}/data/foundation/schemaregistry/tenant/descriptors",
        "would POST {}/data/foundation/catalog/dataSets",
        "would POST {}/data/foundation/flowservice/connections",
        "would POST {}/data/foundation/flowservice/sourceConnections",
        "would POST {}/data/foundation/flowservice/targetConnections",
        "would POST {}/data/foundation/flowservice/flows",
    ):
        assert call.format(env.aep_platform_url) in out
    assert '"meta:intendedToExtend"' in out and '"_acme"' in out and '"unifiedProfile"' in out
    assert "changes to make" in out or "change(s) to make: run again with --apply" in out
    assert env.aep_client_secret not in out
    assert "AEP_TENANT_ID=acme" in out and "AEP_SCHEMA_ID=  # made by --apply" in out


def test_apply_makes_everything_once_and_a_second_apply_makes_nothing(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_setup(capsys, "--apply")
    assert code == 0, out
    made = platform(sandbox)
    assert made["field groups"] == ["rainbridge RainFocus fields"], out
    assert made["schemas"] == ["rainbridge RainFocus events"]
    assert made["descriptors"] == ["/_acme/attendee/email"]
    assert made["datasets"] == ["rainbridge RainFocus events"]
    assert made["connections"] == ["rainbridge RainFocus HTTP API"]
    assert made["flows"] == ["rainbridge RainFocus dataflow"]
    lines = setup_lines(out)
    assert set(lines) == {
        "AEP_STREAMING_URL",
        "AEP_FLOW_ID",
        "AEP_DATASET_ID",
        "AEP_SCHEMA_ID",
        "AEP_TENANT_ID",
    }
    assert lines["AEP_SCHEMA_ID"].startswith("https://ns.adobe.com/acme/schemas/")
    assert "/collection/" in lines["AEP_STREAMING_URL"]

    requests_before = sandbox.stats()["requests"]
    code, again = run_setup(capsys, "--apply")

    assert code == 0
    assert "nothing to do: everything exists as the mapping needs it" in again
    assert platform(sandbox) == made
    assert setup_lines(again) == lines
    # Each object is named as found, none as made.
    assert again.count("  exists ") == 10 and "created" not in again
    assert sandbox.stats()["requests"] == requests_before  # no events were streamed either


def test_raw_mode_makes_a_raw_connection_and_a_dataflow_with_the_exported_mapping_set(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEP_PAYLOAD_MODE", "raw")

    code, out = run_setup(capsys, "--apply")

    assert code == 0, out
    made = platform(sandbox)
    assert len(made["mapping sets"]) == 1
    state = requests.get(f"{env.aep_platform_url}/sandbox/stats", timeout=5).json()
    assert state["platform"]["flows"] == ["rainbridge RainFocus dataflow"]
    flows = requests.get(
        f"{env.aep_platform_url}/data/foundation/flowservice/flows",
        headers=headers(env, token(env)),
        timeout=5,
    ).json()["items"]
    assert flows[0]["flowSpec"]["id"] == "c1a19761-d2c7-4702-b9fa-fe91f0613e81"
    assert flows[0]["transformations"][0]["params"]["mappingId"] == made["mapping sets"][0]
    connections = requests.get(
        f"{env.aep_platform_url}/data/foundation/flowservice/connections",
        headers=headers(env, token(env)),
        timeout=5,
    ).json()["items"]
    assert connections[0]["auth"]["params"]["dataType"] == "raw"


def test_a_refusal_stops_the_run_with_adobes_message_and_names_what_was_made_before_it(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a dataset of rainbridge's name that holds another schema (made by hand, say)
    auth = headers(env, token(env))
    base = f"{env.aep_platform_url}/data/foundation"
    group = requests.post(
        f"{base}/schemaregistry/tenant/fieldgroups",
        json={
            "title": "hand made",
            "type": "object",
            "meta:intendedToExtend": ["https://ns.adobe.com/xdm/context/experienceevent"],
            "definitions": {"d": {"properties": {"_acme": {"type": "object", "properties": {}}}}},
            "allOf": [{"$ref": "#/definitions/d"}],
        },
        headers=auth,
        timeout=5,
    ).json()
    other = requests.post(
        f"{base}/schemaregistry/tenant/schemas",
        json={"title": "another", "type": "object", "allOf": [
            {"$ref": "https://ns.adobe.com/xdm/context/experienceevent"}, {"$ref": group["$id"]}]},
        headers=auth,
        timeout=5,
    ).json()  # fmt: skip
    answer = requests.post(
        f"{base}/catalog/dataSets",
        json={"name": "rainbridge RainFocus events", "schemaRef": {"id": other["$id"], "contentType": "x"}},
        headers=auth,
        timeout=5,
    )
    assert answer.status_code == 201 and answer.json()[0].startswith("@/dataSets/")

    # When set-up runs
    code, out = run_setup(capsys, "--apply")

    # Then it stops at the dataset with one line, and names what it made before
    assert code == 1
    fail = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert len(fail) == 1 and "dataset 'rainbridge RainFocus events'" in fail[0] and other["$id"] in fail[0]
    assert "made before the failure (left in AEP): field group 'rainbridge RainFocus fields'; schema" in out
    assert "streaming connection" not in out  # nothing after the failure was tried


def test_adobes_errors_are_one_line_each(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AEP_CLIENT_SECRET", "wrong")
    code, out = run_setup(capsys, "--apply")
    assert code == 1
    assert [line for line in out.splitlines() if line.startswith("FAIL")] == [
        line for line in out.splitlines() if "AEP token" in line
    ]

    monkeypatch.setenv("AEP_CLIENT_SECRET", env.aep_client_secret or "")
    monkeypatch.setenv("AEP_TENANT_ID", "someoneelse")
    code, out = run_setup(capsys, "--apply")
    assert code == 1
    assert "FAIL  AEP_TENANT_ID is 'someoneelse', but this organisation's tenant is 'acme'" in out
    assert "nothing was made in AEP" in out


def test_the_sandbox_answers_as_adobes_apis_do(env: Settings, sandbox: SandboxClient) -> None:
    base = f"{env.aep_platform_url}/data/foundation"
    # No token: the gateway's 401
    answer = requests.get(f"{base}/schemaregistry/stats", timeout=5)
    assert answer.status_code == 401 and answer.json()["error_code"] == "401013"
    auth = headers(env, token(env))
    # Another API key: 403
    answer = requests.get(f"{base}/schemaregistry/stats", headers={**auth, "x-api-key": "x"}, timeout=5)
    assert answer.status_code == 403 and answer.json()["error_code"] == "403003"
    # A title already taken: Schema Registry's 400 XDM-1521-400 (not 409)
    group = {
        "title": "one",
        "type": "object",
        "meta:intendedToExtend": ["https://ns.adobe.com/xdm/context/experienceevent"],
        "definitions": {"d": {"properties": {"_acme": {"type": "object", "properties": {}}}}},
        "allOf": [{"$ref": "#/definitions/d"}],
    }
    first = requests.post(f"{base}/schemaregistry/tenant/fieldgroups", json=group, headers=auth, timeout=5)
    assert first.status_code == 201
    assert first.json()["$id"].startswith("https://ns.adobe.com/acme/mixins/")
    assert first.json()["meta:altId"].startswith("_acme.mixins.")
    second = requests.post(f"{base}/schemaregistry/tenant/fieldgroups", json=group, headers=auth, timeout=5)
    assert second.status_code == 400 and second.json()["type"].endswith("XDM-1521-400")
    # Custom fields outside the tenant object are refused
    stray = {**group, "title": "two", "definitions": {"d": {"properties": {"loose": {"type": "string"}}}}}
    answer = requests.post(f"{base}/schemaregistry/tenant/fieldgroups", json=stray, headers=auth, timeout=5)
    assert answer.status_code == 400 and "_acme" in answer.json()["detail"]
    # Lists by title, in the id-only form
    listed = requests.get(
        f"{base}/schemaregistry/tenant/fieldgroups",
        params={"property": "title==one"},
        headers={**auth, "Accept": "application/vnd.adobe.xed-id+json"},
        timeout=5,
    ).json()
    assert [r["title"] for r in listed["results"]] == ["one"] and "definitions" not in listed["results"][0]


def _message(settings: Settings, lines: dict[str, str], entity: dict[str, Any]) -> dict[str, Any]:
    ref = {"id": lines["AEP_SCHEMA_ID"], "contentType": "application/vnd.adobe.xed-full+json;version=1"}
    header = {"schemaRef": ref, "imsOrgId": settings.aep_org_id, "datasetId": lines["AEP_DATASET_ID"]}
    return {"header": header, "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity}}


def test_with_a_schema_registered_the_sandbox_refuses_a_nonconforming_message_inside_the_207(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_setup(capsys, "--apply")
    assert code == 0, out
    lines = setup_lines(out)
    good = {
        "_id": "a1",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "eventType": "session.attended",
        "identityMap": {"Email": [{"id": "a@b.co", "primary": True}]},
        "_acme": {"session": {"sessionId": "s1", "length": 30}},
    }
    unknown = {**good, "_id": "a2", "_acme": {"session": {"sessionId": "s1", "track": "AI"}}}
    mistyped = {**good, "_id": "a3", "_acme": {"session": {"length": "thirty"}}}
    batch = {"messages": [_message(env, lines, e) for e in (good, unknown, mistyped)]}
    auth = {"Authorization": f"Bearer {token(env)}", "x-gw-ims-org-id": env.aep_org_id or ""}
    url = lines["AEP_STREAMING_URL"].replace("/collection/", "/collection/batch/")

    answer = requests.post(url, json=batch, headers=auth, timeout=5)

    assert answer.status_code == 207
    first, second, third = answer.json()["responses"]
    assert "xactionId" in first
    assert (
        second["statusCode"] == 400
        and "#/_acme/session" in second["message"]
        and "track" in second["message"]
    )
    assert third["statusCode"] == 400 and "#/_acme/session/length" in third["message"]
    assert [e["id"] for e in sandbox.events()] == ["a1"]


def test_check_names_each_field_the_live_schema_lacks_or_types_differently(
    env: Settings,
    sandbox: SandboxClient,
    redis_client: object,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    code, out = run_setup(capsys, "--apply")
    assert code == 0, out
    for name, value in setup_lines(out).items():
        monkeypatch.setenv(name, value)
    assert rainbridge(["check"]) == 0
    assert "ok    schema https://ns.adobe.com/acme/schemas/" in capsys.readouterr().out

    # A mapping that writes one new field and types an existing one as a string
    text = mapfile.default_text("Email").replace(
        "_{tenant}.session.length: {value: session.length, type: integer}",
        "_{tenant}.session.length: session.length\n  _{tenant}.session.track: upper(session.code)",
    )
    assert text != mapfile.default_text("Email")
    path = tmp_path / "mapping.yaml"
    path.write_text(text)
    monkeypatch.setenv("MAPPING_FILE", str(path))

    assert rainbridge(["check"]) == 1
    fails = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert fails == [
        "FAIL  schema: the schema lacks _acme.session.track, which the mapping writes",
        "FAIL  schema: _acme.session.length is integer in AEP, the mapping writes string",
    ]


def test_setup_refuses_to_retype_a_field_and_says_why(
    env: Settings,
    sandbox: SandboxClient,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    assert run_setup(capsys, "--apply")[0] == 0
    path = tmp_path / "mapping.yaml"
    path.write_text(
        mapfile.default_text("Email").replace(
            "_{tenant}.session.length: {value: session.length, type: integer}",
            "_{tenant}.session.length: session.length",
        )
    )
    monkeypatch.setenv("MAPPING_FILE", str(path))

    code, out = run_setup(capsys, "--apply")

    assert code == 1
    assert "AEP does not allow a field's type to change: _acme.session.length is integer in AEP" in out
    assert platform(sandbox)["schemas"] == ["rainbridge RainFocus events"]


def test_the_sandbox_page_shows_what_was_set_up(
    env: Settings, sandbox: SandboxClient, capsys: pytest.CaptureFixture[str]
) -> None:
    before = requests.get(f"{env.aep_platform_url}/", timeout=5).text
    assert "Nothing set up through the Platform APIs" in before
    assert run_setup(capsys, "--apply")[0] == 0

    page = requests.get(f"{env.aep_platform_url}/", timeout=5).text

    assert "schemas: rainbridge RainFocus events" in page and "flows: rainbridge RainFocus dataflow" in page
