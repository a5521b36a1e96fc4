"""Source paths that pushes carry and no mapping entry reads: the new RainFocus field, the day it appears.

Only paths are kept, never values (a value may be personal data). The table is bounded: at most
:data:`LIMIT` distinct paths; occurrences of further paths are only counted as overflow.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import cast

import redis

from shared import keys
from worker import scripts

LIMIT = 1000

_RECORD = scripts.load("unmapped")


def unread(paths: Iterable[str], sources: frozenset[str]) -> frozenset[str]:
    """The paths neither read by an entry nor inside a group an entry reads whole."""
    out = []
    for path in set(paths) - sources:
        parts = path.split(".")
        if any(".".join(parts[:i]) in sources for i in range(1, len(parts))):
            continue
        out.append(path)
    return frozenset(out)


def record(client: redis.Redis, seen: Counter[str]) -> int:
    """Add a batch's unmapped paths to the table; returns occurrences refused because it is full."""
    if not seen:
        return 0
    args: list[str | int] = [LIMIT, int(time.time() * 1000)]
    for path, count in seen.items():
        args += [path, count]
    script = client.register_script(_RECORD)
    keys_ = [keys.UNMAPPED, keys.UNMAPPED_FIRST, keys.UNMAPPED_LAST, keys.UNMAPPED_OVERFLOW]
    return int(script(keys=keys_, args=args))


@dataclass(frozen=True)
class Unmapped:
    """One unmapped path: how many pushes carried it, first and last seen (ms)."""

    path: str
    count: int
    first_ms: int
    last_ms: int


def read(client: redis.Redis) -> tuple[list[Unmapped], int]:
    """The table, most frequent first, and the overflow count."""
    with client.pipeline(transaction=False) as pipe:
        pipe.hgetall(keys.UNMAPPED)
        pipe.hgetall(keys.UNMAPPED_FIRST)
        pipe.hgetall(keys.UNMAPPED_LAST)
        pipe.get(keys.UNMAPPED_OVERFLOW)
        counts, first, last, overflow = cast(
            tuple[dict[str, str], dict[str, str], dict[str, str], str | None], pipe.execute()
        )
    rows = [
        Unmapped(path, int(n), int(first.get(path, 0)), int(last.get(path, 0))) for path, n in counts.items()
    ]
    rows.sort(key=lambda row: (-row.count, row.path))
    return rows, int(overflow or 0)


def forget(client: redis.Redis) -> None:
    """Empty the table (after the mapping took the new fields in)."""
    client.delete(keys.UNMAPPED, keys.UNMAPPED_FIRST, keys.UNMAPPED_LAST, keys.UNMAPPED_OVERFLOW)
