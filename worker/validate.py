"""Pipeline stage: check a raw push against the push schema and normalise it, or raise InvalidPush.

The schema is ``shared/push.py``; docs/architecture.md ("The push") lists its fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from marshmallow import ValidationError

from shared.push import IDENTITY_FIELD, MESSAGES, PushSchema, fold, xdm_time
from worker.errors import InvalidPush

#: AEP requires past timestamps; this much clock skew between RainFocus and us is tolerated.
MAX_FUTURE = timedelta(minutes=10)

FUTURE_MESSAGE = "Timestamp is more than 10 minutes in the future."

# Built once: constructing a marshmallow schema costs far more than loading with it. The second
# one is for a mapping whose primary identity is not the email: there the email is optional.
_SCHEMA = PushSchema()
_SCHEMA_EMAIL_OPTIONAL = PushSchema(partial=("attendee_email",))
# The schema's output keys (attribute names) → the dotted paths the mapping table uses.
_PATHS = {name: field.data_key or name for name, field in _SCHEMA.load_fields.items()}


@dataclass(frozen=True, slots=True)
class Push:
    """A valid push: its required fields typed, and every field present, normalised, by dotted path."""

    transmission_id: str
    event_type: str
    #: Timezone-aware, in UTC, to the microsecond.
    timestamp: datetime
    #: The email, trimmed and lower-cased ("" when a mapping that does not need it let it be absent).
    email: str
    #: Every field present, e.g. ``{"session.length": 90, "attendee.email": "a@b.c", ...}``: strings
    #: and ints only, so it serialises as is; ``timestamp`` is in its XDM form. Do not mutate.
    values: Mapping[str, str | int]


def validate(raw: Mapping[str, Any], *, now: datetime | None = None, require_email: bool = True) -> Push:
    """The push ``raw`` checked and normalised; raise InvalidPush with every message by dotted path.

    ``require_email=False`` is for a mapping whose primary identity is another field.
    """
    if not isinstance(raw, Mapping):
        raise InvalidPush({"_schema": [MESSAGES["not_a_push"]]})
    flat, errors = fold(raw)
    try:
        loaded: dict[str, Any] = (_SCHEMA if require_email else _SCHEMA_EMAIL_OPTIONAL).load(flat)
    except ValidationError as exc:
        loaded = exc.valid_data if isinstance(exc.valid_data, dict) else {}
        messages = exc.messages if isinstance(exc.messages, dict) else {"_schema": exc.messages}
        for key, problems in messages.items():
            errors.setdefault(key, []).extend(problems if isinstance(problems, list) else [problems])

    timestamp = loaded.get("timestamp")
    if timestamp is not None:
        if now is None:
            now = datetime.now(UTC)
        elif now.tzinfo is None:
            now = now.replace(tzinfo=UTC)
        if timestamp - now > MAX_FUTURE:
            errors.setdefault("timestamp", []).append(FUTURE_MESSAGE)
    if errors:
        raise InvalidPush(errors)

    moment: datetime = loaded["timestamp"]
    values: dict[str, Any] = {_PATHS[name]: value for name, value in loaded.items()}
    values["timestamp"] = xdm_time(moment)
    return Push(
        transmission_id=loaded["transmissionId"],
        event_type=loaded["eventType"],
        timestamp=moment,
        email=values.get(IDENTITY_FIELD, ""),
        values=values,
    )
