"""Dead-letter operations behind ``rainbridge dlq``: select, replay and purge, as plain functions.

Selections are oldest first, in stream order: a replay then re-sends letters in the order they
failed, and ``limit`` takes the oldest matches, so ``since_ms`` + ``limit`` pages forward.

A replay puts the letter's original push back into the inbox, marked so that the dedupe step lets
this one push through again, and removes the letter in the same atomic step. The push is checked
first with the ingest stage's own validation and transformation (:func:`worker.ingest.prepare`),
so the check and the real run agree; a push that would fail again is skipped unless forced,
because replaying it would only dead-letter it again under a new id.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, cast

import redis

from shared import keys
from shared.deadletter import DeadLetter
from shared.records import InboxRecord, script_header
from shared.settings import Settings
from worker import ingest, scripts, streams
from worker.dedupe import Rejected

#: A full stream entry id; a bare millisecond time would match every entry of that millisecond.
ENTRY_ID = re.compile(r"[0-9]+-[0-9]+", re.ASCII)

#: Entries read per XRANGE while scanning, to keep each reply (pushes included) small.
SCAN_COUNT = 500

#: Ids per XDEL, so a large purge does not build one huge command.
PURGE_CHUNK = 1000

# Atomic like MULTI/EXEC, and it also checks that the letter is still there: with a plain
# transaction two operators replaying the same letter at once would both add it to the inbox.
# XADD comes first so that an out-of-memory refusal leaves the letter untouched.
_REPLAY = scripts.load("records", "deadletters", "replay")
_PURGE = scripts.load("records", "deadletters", "purge")

_Entries = list[tuple[str, dict[str, str]]]

ReplayStatus = Literal["replayed", "would_replay", "still_invalid", "gone"]


@dataclass(frozen=True)
class ReplayResult:
    """What replay did (or, in a dry run, would do) with one dead letter."""

    letter: DeadLetter
    #: ``replayed``/``would_replay``: back in the inbox (or would be); ``still_invalid``: left in
    #: place because its push still fails; ``gone``: removed by someone else meanwhile.
    status: ReplayStatus
    #: The reason code the push would be dead-lettered with now, or None if it passes.
    failure: str | None = None
    #: The messages that go with ``failure`` (validation messages by field, or an error text).
    failure_detail: Any = None
    #: The new inbox entry's id, once replayed.
    inbox_id: str | None = None


def is_entry_id(text: str) -> bool:
    """True if ``text`` is a full stream entry id such as ``1712345678901-0``."""
    return ENTRY_ID.fullmatch(text) is not None


def select(
    client: redis.Redis,
    *,
    ids: Sequence[str] | None = None,
    reason: str | None = None,
    event_type: str | None = None,
    since_ms: int | None = None,
    limit: int | None = None,
) -> list[DeadLetter]:
    """Dead letters matching every filter given (AND), oldest first; unknown ``ids`` are left out."""
    if limit is not None and limit <= 0:
        return []
    candidates = _by_ids(client, ids) if ids is not None else _scan(client, since_ms)
    selected: list[DeadLetter] = []
    for letter in candidates:
        if reason is not None and letter.reason != reason:
            continue
        if event_type is not None and letter.event_type != event_type:
            continue
        if since_ms is not None and letter.deadlettered_ms < since_ms:
            continue
        selected.append(letter)
        if limit is not None and len(selected) >= limit:
            break
    return selected


def _by_ids(client: redis.Redis, ids: Sequence[str]) -> list[DeadLetter]:
    wanted = list(dict.fromkeys(ids))
    _check_ids(wanted)
    with client.pipeline(transaction=False) as pipe:
        for entry_id in wanted:
            pipe.xrange(keys.DEADLETTER, entry_id, entry_id)
        replies = cast(list[_Entries], pipe.execute())
    letters = [DeadLetter.from_entry(entry_id, fields) for reply in replies for entry_id, fields in reply]
    return sorted(letters, key=lambda letter: _id_key(letter.id))


def _scan(client: redis.Redis, since_ms: int | None) -> Iterator[DeadLetter]:
    # Reading in pages lets a selection with a limit stop early on a long stream.
    start = f"{max(since_ms, 0)}-0" if since_ms is not None else "-"
    while True:
        # The client decodes replies (redisconn.connect), so ids and fields are str.
        page = cast(_Entries, client.xrange(keys.DEADLETTER, start, "+", count=SCAN_COUNT))
        for entry_id, fields in page:
            yield DeadLetter.from_entry(entry_id, fields)
        if len(page) < SCAN_COUNT:
            return
        start = "(" + page[-1][0]


def check(letter: DeadLetter, settings: Settings) -> Rejected | None:
    """How the ingest stage would handle the letter's push now: None if it passes, else why not."""
    outcome = ingest.prepare(streams.Entry(letter.id, _replayed(letter).fields()), settings)
    return outcome if isinstance(outcome, Rejected) else None


def iter_replay(
    client: redis.Redis,
    settings: Settings,
    letters: Iterable[DeadLetter],
    *,
    dry_run: bool,
    rate: float | None,
    force: bool = False,
) -> Iterator[ReplayResult]:
    """Replay letters one by one, yielding each result as soon as it is known (see :func:`replay`)."""
    if rate is not None and rate <= 0:
        raise ValueError("rate must be positive")
    script = client.register_script(_REPLAY)
    interval = 1.0 / rate if rate else 0.0
    next_at = time.monotonic()
    for letter in letters:
        rejected = check(letter, settings)
        failure = rejected.reason if rejected else None
        failure_detail = _parse_detail(rejected.detail) if rejected else None
        if rejected is not None and not force:
            yield ReplayResult(letter, "still_invalid", failure, failure_detail)
            continue
        if dry_run:
            yield ReplayResult(letter, "would_replay", failure, failure_detail)
            continue
        if interval:
            now = time.monotonic()
            if now < next_at:
                time.sleep(next_at - now)
            next_at = max(now, next_at) + interval
        inbox_id = script(
            keys=[keys.DEADLETTER, keys.INBOX, keys.DEADLETTER_COUNTS],
            args=[letter.id, *script_header(InboxRecord.FIELDS), *_replayed(letter).values()],
        )
        if inbox_id is None:
            yield ReplayResult(letter, "gone", failure, failure_detail)
        else:
            yield ReplayResult(letter, "replayed", failure, failure_detail, inbox_id=str(inbox_id))


def replay(
    client: redis.Redis, settings: Settings, letters: Iterable[DeadLetter], **options: Any
) -> list[ReplayResult]:
    """Put each letter's original push back into the inbox and remove the letter, atomically.

    A push that would still fail is left in place (``still_invalid``) unless ``force``; ``dry_run``
    only checks and changes nothing; ``rate`` caps replays per second (the options of
    :func:`iter_replay`, which yields the same results one by one).
    """
    return list(iter_replay(client, settings, letters, **options))


def purge(client: redis.Redis, ids: Iterable[str]) -> int:
    """Delete the given dead letters; returns how many existed and were removed."""
    wanted = list(dict.fromkeys(ids))
    _check_ids(wanted)
    script = client.register_script(_PURGE)
    removed = 0
    for start in range(0, len(wanted), PURGE_CHUNK):
        chunk = wanted[start : start + PURGE_CHUNK]
        removed += int(script(keys=[keys.DEADLETTER, keys.DEADLETTER_COUNTS], args=chunk))
    return removed


def describe(detail: Any) -> str:
    """A detail on one line: validation messages as ``field: message; field: message``."""
    if isinstance(detail, dict):
        return "; ".join(f"{key}: {describe(value)}" for key, value in detail.items())
    if isinstance(detail, list):
        return " ".join(describe(item) for item in detail)
    return str(detail)


def _check_ids(ids: Iterable[str]) -> None:
    for entry_id in ids:
        if not is_entry_id(entry_id):
            raise ValueError(f"not a dead-letter id: {entry_id!r} (expected the form 1712345678901-0)")


def _id_key(entry_id: str) -> tuple[int, int]:
    ms, seq = entry_id.split("-", 1)
    return int(ms), int(seq)


def _replayed(letter: DeadLetter) -> InboxRecord:
    """The inbox record that replays ``letter``: its push, marked replay, with its first receipt time."""
    # A letter without a receive time was received no later than it was dead-lettered.
    received_ms = letter.received_ms or letter.deadlettered_ms
    return InboxRecord(letter.push, receipt=f"replay-{letter.id}", replay=True, received_ms=received_ms)


def _parse_detail(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw
