"""Reading a request body safely: content type, content coding, size, and JSON within limits.

Every refusal is a :class:`ReceiverError` with a defined status (400, 413 or 415). A body is
never read past ``max_bytes``, compressed or not, and no error detail repeats what the body
held: a rejected push may carry an attendee's email, and error bodies end up in senders' logs.
"""

from __future__ import annotations

import json
import logging
import math
import re
import zlib
from itertools import accumulate
from typing import Any

from flask import Request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from receiver.errors import BodyTimeout, ReceiverError

log = logging.getLogger(__name__)

#: Deepest nesting accepted; a push is 2 levels deep, an AEP batch of pushes 4.
MAX_DEPTH = 32
#: Most members in one JSON array or object; the doors cap the number of pushes lower still.
MAX_MEMBERS = 10_000
#: Longest number literal accepted: ids and counts need 20 or so, and Python refuses to convert
#: integers past 4300 digits anyway.
MAX_NUMBER_CHARS = 100

JSON_TYPES = ("application/json",)
GZIP_CODINGS = ("gzip", "x-gzip")  # RFC 9110 §8.4.1.3: x-gzip is the same coding

_UTF8_BOM = b"\xef\xbb\xbf"
# A valid JSON string, quotes included; used only on text already parsed, so it cannot mislead.
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# An escape in D800-DFFF: the only way a lone surrogate gets into a strictly decoded UTF-8 text.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


class _Refused(ValueError):
    """A JSON text that parses but breaks one of our limits; its message is the detail."""


def check_content_type(request: Request) -> None:
    """Raise a 415 unless the body is declared JSON (``application/json`` or ``*/*+json``)."""
    # A charset parameter is ignored: JSON on the wire is UTF-8 (RFC 8259 §8.1, §11).
    mimetype = request.mimetype
    if mimetype not in JSON_TYPES and not mimetype.endswith("+json"):
        raise ReceiverError(
            415, "unsupported_media_type", "send the push with Content-Type: application/json"
        )


def content_coding(request: Request) -> str:
    """``"identity"`` or ``"gzip"``, from ``Content-Encoding``; any other coding is a 415."""
    # WSGI servers join repeated headers with commas, so one get() sees them all.
    header = request.headers.get("Content-Encoding")
    if not header:
        return "identity"
    codings = [coding.strip().lower() for coding in header.split(",")]
    codings = [coding for coding in codings if coding and coding != "identity"]
    if not codings:
        return "identity"
    if len(codings) == 1 and codings[0] in GZIP_CODINGS:
        return "gzip"
    # RFC 9110 §15.5.16: a 415 for a content coding names the codings that would do.
    raise ReceiverError(
        415,
        "unsupported_media_type",
        "the only Content-Encoding accepted is gzip",
        {"Accept-Encoding": "gzip"},
    )


def too_large(max_bytes: int, what: str = "the body") -> ReceiverError:
    """413: the body (or what it decompresses to) is over ``max_bytes``."""
    return ReceiverError(413, "too_large", f"{what} is over the {max_bytes}-byte limit")


def read_body(request: Request, max_bytes: int) -> bytes:
    """The raw body, refused with a 413 as soon as it is known to be over ``max_bytes``."""
    length = request.content_length
    if length is not None and length > max_bytes:
        raise too_large(max_bytes)
    # A chunked body has no length to check up front. Where the server ends the stream itself
    # (gunicorn does, and says so in wsgi.input_terminated), werkzeug stops reading it past
    # max_content_length with a 413. One byte past our limit, so a body of exactly max_bytes
    # is not refused for probing whether anything follows it.
    request.max_content_length = max_bytes + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        raise too_large(max_bytes) from None
    except HTTPException:
        raise  # werkzeug's own answer, e.g. a 400 when the client went away mid-body
    except BodyTimeout:
        raise ReceiverError(
            408,
            "request_timeout",
            "the body did not arrive in time; nothing of it was stored",
        ) from None
    except Exception as exc:
        # The server raises its own errors from the stream when the framing is broken (gunicorn's
        # InvalidChunkSize, ChunkMissingTerminator...): that is the sender's fault, not a 500.
        log.warning("answering 400: the request body could not be read (%s)", type(exc).__name__)
        raise ReceiverError(
            400, "bad_request", "the body could not be read to its end: its transfer framing is broken"
        ) from None
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    return body


def gunzip(data: bytes, max_bytes: int) -> bytes:
    """``data`` decompressed (every gzip member), refused with a 413 past ``max_bytes`` of output."""
    out = bytearray()
    while True:
        # wbits=31: a gzip header and trailer are required, as Content-Encoding: gzip promises.
        inflater = zlib.decompressobj(wbits=31)
        try:
            # The output cap is what stops a gzip bomb: nothing past it is ever inflated.
            out += inflater.decompress(data, max_bytes + 1 - len(out))
        except zlib.error:
            raise _corrupt_gzip() from None
        if len(out) > max_bytes:
            raise too_large(max_bytes, "the body once decompressed")
        if not inflater.eof:
            raise _corrupt_gzip()
        data = inflater.unused_data
        if not data:
            return bytes(out)


def _corrupt_gzip() -> ReceiverError:
    return ReceiverError(400, "invalid_json", "the body is declared gzip but is not valid gzip data")


def parse_json(body: bytes) -> tuple[Any, str]:
    """``body`` as JSON within our limits, with its text; or a 400 ``invalid_json`` saying why not."""
    if not body.strip():
        raise ReceiverError(400, "invalid_json", "the body is empty")
    if body.startswith(_UTF8_BOM):
        # RFC 8259 §8.1: JSON text must not begin with a BOM. Refused rather than skipped, so a
        # sender learns of it here and not from the next, stricter, recipient.
        raise ReceiverError(
            400, "invalid_json", "the body starts with a byte order mark; send JSON without one"
        )
    try:
        # Decoded here, strictly: json.loads would also take UTF-16 and UTF-32 bytes.
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ReceiverError(
            400, "invalid_json", f"the body is not valid UTF-8 (at byte {exc.start})"
        ) from None
    try:
        value = _DECODER.decode(text)
        _check_limits(text, value)
    except _Refused as exc:
        raise ReceiverError(400, "invalid_json", str(exc)) from None
    except RecursionError:
        raise ReceiverError(400, "invalid_json", _too_deep()) from None
    except ValueError as exc:
        # JSONDecodeError's message gives a position, never the text around it.
        raise ReceiverError(400, "invalid_json", f"the body is not valid JSON: {exc}") from None
    return value, text


def _check_limits(text: str, value: Any) -> None:
    # Each check is guarded by a count or search over the text, done in C, that rules out most
    # bodies: a ~600-byte push pays for none of the walks, only for the decoder's hooks.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(text) > MAX_DEPTH:
        raise _Refused(_too_deep())
    if text.count(",") >= MAX_MEMBERS and _too_many_members(value):
        raise _Refused(f"an array or object has more than {MAX_MEMBERS} members")
    if "\\u" in text and _SURROGATE_ESCAPE.search(text) and _SURROGATE.search(_dump(value)):
        # Pairs were joined into one character by the decoder: what is left is a lone half,
        # which has no UTF-8 form, so it could be neither stored nor sent to AEP.
        raise _Refused("a string holds a lone UTF-16 surrogate (an unpaired \\ud800-\\udfff escape)")


def _depth(text: str) -> int:
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    return max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0)


def _too_deep() -> str:
    return f"the JSON is nested more than {MAX_DEPTH} levels deep"


def _too_many_members(value: Any) -> bool:
    stack = [value]
    while stack:
        node = stack.pop()
        members = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if members is None:
            continue
        if len(members) > MAX_MEMBERS:
            return True
        stack.extend(member for member in members if isinstance(member, (dict, list)))
    return False


def _dump(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        # Parsers disagree on which duplicate wins (first, last, error), so the push would mean
        # different things to different readers; the key itself is not echoed.
        raise _Refused("an object has the same key twice; each key may appear once")
    return obj


def _int(literal: str) -> int:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    return int(literal)


def _float(literal: str) -> float:
    if len(literal) > MAX_NUMBER_CHARS:
        raise _Refused(f"a number is longer than {MAX_NUMBER_CHARS} characters")
    value = float(literal)
    if not math.isfinite(value):
        raise _Refused("a number is too large to be represented (it would be infinite)")
    return value


def _constant(name: str) -> Any:
    # NaN and Infinity are not JSON (RFC 8259 §6); AEP would refuse them later.
    raise _Refused(f"{name} is not allowed in JSON")


# One decoder for every request: building one per call (as json.loads does when given hooks)
# costs more than parsing a push.
_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_int=_int, parse_float=_float, parse_constant=_constant
)
