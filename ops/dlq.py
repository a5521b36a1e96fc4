"""``rainbridge dlq``: list, show, replay and purge dead letters (operations in :mod:`worker.replay`).

Dead letters hold what a sender got wrong, so every value printed from one is untrusted: control
characters are shown escaped, never sent raw to the operator's terminal.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime
from typing import Any

import redis

from shared import redisconn
from shared.deadletter import DeadLetter, Reason
from shared.push import xdm_time
from shared.settings import Settings, load_or_exit
from worker import replay

#: Widest a table column gets; longer values are cut with an ellipsis.
MAX_COLUMN = 32
MAX_DETAIL = 72

# C0 controls are escaped by json.dumps itself; DEL, C1 (0x9b is a terminal's CSI) and bidi
# overrides (which reorder what is displayed) are not.
_UNSAFE_IN_JSON = re.compile("[\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_UNSAFE_IN_TEXT = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

_SELECTION_HINT = "name dead-letter ids, select with --reason/--event-type/--since, or pass --all"


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> argparse.ArgumentParser:
    """Register ``dlq`` and its subcommands on the ``rainbridge`` command's subparsers."""
    parser = subparsers.add_parser(
        "dlq",
        help="inspect, replay and purge dead letters",
        description="Inspect, replay and purge dead letters. Selections are listed oldest first.",
    )
    commands = parser.add_subparsers(dest="dlq_command", required=True, metavar="{list,show,replay,purge}")

    p_list = commands.add_parser("list", help="list dead letters, oldest first")
    _add_filters(p_list)
    p_list.add_argument("--json", action="store_true", help="print one JSON object per line")

    p_show = commands.add_parser("show", help="show everything in one dead letter")
    p_show.add_argument("id", type=_entry_id, help="dead-letter id, as `dlq list` shows it")

    p_replay = commands.add_parser(
        "replay",
        help="send dead letters' original pushes through the pipeline again",
        description=(
            "Put each selected letter's original push back into the inbox, where it is validated and "
            "transformed again and passes the duplicate check once; the letter is removed in the same "
            "step. A push that would still fail validation is skipped unless --force."
        ),
    )
    _add_selection(p_replay)
    p_replay.add_argument("--dry-run", action="store_true", help="only check and report; change nothing")
    p_replay.add_argument("--rate", type=_positive_float, metavar="N", help="at most N replays per second")
    p_replay.add_argument("--force", action="store_true", help="replay pushes that still fail validation too")

    p_purge = commands.add_parser(
        "purge",
        help="delete dead letters for good",
        description="Delete the selected dead letters. Without --yes, only show what would be deleted.",
    )
    _add_selection(p_purge)
    p_purge.add_argument("--yes", action="store_true", help="really delete them")
    return parser


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reason", choices=[r.value for r in Reason], help="only this reason")
    parser.add_argument("--event-type", help="only this eventType, e.g. SessionScheduled")
    parser.add_argument(
        "--since",
        type=_since,
        metavar="ISO",
        help="only dead-lettered at or after this ISO 8601 date or date-time (naive means UTC)",
    )
    parser.add_argument("--limit", type=_positive_int, metavar="N", help="at most N, the oldest first")


def _add_selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("ids", nargs="*", type=_entry_id, metavar="ID", help="dead-letter ids")
    _add_filters(parser)
    parser.add_argument("--all", action="store_true", help="every dead letter")


def _entry_id(text: str) -> str:
    if not replay.is_entry_id(text):
        raise argparse.ArgumentTypeError(
            f"not a dead-letter id: {text!r} (expected the form 1712345678901-0)"
        )
    return text


def _since(text: str) -> int:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an ISO 8601 date or date-time: {text!r} (e.g. 2024-05-01 or 2024-05-01T13:00:00Z)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    # "nan" and "inf" parse as floats but are no rate.
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the ``dlq`` subcommand in ``args``; returns the exit code."""
    command: str = args.dlq_command
    if command in ("replay", "purge"):
        problem = _selection_problem(args)
        if problem:
            print(f"rainbridge dlq {command}: {problem}", file=sys.stderr)
            return 2
    # Replay runs the pipeline's validation and transformation, which need the worker's settings.
    settings = load_or_exit("worker" if command == "replay" else None)
    client = redisconn.connect(settings)
    try:
        if command == "list":
            return _list(client, args)
        if command == "show":
            return _show(client, args.id)
        if command == "replay":
            return _replay(client, settings, args)
        return _purge(client, args)
    except redis.RedisError as exc:
        url = settings.redacted()["REDIS_URL"]
        print(f"rainbridge: Redis at {url} is unreachable: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()


def _selection_problem(args: argparse.Namespace) -> str | None:
    filters = [
        name
        for name, value in (
            ("--reason", args.reason),
            ("--event-type", args.event_type),
            ("--since", args.since),
        )
        if value is not None
    ]
    if args.ids and (filters or args.all or args.limit is not None):
        return "give dead-letter ids or a selection (filters, --all, --limit), not both"
    if args.all and filters:
        return f"--all selects every dead letter; drop it or {', '.join(filters)}"
    if not args.ids and not filters and not args.all:
        return f"nothing selected: {_SELECTION_HINT}"
    return None


def _select(client: redis.Redis, args: argparse.Namespace) -> tuple[list[DeadLetter], list[str]]:
    """The letters ``args`` selects, and the ids asked for that do not exist."""
    if getattr(args, "ids", None):
        letters = replay.select(client, ids=args.ids)
        found = {letter.id for letter in letters}
        return letters, [i for i in dict.fromkeys(args.ids) if i not in found]
    letters = replay.select(
        client, reason=args.reason, event_type=args.event_type, since_ms=args.since, limit=args.limit
    )
    return letters, []


def _report_unknown(unknown: list[str]) -> None:
    for entry_id in unknown:
        print(f"rainbridge dlq: no dead letter with id {entry_id}", file=sys.stderr)


def _list(client: redis.Redis, args: argparse.Namespace) -> int:
    letters, _ = _select(client, args)
    if args.json:
        for letter in letters:
            print(_json(as_json(letter)))
        return 0
    _print_table(letters)
    return 0


def as_json(letter: DeadLetter) -> dict[str, Any]:
    """A dead letter as plain data: times as ISO strings, push and xdm parsed when they are JSON."""
    return {
        "id": letter.id,
        "reason": letter.reason,
        "detail": letter.parsed_detail,
        "transmissionId": letter.transmission_id,
        "eventType": letter.event_type,
        "attempts": letter.attempts,
        "receivedAt": _iso(letter.received_ms) if letter.received_ms else None,
        "deadletteredAt": _iso(letter.deadlettered_ms),
        "push": _maybe_json(letter.push),
        "xdm": _maybe_json(letter.xdm) if letter.xdm else None,
    }


def _print_table(letters: list[DeadLetter]) -> None:
    if not letters:
        print("no dead letters match")
        return
    header = ("ID", "DEAD-LETTERED (UTC)", "REASON", "EVENT TYPE", "TRANSMISSION ID", "ATTEMPTS", "DETAIL")
    rows = [
        (
            letter.id,
            _iso(letter.deadlettered_ms, seconds=True),
            _cell(letter.reason, MAX_COLUMN),
            _cell(letter.event_type, MAX_COLUMN) or "-",
            _cell(letter.transmission_id, MAX_COLUMN) or "-",
            str(letter.attempts),
            _cell(replay.describe(letter.parsed_detail), MAX_DETAIL),
        )
        for letter in letters
    ]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]
    for row in [header, *rows]:
        cells = [
            value.rjust(width) if i == 5 else value.ljust(width)
            for i, (value, width) in enumerate(zip(row, widths, strict=False))
        ]
        print("  ".join([*cells, row[-1]]).rstrip())
    print(f"{len(letters)} dead letter(s)")


def _show(client: redis.Redis, entry_id: str) -> int:
    letters = replay.select(client, ids=[entry_id])
    if not letters:
        print(f"rainbridge dlq show: no dead letter with id {entry_id}", file=sys.stderr)
        return 1
    letter = letters[0]
    received = _iso(letter.received_ms) if letter.received_ms else "-"
    for label, value in (
        ("id", letter.id),
        ("reason", _text(letter.reason)),
        ("dead-lettered", _iso(letter.deadlettered_ms)),
        ("received", received),
        ("transmissionId", _text(letter.transmission_id) or "-"),
        ("eventType", _text(letter.event_type) or "-"),
        ("attempts", str(letter.attempts)),
    ):
        print(f"{label + ':':<16}{value}")
    for label, value in (("detail", letter.parsed_detail), ("push", _maybe_json(letter.push))):
        print(f"{label}:")
        print(_pretty(value))
    print("xdm:" + ("" if letter.xdm else " -"))
    if letter.xdm:
        print(_pretty(_maybe_json(letter.xdm)))
    return 0


def _replay(client: redis.Redis, settings: Settings, args: argparse.Namespace) -> int:
    letters, unknown = _select(client, args)
    _report_unknown(unknown)
    if not letters:
        print("no dead letters match")
        return 1 if unknown else 0
    counts: dict[str, int] = {}
    results = replay.iter_replay(
        client, settings, letters, dry_run=args.dry_run, rate=args.rate, force=args.force
    )
    for result in results:
        counts[result.status] = counts.get(result.status, 0) + 1
        letter = result.letter
        tid = _cell(letter.transmission_id, MAX_COLUMN) or "-"
        print(f"{letter.id}  {tid}  {_replay_line(result, dry_run=args.dry_run)}", flush=True)
    print(_replay_summary(counts, dry_run=args.dry_run))
    done = counts.get("replayed", 0) + counts.get("would_replay", 0)
    return 0 if done == len(letters) and not unknown else 1


def _replay_line(result: replay.ReplayResult, *, dry_run: bool) -> str:
    why = ""
    if result.failure:
        why = f"({result.failure}): {_cell(replay.describe(result.failure_detail), 200)}"
    if result.status == "still_invalid":
        return f"would still fail validation {why}" if dry_run else f"skipped: still fails validation {why}"
    if result.status == "gone":
        return "gone: no longer a dead letter (replayed or purged meanwhile)"
    verb = "would replay" if dry_run else f"replayed as inbox entry {result.inbox_id}"
    return f"{verb}, though it still fails validation {why}" if why else verb


def _replay_summary(counts: dict[str, int], *, dry_run: bool) -> str:
    invalid = counts.get("still_invalid", 0)
    if dry_run:
        summary = f"dry run: {counts.get('would_replay', 0)} would replay"
        if invalid:
            summary += f", {invalid} would still fail validation and be skipped (--force replays them)"
        return summary + "; nothing was changed"
    summary = f"replayed {counts.get('replayed', 0)}"
    if invalid:
        summary += f", skipped {invalid} that still fail validation (--force replays them anyway)"
    if counts.get("gone"):
        summary += f", {counts['gone']} already gone"
    return summary


def _purge(client: redis.Redis, args: argparse.Namespace) -> int:
    letters, unknown = _select(client, args)
    _report_unknown(unknown)
    if not args.yes:
        _print_table(letters)
        print(f"would purge {len(letters)} dead letter(s); nothing was deleted: add --yes to delete them")
        return 2
    if not letters:
        print("no dead letters match")
        return 1 if unknown else 0
    removed = replay.purge(client, [letter.id for letter in letters])
    gone = len(letters) - removed
    print(f"purged {removed} dead letter(s)" + (f" ({gone} already gone)" if gone else ""))
    return 1 if unknown else 0


def _iso(ms: int, *, seconds: bool = False) -> str:
    moment = datetime.fromtimestamp(ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if seconds else xdm_time(moment)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _json(data: Any) -> str:
    return _UNSAFE_IN_JSON.sub(_escape, json.dumps(data, ensure_ascii=False))


def _pretty(data: Any) -> str:
    if isinstance(data, str):
        return "  " + _text(data)
    text = json.dumps(data, ensure_ascii=False, indent=2)
    return "\n".join("  " + line for line in _UNSAFE_IN_JSON.sub(_escape, text).splitlines())


def _text(value: str) -> str:
    return _UNSAFE_IN_TEXT.sub(_escape, value)


def _cell(value: str, width: int) -> str:
    value = _text(value)
    return value if len(value) <= width else value[: width - 1] + "…"


def _escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"
