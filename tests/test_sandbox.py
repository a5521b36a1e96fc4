"""Tests of the local AEP sandbox over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import requests

from devkit.procs import wait_for
from devkit.sandbox import SandboxConfig, SandboxServer, main

CONFIG = SandboxConfig()
SCHEMA_REF = {
    "id": "https://ns.adobe.com/tenant/schemas/abc",
    "contentType": "application/vnd.adobe.xed-full+json;version=1",
}
TIMEOUT = 5


@pytest.fixture(scope="module")
def server() -> Iterator[SandboxServer]:
    with SandboxServer(SandboxConfig()) as running:
        yield running


@pytest.fixture
def sandbox(server: SandboxServer) -> SandboxServer:
    requests.post(f"{server.url}/sandbox/reset", timeout=TIMEOUT).raise_for_status()
    return server


def now_iso(delta: timedelta = timedelta(0)) -> str:
    return (datetime.now(UTC) + delta).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def envelope(_id: str = "id-1", transmission_id: str = "tx-1", **entity: Any) -> dict[str, Any]:
    xdm = {
        "_id": _id,
        "timestamp": now_iso(),
        "eventType": "SessionScheduled",
        "identityMap": {"Email": [{"id": "a@example.com", "primary": True}]},
        "_tenant": {"transmissionId": transmission_id},
        **entity,
    }
    return {
        "header": {
            "schemaRef": dict(SCHEMA_REF),
            "imsOrgId": CONFIG.org_id,
            "datasetId": "dataset-1",
            "source": {"name": "rainbridge"},
        },
        "body": {"xdmMeta": {"schemaRef": dict(SCHEMA_REF)}, "xdmEntity": xdm},
    }


def get_token(url: str, **overrides: str) -> requests.Response:
    form = {
        "client_id": CONFIG.client_id,
        "client_secret": CONFIG.client_secret,
        "grant_type": "client_credentials",
        "scope": "openid,AdobeID,read_organizations",
        **overrides,
    }
    return requests.post(f"{url}/ims/token/v3", data=form, timeout=TIMEOUT)


def auth_headers(url: str) -> dict[str, str]:
    token = get_token(url).json()["access_token"]
    return {
        "Authorization": f"Bearer {token}",
        "x-gw-ims-org-id": CONFIG.org_id,
        "x-api-key": "sandbox-client",
    }


def post_batch(
    url: str, messages: list[Any], headers: dict[str, str] | None = None, inlet: str = CONFIG.inlet_id
) -> requests.Response:
    headers = headers if headers is not None else auth_headers(url)
    return requests.post(
        f"{url}/collection/batch/{inlet}", json={"messages": messages}, headers=headers, timeout=TIMEOUT
    )


def post_single(
    url: str, message: Any, headers: dict[str, str] | None = None, **kwargs: Any
) -> requests.Response:
    headers = headers if headers is not None else auth_headers(url)
    return requests.post(
        f"{url}/collection/{CONFIG.inlet_id}", json=message, headers=headers, timeout=TIMEOUT, **kwargs
    )


def set_faults(url: str, **faults: Any) -> dict[str, Any]:
    response = requests.post(f"{url}/sandbox/faults", json=faults, timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result


def get_json(url: str, path: str, **kwargs: Any) -> Any:
    response = requests.get(f"{url}{path}", timeout=TIMEOUT, **kwargs)
    response.raise_for_status()
    return response.json()


def test_token_minting(sandbox: SandboxServer) -> None:
    response = get_token(sandbox.url)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == 86399
    assert len(body["access_token"]) > 20
    # Adobe also accepts the parameters in the query string.
    query = {"client_id": CONFIG.client_id, "client_secret": CONFIG.client_secret}
    query |= {"grant_type": "client_credentials", "scope": "openid"}
    assert requests.post(f"{sandbox.url}/ims/token/v3", params=query, timeout=TIMEOUT).status_code == 200
    assert get_json(sandbox.url, "/sandbox/stats")["tokens_minted"] == 2


def test_token_bad_client(sandbox: SandboxServer) -> None:
    wrong_secret = get_token(sandbox.url, client_secret="nope")
    assert wrong_secret.status_code == 401
    assert wrong_secret.json()["error"] == "invalid_client"
    unknown_client = get_token(sandbox.url, client_id="someone-else")
    assert unknown_client.status_code == 400
    assert unknown_client.json()["error"] == "invalid_client"
    wrong_grant = get_token(sandbox.url, grant_type="password")
    assert (wrong_grant.status_code, wrong_grant.json()["error"]) == (400, "unsupported_grant_type")
    assert get_token(sandbox.url, scope="").json()["error"] == "invalid_scope"
    assert get_json(sandbox.url, "/sandbox/stats")["tokens_minted"] == 0


def test_single_message_shape(sandbox: SandboxServer) -> None:
    response = post_single(sandbox.url, envelope())
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"inletId", "xactionId", "receivedTimeMs", "syncValidation"}
    assert body["inletId"] == CONFIG.inlet_id
    assert body["syncValidation"] == {"skipped": True}
    assert len(body["xactionId"].split(":")) == 3
    [event] = get_json(sandbox.url, "/sandbox/events")["events"]
    assert event["xactionId"] == body["xactionId"]
    assert (event["kind"], event["id"], event["transmissionId"]) == ("xdm", "id-1", "tx-1")
    assert event["eventType"] == "SessionScheduled"
    assert event["oversize"] is False
    assert event["message"]["body"]["xdmEntity"]["_id"] == "id-1"

    invalid = envelope()
    invalid["header"]["imsOrgId"] = "other@AdobeOrg"
    rejected = post_single(sandbox.url, invalid)
    assert rejected.status_code == 400
    assert "wrong ims org" in rejected.json()["report"]["message"]


def test_auth_failures(sandbox: SandboxServer) -> None:
    valid = [envelope()]
    no_token = post_batch(sandbox.url, valid, headers={"x-gw-ims-org-id": CONFIG.org_id})
    assert no_token.status_code == 401
    assert no_token.json() == {"error_code": "401013", "message": "Oauth token is not valid"}
    bogus = {"Authorization": "Bearer not-a-token", "x-gw-ims-org-id": CONFIG.org_id}
    assert post_batch(sandbox.url, valid, headers=bogus).status_code == 401

    headers = auth_headers(sandbox.url)
    wrong_org = post_batch(sandbox.url, valid, headers={**headers, "x-gw-ims-org-id": "other@AdobeOrg"})
    assert wrong_org.status_code == 403
    assert wrong_org.json()["error_code"] == "403025"
    no_org = post_batch(sandbox.url, valid, headers={"Authorization": headers["Authorization"]})
    assert (no_org.status_code, no_org.json()["error_code"]) == (400, "400003")
    assert post_batch(sandbox.url, valid, headers=headers).status_code == 207

    set_faults(sandbox.url, expire_tokens=True)
    assert post_batch(sandbox.url, valid, headers=headers).status_code == 401
    assert "expire_tokens" not in get_json(sandbox.url, "/sandbox/faults")
    stats = get_json(sandbox.url, "/sandbox/stats")
    assert stats["requests_by_status"] == {"401": 3, "403": 1, "400": 1, "207": 1}


def test_token_ttl_expiry(sandbox: SandboxServer) -> None:
    assert set_faults(sandbox.url, token_ttl=1) == {"token_ttl": 1}
    token = get_token(sandbox.url).json()
    assert token["expires_in"] == 1
    headers = {"Authorization": f"Bearer {token['access_token']}", "x-gw-ims-org-id": CONFIG.org_id}
    assert post_batch(sandbox.url, [envelope()], headers=headers).status_code == 207
    # A second later (however late this machine gets to it) the token no longer opens the inlet
    wait_for(lambda: post_batch(sandbox.url, [envelope()], headers=headers).status_code == 401, timeout=10)


def test_unknown_inlet_and_too_large(sandbox: SandboxServer) -> None:
    assert post_batch(sandbox.url, [envelope()], inlet="other-inlet").status_code == 404
    headers = {**auth_headers(sandbox.url), "Content-Type": "application/json"}
    padding = "x" * 1_000_000
    response = requests.post(
        f"{sandbox.url}/collection/batch/{CONFIG.inlet_id}",
        data=f'{{"messages": [], "pad": "{padding}"}}',
        headers=headers,
        timeout=TIMEOUT,
    )
    assert response.status_code == 413
    requests_seen = get_json(sandbox.url, "/sandbox/requests")["requests"]
    assert [r["status"] for r in requests_seen] == [404, 413]
    assert requests_seen[1]["bytes"] > 1_000_000
    assert get_json(sandbox.url, "/sandbox/stats")["events"] == 0


def test_malformed_requests(sandbox: SandboxServer) -> None:
    headers = auth_headers(sandbox.url)
    url = f"{sandbox.url}/collection/batch/{CONFIG.inlet_id}"
    as_text = requests.post(
        url, data="{}", headers={**headers, "Content-Type": "text/plain"}, timeout=TIMEOUT
    )
    assert as_text.status_code == 400
    broken = requests.post(
        url, data="{not json", headers={**headers, "Content-Type": "application/json"}, timeout=TIMEOUT
    )
    assert broken.status_code == 400
    assert post_batch(sandbox.url, [], headers=headers).status_code == 400
    no_messages = requests.post(url, json={"events": [envelope()]}, headers=headers, timeout=TIMEOUT)
    assert no_messages.status_code == 400


def test_batch_mixed_messages_in_order(sandbox: SandboxServer) -> None:
    no_body = envelope("id-2")
    del no_body["body"]
    wrong_org = envelope("id-3")
    wrong_org["header"]["imsOrgId"] = "other@AdobeOrg"
    future = envelope("id-4", timestamp=now_iso(timedelta(minutes=5)))
    naive_time = envelope("id-5", timestamp="2023-04-01T00:41:57")
    other_schema = envelope("id-6")
    other_schema["body"]["xdmMeta"]["schemaRef"] = {
        **SCHEMA_REF,
        "id": "https://ns.adobe.com/tenant/schemas/x",
    }
    no_event_type = envelope("id-7", eventType="")
    big = envelope("id-8", "tx-8", _tenant={"transmissionId": "tx-8", "note": "n" * 11_000})
    messages = [
        envelope("id-1"),
        no_body,
        wrong_org,
        future,
        naive_time,
        other_schema,
        no_event_type,
        big,
        42,
    ]
    response = post_batch(sandbox.url, messages)
    assert response.status_code == 207
    body = response.json()
    assert body["inletId"] == CONFIG.inlet_id
    assert isinstance(body["receivedTimeMs"], int)
    results = body["responses"]
    assert len(results) == len(messages)
    accepted = [i for i, r in enumerate(results) if "xactionId" in r]
    assert accepted == [0, 7]
    assert results[0]["xactionId"] == f"{body['batchId']}:0"
    expected_words = {
        1: "unknown xdm format",
        2: "wrong ims org",
        3: "in the future",
        4: "time zone",
        5: "xdmMeta.schemaRef",
        6: "eventType",
        8: "JSON object",
    }
    for index, words in expected_words.items():
        assert results[index]["statusCode"] == 400
        assert words in results[index]["message"], results[index]
    events = get_json(sandbox.url, "/sandbox/events")["events"]
    assert [(e["seq"], e["id"], e["oversize"]) for e in events] == [(1, "id-1", False), (2, "id-8", True)]
    assert events[1]["transmissionId"] == "tx-8"
    [record] = get_json(sandbox.url, "/sandbox/requests")["requests"]
    assert (record["status"], record["messages"], record["path"]) == (
        207,
        9,
        "/collection/batch/sandbox-inlet",
    )
    assert record["headers"]["x-api-key"] == "sandbox-client"
    assert record["headers"]["authorization"].startswith("Bearer ")
    assert record["bytes"] > 0


def test_raw_push_needs_flow_id(sandbox: SandboxServer) -> None:
    push = {"transmissionId": "1680309557133001YHhz", "eventType": "SessionScheduled", "timestamp": now_iso()}
    without = post_single(sandbox.url, push)
    assert without.status_code == 400
    assert "x-adobe-flow-id" in without.json()["report"]["message"]
    headers = {**auth_headers(sandbox.url), "x-adobe-flow-id": "flow-1"}
    assert post_single(sandbox.url, push, headers=headers).status_code == 200
    as_query = post_single(sandbox.url, push, params={"x-adobe-flow-id": "flow-1"})
    assert as_query.status_code == 200
    events = get_json(sandbox.url, "/sandbox/events")["events"]
    assert [(e["kind"], e["id"], e["transmissionId"]) for e in events] == [
        ("raw", None, push["transmissionId"])
    ] * 2
    assert get_json(sandbox.url, "/sandbox/requests")["requests"][2]["query"] == "x-adobe-flow-id=flow-1"


def test_fail_next_counts_down(sandbox: SandboxServer) -> None:
    set_faults(sandbox.url, fail_next={"count": 2, "status": 503, "retry_after": "5"})
    headers = auth_headers(sandbox.url)
    first, second = (post_batch(sandbox.url, [envelope()], headers=headers) for _ in range(2))
    assert (first.status_code, first.headers["Retry-After"]) == (503, "5")
    assert second.status_code == 503
    assert post_batch(sandbox.url, [envelope()], headers=headers).status_code == 207
    http_date = "Wed, 21 Oct 2037 07:28:00 GMT"
    set_faults(sandbox.url, fail_next={"status": 429, "retry_after": http_date, "body": {"custom": True}})
    throttled = post_batch(sandbox.url, [envelope()], headers=headers)
    assert (throttled.status_code, throttled.headers["Retry-After"], throttled.json()) == (
        429,
        http_date,
        {"custom": True},
    )
    stats = get_json(sandbox.url, "/sandbox/stats")
    assert stats["requests_by_status"] == {"503": 2, "207": 1, "429": 1}
    assert stats["events"] == 1
    assert stats["faults"] == {}


def test_reject_ids_per_message_and_per_request(sandbox: SandboxServer) -> None:
    set_faults(sandbox.url, reject_ids=["tx-2"], reject_message="poison")
    headers = auth_headers(sandbox.url)
    messages = [envelope("id-1", "tx-1"), envelope("id-2", "tx-2"), envelope("id-3", "tx-3")]
    results = post_batch(sandbox.url, messages, headers=headers).json()["responses"]
    assert ["xactionId" in r for r in results] == [True, False, True]
    assert results[1]["statusCode"] == 400
    assert "poison" in results[1]["message"]
    single = post_single(sandbox.url, envelope("id-2", "tx-2"), headers=headers)
    assert single.status_code == 400

    set_faults(sandbox.url, reject_ids=["id-3"], reject_mode="request", reject_status=422)
    whole = post_batch(sandbox.url, messages, headers=headers)
    assert whole.status_code == 422
    assert post_batch(sandbox.url, messages[:2], headers=headers).status_code == 207
    assert get_json(sandbox.url, "/sandbox/stats")["events"] == 4


def test_slow_ms_delays_responses(sandbox: SandboxServer) -> None:
    headers = auth_headers(sandbox.url)
    set_faults(sandbox.url, slow_ms=300)
    started = time.monotonic()
    assert post_batch(sandbox.url, [envelope()], headers=headers).status_code == 207
    assert time.monotonic() - started >= 0.3
    set_faults(sandbox.url, slow_ms=0)
    started = time.monotonic()
    post_batch(sandbox.url, [envelope()], headers=headers)
    assert time.monotonic() - started < 0.3


def test_down_for_ms_and_ims_fail_next(sandbox: SandboxServer) -> None:
    headers = auth_headers(sandbox.url)
    faults = set_faults(sandbox.url, down_for_ms=400)
    assert 0 < faults["down_for_ms"] <= 400
    for response in (post_batch(sandbox.url, [envelope()], headers=headers), get_token(sandbox.url)):
        assert response.status_code == 503
        assert response.json() == {"message": "Service Unavailable"}
        assert "Retry-After" not in response.headers
    wait_for(lambda: post_batch(sandbox.url, [envelope()], headers=headers).status_code == 207, timeout=10)

    set_faults(sandbox.url, ims_fail_next={"count": 1, "status": 500})
    assert get_token(sandbox.url).status_code == 500
    assert get_token(sandbox.url).status_code == 200
    # IMS faults do not touch the collection endpoints.
    assert post_batch(sandbox.url, [envelope()], headers=headers).status_code == 207


def test_fault_validation_merge_and_delete(sandbox: SandboxServer) -> None:
    bad = requests.post(f"{sandbox.url}/sandbox/faults", json={"slow_ms": "fast"}, timeout=TIMEOUT)
    assert bad.status_code == 400
    unknown = requests.post(f"{sandbox.url}/sandbox/faults", json={"explode": True}, timeout=TIMEOUT)
    assert unknown.status_code == 400
    set_faults(sandbox.url, slow_ms=1)
    merged = set_faults(sandbox.url, fail_next={"count": 3, "status": 500})
    assert merged == {"slow_ms": 1, "fail_next": {"count": 3, "status": 500}}
    assert set_faults(sandbox.url, slow_ms=None) == {"fail_next": {"count": 3, "status": 500}}
    cleared = requests.delete(f"{sandbox.url}/sandbox/faults", timeout=TIMEOUT)
    assert cleared.json() == {}


def test_reset_clears_everything(sandbox: SandboxServer) -> None:
    post_batch(sandbox.url, [envelope()])
    set_faults(sandbox.url, slow_ms=5)
    stats = requests.post(f"{sandbox.url}/sandbox/reset", timeout=TIMEOUT).json()
    nothing_made = {
        name: [] for name in ("field groups", "schemas", "descriptors", "datasets", "connections")
    }
    nothing_made |= {"flows": [], "mapping sets": []}
    assert stats == {
        "events": 0,
        "requests": 0,
        "requests_by_status": {},
        "tokens_minted": 0,
        "faults": {},
        "platform": nothing_made,
    }


def test_events_paging(sandbox: SandboxServer) -> None:
    post_batch(sandbox.url, [envelope(f"id-{n}", f"tx-{n}") for n in range(5)])
    page = get_json(sandbox.url, "/sandbox/events", params={"since": 2, "limit": 2})
    assert page["count"] == 5
    assert [e["seq"] for e in page["events"]] == [3, 4]
    assert get_json(sandbox.url, "/sandbox/requests", params={"since": 1})["requests"] == []


def test_no_auth_inlet_without_stored_bodies() -> None:
    with SandboxServer(SandboxConfig(authenticated=False, store_bodies=False)) as server:
        response = post_batch(server.url, [envelope()], headers={})
        assert response.status_code == 207
        [event] = get_json(server.url, "/sandbox/events")["events"]
        assert "message" not in event
        assert event["id"] == "id-1"
        assert "id-1" in requests.get(f"{server.url}/", timeout=TIMEOUT).text


def test_restart_on_same_port_keeps_state() -> None:
    server = SandboxServer().start()
    try:
        post_batch(server.url, [envelope()])
        port = server.port
        server.stop()
        with pytest.raises(requests.ConnectionError):
            get_token(server.url)
        server.start()
        assert server.port == port
        assert get_json(server.url, "/sandbox/stats")["events"] == 1
        server.stop()
        # A new server object on the same app serves the same state.
        with SandboxServer(port=port, app=server.app) as again:
            assert get_json(again.url, "/sandbox/stats")["events"] == 1
    finally:
        server.stop()


def test_start_on_taken_port_raises() -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        with pytest.raises(OSError, match="cannot bind"):
            SandboxServer(port=blocker.getsockname()[1]).start()


def test_page_escapes_event_fields(sandbox: SandboxServer) -> None:
    hostile = envelope("<b>id</b>", eventType="<script>alert(1)</script>")
    assert post_batch(sandbox.url, [hostile]).json()["responses"][0].get("xactionId")
    for path in ("/", "/sandbox/"):
        response = requests.get(f"{sandbox.url}{path}", timeout=TIMEOUT)
        assert response.status_code == 200
        assert response.headers["Content-Type"].startswith("text/html")
        assert "<script>" not in response.text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text
        assert 'http-equiv="refresh"' in response.text
        assert "Email: a@example.com" in response.text


def test_basic_auth_on_control_routes() -> None:
    config = SandboxConfig(username="ops", password="s3cret")
    with SandboxServer(config) as server:
        for path in ("/", "/sandbox/", "/sandbox/stats", "/sandbox/events"):
            denied = requests.get(f"{server.url}{path}", timeout=TIMEOUT)
            assert denied.status_code == 401
            assert denied.headers["WWW-Authenticate"].startswith("Basic")
        wrong = requests.get(f"{server.url}/sandbox/stats", auth=("ops", "nope"), timeout=TIMEOUT)
        assert wrong.status_code == 401
        assert requests.post(f"{server.url}/sandbox/reset", timeout=TIMEOUT).status_code == 401
        # Collection and IMS never ask for the operator's password.
        assert post_batch(server.url, [envelope()]).status_code == 207
        stats = get_json(server.url, "/sandbox/stats", auth=("ops", "s3cret"))
        assert stats["events"] == 1


def test_main_refuses_public_bind_without_credentials(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--host", "0.0.0.0", "--port", "0"]) == 2  # noqa: S104 - the refusal is what is tested
    assert "--username" in capsys.readouterr().err
