"""The receiver under hostile input: every bad request gets a defined JSON 4xx, nothing else.

Generated requests (any bytes, any JSON, any auth, content type and coding) must get a 2xx only
when authenticated and holding pushes within limits, a JSON 4xx otherwise, never a 5xx while
Redis is up, and must store nothing unless answered 2xx. Each limit then has its own cases,
the streaming ones over real HTTP against gunicorn, and the last tests grep what the receiver
says and logs for the emails and tokens it was sent.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import hashlib
import hmac
import io
import json
import logging
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

import hypothesis
import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from werkzeug.http import parse_options_header

from devkit import samples
from receiver.body import MAX_DEPTH, MAX_MEMBERS, MAX_NUMBER_CHARS
from shared import keys
from shared.settings import Settings
from tests.helpers import INLET, TOKEN
from tests.strategies import any_json

MakeApp = Callable[[Settings], Flask]

BEARER = f"Bearer {TOKEN}"
BASIC = "Basic " + base64.b64encode(f"rainfocus:{TOKEN}".encode()).decode()
JSON_HEADERS = {"Authorization": BEARER, "Content-Type": "application/json"}
ERROR_CODES = {
    "invalid_json",
    "not_a_push",
    "too_large",
    "unsupported_media_type",
    "unauthorized",
    "not_found",
}

EXAMPLES = hypothesis.settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Header values a client can send: printable ASCII, no line breaks.
header_text = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


def mostly(usual: st.SearchStrategy[Any], other: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``usual`` four times in five, else ``other``: the deeper checks are reached as often as not."""
    return st.integers(0, 4).flatmap(lambda pick: other if pick == 0 else usual)


auths = mostly(
    st.sampled_from([BEARER, BASIC]),
    st.sampled_from(
        [None, "", "Bearer ", f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", f"Token {TOKEN}", f"Basic {TOKEN}"]
    )
    | header_text.map(lambda text: f"Bearer {text}"),
)
content_types = mostly(
    st.sampled_from(
        ["application/json", "application/json; charset=utf-8", "Application/JSON", "application/vnd.rf+json"]
    ),
    st.sampled_from(
        [None, "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "json"]
    )
    | header_text,
)
codings = mostly(
    st.sampled_from([None, None, "", "gzip", "x-gzip", "GZIP", "identity", "gzip, identity"]),
    st.sampled_from(["br", "deflate", "compress", "zstd", "gzip, gzip"]) | header_text,
)
json_values = any_json(max_int=10**30, max_text=20, max_key=10, max_leaves=10)
# Mostly what a sender would send: an object, or an array of objects.
push_like = st.dictionaries(st.text(max_size=10), json_values, max_size=5)
json_bodies = push_like | st.lists(push_like, min_size=0, max_size=4) | json_values


def inbox(client: redis.Redis) -> list[Any]:
    """The pushes in the inbox, parsed."""
    return [json.loads(fields["push"]) for _, fields in client.xrange(keys.INBOX)]


def is_json_type(content_type: str | None) -> bool:
    """Whether the receiver should take ``content_type`` as JSON."""
    mimetype = parse_options_header(content_type or "")[0].lower()
    return mimetype == "application/json" or mimetype.endswith("+json")


def coding_of(header: str | None) -> str | None:
    """``identity`` or ``gzip`` for a Content-Encoding the receiver takes, None for one it refuses."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    return "gzip" if codings in (["gzip"], ["x-gzip"]) else None


def strict_json(raw: bytes) -> Any:
    """``raw`` parsed the strictest way: UTF-8, no duplicate keys, no NaN or Infinity."""

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        assert len({key for key, _ in pairs}) == len(pairs), "a duplicate key was accepted"
        return dict(pairs)

    def refuse(name: str) -> Any:
        raise AssertionError(f"{name} was accepted")

    return json.loads(raw.decode("utf-8"), object_pairs_hook=no_duplicates, parse_constant=refuse)


def depth(value: Any) -> int:
    """How deep ``value`` nests: 0 for a scalar, 1 for a flat array or object."""
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    return 0


def headers_of(auth: str | None, content_type: str | None, coding: str | None) -> dict[str, str]:
    """Request headers, leaving out the ones given as None."""
    named = {"Authorization": auth, "Content-Type": content_type, "Content-Encoding": coding}
    return {name: value for name, value in named.items() if value is not None}


def assert_json_error(resp: Any, status: int | None = None) -> str:
    """``resp`` is a JSON error answer (of ``status``, if given); returns its code."""
    assert 400 <= resp.status_code < 500, (resp.status_code, resp.get_data()[:300])
    if status is not None:
        assert resp.status_code == status, resp.json
    assert resp.is_json
    assert set(resp.json) == {"error", "detail"}
    assert resp.json["error"] in ERROR_CODES
    assert resp.json["detail"]
    code: str = resp.json["error"]
    return code


def check_answer(
    resp: Any, stored: list[Any], body: bytes, auth: str | None, content_type: str | None, coding: str | None
) -> None:
    """The answer to a request on /v1/pushes, and what it stored, are what the rules allow."""
    if auth not in {BEARER, BASIC}:
        assert_json_error(resp, 401)
    elif not is_json_type(content_type):
        assert assert_json_error(resp, 415) == "unsupported_media_type"
    elif coding_of(coding) is None:
        assert assert_json_error(resp, 415) == "unsupported_media_type"
        assert resp.headers["Accept-Encoding"] == "gzip"
    elif resp.status_code == 202:
        raw = gzip.decompress(body) if coding_of(coding) == "gzip" else body
        value = strict_json(raw)
        pushes = value if isinstance(value, list) else [value]
        assert len(pushes) >= 1 and all(isinstance(p, dict) for p in pushes)
        assert depth(value) <= MAX_DEPTH
        assert resp.json["accepted"] == len(pushes)
        assert stored == pushes
        return
    else:
        assert assert_json_error(resp) in {"invalid_json", "not_a_push", "too_large"}
    assert stored == []


@st.composite
def requests_(draw: st.DrawFn) -> tuple[bytes, str | None, str | None, str | None]:
    """A body with headers: bytes or JSON text, gzip-compressed or not (whatever it claims)."""
    auth, content_type, coding = draw(auths), draw(content_types), draw(codings)
    if draw(st.booleans()):
        body = draw(st.binary(max_size=200))
    else:
        body = json.dumps(draw(json_bodies), ensure_ascii=draw(st.booleans())).encode()
        if draw(st.integers(0, 4)) == 0:  # a byte flipped, cut or added
            at = draw(st.integers(0, len(body)))
            body = body[:at] + draw(st.binary(max_size=2)) + body[at + draw(st.integers(0, 2)) :]
    # Compressed mostly when it says so; not always, and sometimes when it does not say so.
    if draw(st.integers(0, 9)) < (8 if coding_of(coding) == "gzip" else 1):
        body = gzip.compress(body)
    return body, auth, content_type, coding


@EXAMPLES
@given(request=requests_())
def test_any_request_gets_a_202_only_for_pushes_within_limits_and_a_json_4xx_otherwise(
    client: FlaskClient, redis_client: redis.Redis, request: tuple[bytes, str | None, str | None, str | None]
) -> None:
    body, auth, content_type, coding = request
    redis_client.delete(keys.INBOX)
    resp = client.post("/v1/pushes", data=body, headers=headers_of(auth, content_type, coding))
    hypothesis.event(f"answered {resp.status_code}")
    check_answer(resp, inbox(redis_client), body, auth, content_type, coding)


@EXAMPLES
@given(value=json_bodies, auth=auths, coding=st.sampled_from([None, "gzip", "x-gzip", "identity"]))
def test_any_json_is_accepted_exactly_when_it_is_pushes_and_the_sender_authenticated(
    client: FlaskClient, redis_client: redis.Redis, value: Any, auth: str | None, coding: str | None
) -> None:
    redis_client.delete(keys.INBOX)
    body = json.dumps(value).encode()
    sent = gzip.compress(body) if coding in {"gzip", "x-gzip"} else body
    resp = client.post("/v1/pushes", data=sent, headers=headers_of(auth, "application/json", coding))
    hypothesis.event(f"answered {resp.status_code}")
    pushes = value if isinstance(value, list) else [value]
    if auth not in {BEARER, BASIC}:
        assert_json_error(resp, 401)
        assert inbox(redis_client) == []
    elif depth(value) > MAX_DEPTH:
        assert assert_json_error(resp, 400) == "invalid_json"
    elif pushes and all(isinstance(p, dict) for p in pushes):
        assert resp.status_code == 202, resp.json
        assert inbox(redis_client) == pushes
    else:
        assert assert_json_error(resp, 400) == "not_a_push"
        assert inbox(redis_client) == []


@EXAMPLES
@given(
    request=requests_(),
    inlet=mostly(st.just(INLET), st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=40)),
    batch=st.booleans(),
)
def test_the_aep_door_answers_any_request_like_aep_or_with_a_json_4xx(
    client: FlaskClient,
    redis_client: redis.Redis,
    request: tuple[bytes, str | None, str | None, str | None],
    inlet: str,
    batch: bool,
) -> None:
    body, auth, content_type, coding = request
    if batch and body[:1] in {b"{", b"["} and coding_of(coding) == "identity":
        body = b'{"messages": [' + body + b"]}"
    redis_client.delete(keys.INBOX)
    path = f"/collection/batch/{inlet}" if batch else f"/collection/{inlet}"
    resp = client.post(path, data=body, headers=headers_of(auth, content_type, coding))
    hypothesis.event(f"answered {resp.status_code}")
    stored = inbox(redis_client)
    if inlet != INLET:
        assert assert_json_error(resp, 404) == "not_found"
    elif resp.status_code in {200, 207}:
        # The Authorization header is not ours to check on this door: any value goes.
        assert is_json_type(content_type) and coding_of(coding) is not None
        value = strict_json(gzip.decompress(body) if coding_of(coding) == "gzip" else body)
        messages = value["messages"] if batch else [value]
        assert stored == [m for m in messages if isinstance(m, dict)]
        assert len(resp.json["responses"] if batch else [resp.json]) == len(messages)
        return
    else:
        assert_json_error(resp)
    assert stored == []


# --- Each limit: a defined 4xx, the JSON error body, nothing stored ------------------------------

PUSH = json.dumps(samples.push()).encode()
GZ = {"Content-Encoding": "gzip"}
BAD = (400, "invalid_json")
NOT_PUSH = (400, "not_a_push")
UNSUPPORTED = (415, "unsupported_media_type")
# (what, body, extra headers, (status, error code))
# fmt: off
CASES: list[tuple[str, bytes, dict[str, str], tuple[int, str]]] = [
    ("empty body", b"", {}, BAD),
    ("whitespace only", b" \r\n\t", {}, BAD),
    ("a UTF-8 byte order mark", b"\xef\xbb\xbf" + PUSH, {}, BAD),
    ("Latin-1, not UTF-8", '{"note": "café"}'.encode("latin-1"), {}, BAD),
    ("UTF-16", '{"note": "x"}'.encode("utf-16"), {}, BAD),
    ("an overlong UTF-8 form", b'{"note": "\xc0\xaf"}', {}, BAD),
    ("a UTF-8-encoded surrogate", b'{"note": "\xed\xa0\x80"}', {}, BAD),
    ("a lone high surrogate escape", b'{"note": "\\ud800"}', {}, BAD),
    ("a lone low surrogate escape in a key", b'{"\\udc00": 1}', {}, BAD),
    ("a reversed surrogate pair", b'{"note": "\\ude00\\ud83d"}', {}, BAD),
    ("NaN", b'{"n": NaN}', {}, BAD),
    ("Infinity", b'{"n": Infinity}', {}, BAD),
    ("-Infinity", b'{"n": -Infinity}', {}, BAD),
    ("a float that overflows to infinity", b'{"n": 1e400}', {}, BAD),
    ("a negative float that overflows", b'{"n": -1.5E+999}', {}, BAD),
    ("an integer past Python's 4300 digits", b'{"n": ' + b"9" * 5000 + b"}", {}, BAD),
    ("a number literal over the cap", b'{"n": ' + b"1" * (MAX_NUMBER_CHARS + 1) + b"}", {}, BAD),
    ("a long fraction", b'{"n": 0.' + b"1" * MAX_NUMBER_CHARS + b"}", {}, BAD),
    ("a duplicate key", b'{"transmissionId": "a", "transmissionId": "b"}', {}, BAD),
    ("a duplicate key nested", b'{"attendee": {"email": "a@b.c", "email": "d@e.f"}}', {}, BAD),
    ("a duplicate key in an array item", b'[{"a": 1}, {"b": 1, "b": 1}]', {}, BAD),
    ("arrays one past the depth limit", b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1), {}, BAD),
    ("objects one past the depth limit", b'{"a":' * (MAX_DEPTH + 1) + b"1" + b"}" * (MAX_DEPTH + 1), {}, BAD),
    ("arrays nested 100,000 deep", b"[" * 100_000 + b"]" * 100_000, {}, BAD),
    ("an unclosed nesting 100,000 deep", b'{"a":' * 100_000, {}, BAD),
    ("a nested array over the member cap", b'{"a": [' + b"0," * MAX_MEMBERS + b"0]}", {}, BAD),
    ("an object over the member cap",
     b"{" + b",".join(b'"%d":0' % i for i in range(MAX_MEMBERS + 1)) + b"}", {}, BAD),
    ("trailing data", PUSH + b" {}", {}, BAD),
    ("a raw control character in a string", b'{"note": "a\x01b"}', {}, BAD),
    ("single quotes", b"{'a': 1}", {}, BAD),
    ("a JSON string", b'"a push"', {}, NOT_PUSH),
    ("an empty array", b"[]", {}, NOT_PUSH),
    ("an array with a non-object", b'[{"a": 1}, [1]]', {}, NOT_PUSH),
    ("no content type", PUSH, {"Content-Type": ""}, UNSUPPORTED),
    ("text/plain", PUSH, {"Content-Type": "text/plain"}, UNSUPPORTED),
    ("form-encoded", PUSH, {"Content-Type": "application/x-www-form-urlencoded"}, UNSUPPORTED),
    ("deflate", PUSH, {"Content-Encoding": "deflate"}, UNSUPPORTED),
    ("br", PUSH, {"Content-Encoding": "br"}, UNSUPPORTED),
    ("gzip twice", gzip.compress(gzip.compress(PUSH)), {"Content-Encoding": "gzip, gzip"}, UNSUPPORTED),
    ("gzip claimed, plain sent", PUSH, GZ, BAD),
    ("gzip, corrupt", b"\x1f\x8b\x08\x00" + b"\x00" * 20, GZ, BAD),
    ("gzip, truncated", gzip.compress(PUSH)[:-8], GZ, BAD),
    ("gzip, junk after it", gzip.compress(PUSH) + b"junk", GZ, BAD),
    ("gzip of nothing", gzip.compress(b""), GZ, BAD),
    ("gzip of a BOM", gzip.compress(b"\xef\xbb\xbf" + PUSH), GZ, BAD),
    ("zlib, not gzip", zlib.compress(PUSH), GZ, BAD),
]
# fmt: on


@pytest.mark.parametrize(("body", "headers", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_limit_is_a_defined_4xx_with_a_json_error_and_nothing_is_stored(
    client: FlaskClient,
    redis_client: redis.Redis,
    body: bytes,
    headers: dict[str, str],
    expected: tuple[int, str],
) -> None:
    sent = {**JSON_HEADERS, **headers}
    resp = client.post("/v1/pushes", data=body, headers={k: v for k, v in sent.items() if v})
    assert assert_json_error(resp, expected[0]) == expected[1]
    assert inbox(redis_client) == []
    if expected[0] == 415 and "Content-Encoding" in headers:
        assert resp.headers["Accept-Encoding"] == "gzip"


@pytest.mark.parametrize(
    "body",
    [
        b'{"note": "\\ud83d\\ude00"}',  # a surrogate pair is one character, fine
        b'{"note": "\\\\ud800"}',  # an escaped backslash, then the text "ud800"
        b'{"a":' * (MAX_DEPTH - 1) + b"{}" + b"}" * (MAX_DEPTH - 1),
        b'{"a": [' + b"0," * (MAX_MEMBERS - 1) + b"0]}",
        b'{"n": ' + b"9" * MAX_NUMBER_CHARS + b"}",
        b'{"n": 1e308, "m": -0.0, "z": 1e-400}',
        b'{"brackets in a string": "' + b"[{" * 100 + b'"}',
        b'{"a": 1, "A": 2, "a ": 3}',
        b'{"nul": "\\u0000"}',
    ],
    ids=[
        "surrogate pair", "escaped backslash", "at the depth limit", "at the member limit",
        "at the number cap", "extreme but finite floats", "brackets inside strings",
        "keys that only look alike", "an escaped NUL",
    ],
)  # fmt: skip
def test_json_at_the_edge_of_each_limit_is_accepted(
    client: FlaskClient, redis_client: redis.Redis, body: bytes
) -> None:
    resp = client.post("/v1/pushes", data=body, headers=JSON_HEADERS)
    assert resp.status_code == 202, resp.json
    assert inbox(redis_client) == [json.loads(body)]


def test_a_body_of_exactly_the_limit_is_accepted_and_one_byte_more_is_413(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    limit = 4096
    http = make_app(dataclasses.replace(settings, receiver_max_bytes=limit)).test_client()
    exact = b'{"note": "' + b"x" * (limit - 12) + b'"}'
    assert len(exact) == limit
    assert http.post("/v1/pushes", data=exact, headers=JSON_HEADERS).status_code == 202
    resp = http.post("/v1/pushes", data=exact + b" ", headers=JSON_HEADERS)
    assert assert_json_error(resp, 413) == "too_large"
    assert len(inbox(redis_client)) == 1


def test_a_declared_length_over_the_limit_is_413_before_any_body_is_read(
    client: FlaskClient, redis_client: redis.Redis, settings: Settings
) -> None:
    # The declared length alone decides: the stream here would fail if anyone read from it.
    class Unreadable(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            raise AssertionError("the body was read")

        readinto = read  # type: ignore[assignment]

    resp = client.post(
        "/v1/pushes",
        input_stream=Unreadable(),
        headers=JSON_HEADERS,
        environ_overrides={"CONTENT_LENGTH": str(settings.receiver_max_bytes + 1)},
    )
    assert assert_json_error(resp, 413) == "too_large"
    assert inbox(redis_client) == []


def test_a_gzip_body_is_accepted_and_stored_decompressed(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    pushes = [samples.push(), samples.push()]
    for coding in ("gzip", "x-gzip", "GZip"):
        body = gzip.compress(json.dumps(pushes).encode())
        resp = client.post("/v1/pushes", data=body, headers={**JSON_HEADERS, "Content-Encoding": coding})
        assert resp.status_code == 202, resp.json
    # Several gzip members in a row are one gzip stream (RFC 1952 §2.2).
    text = json.dumps(pushes[0]).encode()
    members = gzip.compress(text[:50]) + gzip.compress(text[50:])
    assert (
        client.post(
            "/v1/pushes", data=members, headers={**JSON_HEADERS, "Content-Encoding": "gzip"}
        ).status_code
        == 202
    )
    assert inbox(redis_client) == pushes * 3 + [pushes[0]]


def test_a_gzip_bomb_is_413_without_inflating_it(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    limit = 1024 * 1024
    http = make_app(dataclasses.replace(settings, receiver_max_bytes=limit)).test_client()
    headers = {**JSON_HEADERS, "Content-Encoding": "gzip"}
    # Given a quarter of a megabyte that inflates to a quarter of a gigabyte
    bomb = _bomb(256 * limit)
    assert len(bomb) < limit

    # When it is sent, the answer is a 413, found after inflating no more than the limit
    started = time.monotonic()
    resp = http.post("/v1/pushes", data=bomb, headers=headers)
    assert assert_json_error(resp, 413) == "too_large"
    assert "decompressed" in resp.json["detail"]
    assert time.monotonic() - started < 2

    # Just at the limit once inflated is fine; one byte over is not
    exact = b'{"note": "' + b"x" * (limit - 12) + b'"}'
    assert http.post("/v1/pushes", data=gzip.compress(exact), headers=headers).status_code == 202
    assert http.post("/v1/pushes", data=gzip.compress(exact + b" "), headers=headers).status_code == 413
    assert len(inbox(redis_client)) == 1


def _bomb(size: int) -> bytes:
    """A gzip stream of ``size`` zero bytes, built without holding them in memory."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = b"0" * (1 << 20)
    out = [deflate.compress(b'{"note": "')]
    out += [deflate.compress(block) for _ in range(size // len(block))]
    out.append(deflate.flush())
    return b"".join(out)


def test_a_signature_covers_the_body_as_sent_even_compressed(
    settings: Settings, redis_client: redis.Redis, make_app: MakeApp
) -> None:
    secret = "signing-secret-0123456789"
    http = make_app(dataclasses.replace(settings, receiver_signing_secret=secret)).test_client()
    push = samples.push()
    body = gzip.compress(json.dumps(push).encode())
    stamp = str(int(time.time()))
    mac = hmac.new(secret.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    headers = {
        **JSON_HEADERS,
        "Content-Encoding": "gzip",
        "X-Rainbridge-Timestamp": stamp,
        "X-Rainbridge-Signature": f"sha256={mac}",
    }
    assert http.post("/v1/pushes", data=body, headers=headers).status_code == 202
    assert inbox(redis_client) == [push]


def test_the_aep_door_applies_the_same_limits(client: FlaskClient, redis_client: redis.Redis) -> None:
    for path in (f"/collection/{INLET}", f"/collection/batch/{INLET}"):
        for _, body, headers, (status, code) in CASES:
            if code == "not_a_push":
                continue  # the shapes differ per door; the doors' own tests cover them
            sent = {"Content-Type": "application/json", **headers}
            resp = client.post(path, data=body, headers={k: v for k, v in sent.items() if v})
            assert assert_json_error(resp, status) == code, (path, body[:60])
    assert inbox(redis_client) == []


# --- Over real HTTP: gunicorn, chunked bodies, gzip -----------------------------------------------


def exchange(url: str, head: bytes, parts: Iterable[bytes], timeout: float = 20) -> tuple[int, bytes]:
    """Send a raw request and read the answer at the same time; the status and body of the answer.

    Reading while sending lets the answer be seen even when the server answers before the body
    ends and closes the connection (a 413 to a body it will not read).
    """
    where = urlsplit(url)
    sock = socket.create_connection((where.hostname or "127.0.0.1", where.port or 80), timeout=timeout)
    received = bytearray()

    def read() -> None:
        try:
            while chunk := sock.recv(65536):
                received.extend(chunk)
        except OSError:
            pass  # a reset after the answer: what came before it is kept

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        sock.sendall(head)
        for part in parts:
            sock.sendall(part)
    except OSError:
        pass  # the server answered and closed before taking the whole body: that is the point
    reader.join(timeout)
    sock.close()
    assert not reader.is_alive(), "no answer: the server hung"
    status_line, _, rest = bytes(received).partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), bytes(received)[:200]
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def request_head(extra: str = "", path: str = "/v1/pushes") -> bytes:
    """The request line and headers of a JSON POST with the token."""
    return (
        f"POST {path} HTTP/1.1\r\nHost: rainbridge\r\nAuthorization: {BEARER}\r\n"
        f"Content-Type: application/json\r\n{extra}\r\n"
    ).encode()


def chunked(*pieces: bytes, end: bool = True) -> list[bytes]:
    """``pieces`` as HTTP/1.1 chunks, with the last chunk unless ``end`` is false."""
    return [b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces] + ([b"0\r\n\r\n"] if end else [])


def test_a_chunked_body_is_read_to_its_end_and_stored(receiver_url: str, redis_client: redis.Redis) -> None:
    push = json.dumps(samples.push()).encode()
    status, body = exchange(
        receiver_url, request_head("Transfer-Encoding: chunked\r\n"), chunked(push[:7], push[7:])
    )
    assert status == 202, body
    assert inbox(redis_client) == [json.loads(push)]


def test_a_chunked_body_over_the_limit_is_413_without_reading_the_rest(
    receiver_url: str, redis_client: redis.Redis, settings: Settings
) -> None:
    # Given a sender that would stream ten times the limit, with no Content-Length to refuse early
    block = b" " * 65536
    blocks = 10 * settings.receiver_max_bytes // len(block)
    sent = 0

    def stream() -> Iterable[bytes]:
        nonlocal sent
        yield from chunked(b"[", end=False)
        for part in chunked(*[block] * blocks):
            sent += len(part)
            yield part

    # When it sends, the answer is a 413 long before the stream would have ended
    status, body = exchange(receiver_url, request_head("Transfer-Encoding: chunked\r\n"), stream())
    assert status == 413, body
    assert json.loads(body)["error"] == "too_large"
    assert sent < 3 * settings.receiver_max_bytes
    assert inbox(redis_client) == []


def test_a_chunked_body_of_exactly_the_limit_is_accepted(
    receiver_url: str, redis_client: redis.Redis, settings: Settings
) -> None:
    exact = b'{"note": "' + b"x" * (settings.receiver_max_bytes - 12) + b'"}'
    status, body = exchange(receiver_url, request_head("Transfer-Encoding: chunked\r\n"), chunked(exact))
    assert status == 202, body
    assert len(inbox(redis_client)) == 1


@pytest.mark.parametrize(
    "framing",
    [b"zz\r\n{}\r\n0\r\n\r\n", b"2\r\n{}XX0\r\n\r\n", b"2;bad ext=\x01\r\n{}\r\n0\r\n\r\n"],
    ids=["a chunk size that is not hex", "a chunk without its CRLF", "a broken chunk extension"],
)
def test_broken_chunked_framing_is_a_json_400(
    receiver_url: str, redis_client: redis.Redis, framing: bytes
) -> None:
    status, body = exchange(receiver_url, request_head("Transfer-Encoding: chunked\r\n"), [framing])
    assert status == 400, body
    assert json.loads(body)["error"] == "bad_request"
    assert inbox(redis_client) == []


def test_a_declared_length_over_the_limit_is_answered_without_waiting_for_the_body(
    receiver_url: str, redis_client: redis.Redis, settings: Settings
) -> None:
    # Nothing of the body is sent: the answer can only come from the header.
    length = settings.receiver_max_bytes + 1
    status, body = exchange(receiver_url, request_head(f"Content-Length: {length}\r\n"), [], timeout=10)
    assert status == 413
    assert json.loads(body)["error"] == "too_large"
    assert inbox(redis_client) == []


def test_gzip_bodies_over_real_http(receiver_url: str, redis_client: redis.Redis, settings: Settings) -> None:
    push = samples.push()
    packed = gzip.compress(json.dumps(push).encode())
    gz = "Content-Encoding: gzip\r\n"
    # A gzip body, then the same body in chunks
    assert exchange(receiver_url, request_head(f"{gz}Content-Length: {len(packed)}\r\n"), [packed])[0] == 202
    assert (
        exchange(receiver_url, request_head(f"{gz}Transfer-Encoding: chunked\r\n"), chunked(packed))[0] == 202
    )
    # A bomb: a few kilobytes that would inflate past the limit
    bomb = _bomb(4 * settings.receiver_max_bytes)
    status, body = exchange(receiver_url, request_head(f"{gz}Content-Length: {len(bomb)}\r\n"), [bomb])
    assert (status, json.loads(body)["error"]) == (413, "too_large")
    # Corrupt gzip
    status, body = exchange(
        receiver_url, request_head(f"{gz}Content-Length: 12\r\n"), [b"\x1f\x8bnot gzip!!"]
    )
    assert (status, json.loads(body)["error"]) == (400, "invalid_json")
    # Another coding
    status, body = exchange(
        receiver_url, request_head("Content-Encoding: br\r\nContent-Length: 2\r\n"), [b"{}"]
    )
    assert (status, json.loads(body)["error"]) == (415, "unsupported_media_type")
    assert inbox(redis_client) == [push, push]


# --- Nothing said or logged holds a token or an email ---------------------------------------------

EMAIL = "Secret.Attendee+tag@Example.com"


@pytest.mark.parametrize(
    "presented",
    [
        "Bearer wrong-token-0123456789abcdef",
        f"Bearer {TOKEN}x",
        f"Bearer {TOKEN[:-1]}",
        f"Token {TOKEN}",
        "Basic " + base64.b64encode(b"rainfocus:wrong-token-0123456789abcdef").decode(),
        "Basic " + base64.b64encode(f"{TOKEN}:".encode()).decode(),
    ],
)
def test_a_failed_auth_never_echoes_the_presented_token(
    client: FlaskClient, redis_client: redis.Redis, presented: str
) -> None:
    resp = client.post("/v1/pushes", json=samples.push(), headers={"Authorization": presented})
    assert assert_json_error(resp, 401) == "unauthorized"
    text = resp.get_data(as_text=True) + str(resp.headers)
    secret_parts = [presented, presented.partition(" ")[2], TOKEN, "wrong-token"]
    if presented.startswith("Basic "):
        secret_parts.append(base64.b64decode(presented[6:]).decode())
    assert not any(part and part in text for part in secret_parts)
    assert inbox(redis_client) == []


def invalid_bodies_with(email: str) -> list[tuple[str, bytes, dict[str, str]]]:
    """Requests (path, body, extra headers) that are refused and carry ``email``."""
    push = json.dumps(samples.push(attendee={"email": email}))
    return [
        ("/v1/pushes", push.encode()[:-1], {}),
        ("/v1/pushes", push.replace('"eventType"', '"transmissionId"').encode(), {}),
        ("/v1/pushes", push.replace("}", ', "n": NaN}', 1).encode(), {}),
        ("/v1/pushes", push.replace(email, email + "\\ud800").encode(), {}),
        ("/v1/pushes", b"\xef\xbb\xbf" + push.encode(), {}),
        ("/v1/pushes", push.encode() + b"\xff", {}),
        ("/v1/pushes", b"[" * 40 + push.encode() + b"]" * 40, {}),
        ("/v1/pushes", f'[{push}, "{email}"]'.encode(), {}),
        ("/v1/pushes", f'"{email}"'.encode(), {}),
        ("/v1/pushes", push.encode(), {"Content-Type": "text/plain"}),
        ("/v1/pushes", push.encode(), {"Content-Encoding": "gzip"}),
        ("/v1/pushes", push.encode(), {"Content-Encoding": email}),
        (f"/collection/{INLET}", push.encode()[:-1], {}),
        (f"/collection/{INLET}", f'["{email}"]'.encode(), {}),
        (f"/collection/batch/{INLET}", f'{{"messages": [{push}, "{email}"]}}'.encode(), {}),
        (f"/collection/batch/{INLET}", f'{{"messages": "{email}"}}'.encode(), {}),
        (f"/collection/{email}", push.encode(), {}),
    ]


def test_an_invalid_push_answer_never_holds_the_email(client: FlaskClient) -> None:
    for path, body, headers in invalid_bodies_with(EMAIL):
        resp = client.post(path, data=body, headers={**JSON_HEADERS, **headers})
        text = resp.get_data(as_text=True) + str(resp.headers)
        assert EMAIL.lower() not in text.lower(), (path, body[:80], text)
        assert "Secret.Attendee" not in text


def test_the_receiver_logs_no_email_token_or_inlet_id(
    client: FlaskClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-0123456789abcdef"
    # Good requests, bad bodies, bad tokens, wrong inlets, on both doors
    client.post("/v1/pushes", json=samples.push(attendee={"email": EMAIL}), headers={"Authorization": BEARER})
    client.post(f"/collection/{INLET}", json=samples.push(attendee={"email": EMAIL}))
    client.post(
        f"/collection/batch/{INLET}", json={"messages": [samples.push(attendee={"email": EMAIL}), EMAIL]}
    )
    client.post(
        "/v1/pushes",
        json=samples.push(attendee={"email": EMAIL}),
        headers={"Authorization": f"Bearer {wrong}"},
    )
    client.post(
        "/v1/pushes", json=samples.push(attendee={"email": EMAIL}), headers={"Authorization": BASIC + "x"}
    )
    client.post(f"/collection/{INLET}x", json=samples.push(attendee={"email": EMAIL}))
    for path, body, headers in invalid_bodies_with(EMAIL):
        client.post(path, data=body, headers={**JSON_HEADERS, **headers})
    logged = caplog.text + "\n".join(str(record.__dict__) for record in caplog.records)
    assert "accepted" in logged  # the log was captured at all
    for secret in (EMAIL, EMAIL.lower(), "Secret.Attendee", TOKEN, wrong, INLET, BASIC.split()[1]):
        assert secret.lower() not in logged.lower(), secret
