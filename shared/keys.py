"""Redis key and consumer-group names: the one place both sides agree on where data lives."""

from __future__ import annotations

PREFIX = "rainbridge"

#: Stream of raw pushes, written by the receiver, drained by the ingest stage.
INBOX = f"{PREFIX}:inbox"
INBOX_GROUP = "ingest"

#: Stream of ready-to-send AEP messages, written by ingest, drained by the deliver stage.
OUTBOX = f"{PREFIX}:outbox"
OUTBOX_GROUP = "deliver"

#: Stream of dead letters: what could not be delivered, with the reason.
DEADLETTER = f"{PREFIX}:deadletter"

#: Hash of reason -> dead letters kept, changed by the same scripts that add and remove letters.
DEADLETTER_COUNTS = f"{PREFIX}:deadletter:counts"

#: Cached AEP access token (JSON) and the lock that lets one process mint it.
TOKEN = f"{PREFIX}:aep:token"
TOKEN_LOCK = f"{PREFIX}:aep:token:lock"

#: Present while delivery to AEP is paused for every worker (value: resume time, epoch ms).
PAUSE = f"{PREFIX}:aep:pause"
#: Hash host -> resume time (epoch ms) of hosts backing off because they cannot reach AEP.
HOST_PAUSES = f"{PREFIX}:aep:host-pauses"


def seen(event_id: str) -> str:
    """The per-event dedupe key earlier versions wrote (still honoured until it expires)."""
    return f"{PREFIX}:seen:{event_id[:32]}"


#: The dedupe sets: ``<prefix><bucket number in hex>`` (worker/dedupe.py), and the sweep's cursor.
DEDUPE_PREFIX = f"{PREFIX}:dedupe:"
DEDUPE_SWEEP = f"{PREFIX}:dedupe-sweep"


def dedupe_slot(event_id: str, buckets: int) -> tuple[str, bytes]:
    """The dedupe set and member of an event: its 128-bit id, filed by its leading bits.

    ``event_id`` is the SHA-256 hex of the transmissionId, so ids spread evenly over the sets;
    the member is the whole 128 bits (16 bytes), so the set only files it and never decides.
    """
    bits = buckets.bit_length() - 1
    bucket = int(event_id[:8], 16) >> (32 - bits) if bits else 0
    return f"{DEDUPE_PREFIX}{bucket:x}", bytes.fromhex(event_id[:32])


#: Hash of stage name -> when a drain of that stage last ran (epoch ms): the drains' heartbeat.
DRAINS = f"{PREFIX}:drains"
#: Hash: the mapping each worker process runs (``<host>:<pid>`` -> ``<digest> <source>``).
MAPPINGS = f"{PREFIX}:mappings"
#: Hashes path -> count / first seen ms / last seen ms, and a counter: unmapped source paths.
UNMAPPED = f"{PREFIX}:unmapped"
UNMAPPED_FIRST = f"{PREFIX}:unmapped:first"
UNMAPPED_LAST = f"{PREFIX}:unmapped:last"
UNMAPPED_OVERFLOW = f"{PREFIX}:unmapped:overflow"

#: Prefix of the per-stage tick leases that let one worker of the fleet start each stage per second.
TICK_PREFIX = f"{PREFIX}:tick:"
#: Per-minute counts of the delivery-latency histogram, ``<prefix><minute since epoch>`` (15 min).
METRICS_MINUTE_PREFIX = f"{PREFIX}:metrics:minute:"
#: The fleet-wide AEP rate cap's bucket (worker/ratecap.py).
RATE_CAP = f"{PREFIX}:ratecap"
