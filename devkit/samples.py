"""Realistic RainFocus pushes for tests: one sample, made fresh or fixed, with overrides by path."""

from __future__ import annotations

import copy
import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_counter = itertools.count()

#: A SessionScheduled push at Adobe Summit 2023 with every group, as RainFocus sends it (nested).
SUMMIT: dict[str, Any] = {
    "transmissionId": "1680309557133001YHhz",
    "eventType": "SessionScheduled",
    "timestamp": "2023-04-01T00:41:57.000Z",
    "event": {"name": "Adobe Summit 2023"},
    "attendee": {
        "registered": "Yes",
        "attendeeId": "1619119968857001fvLB",
        "externalId": "1666809456617001wyPj",
        "clientId": "8EFC1F57631CAFE70A495ECB@8f3f1f5c631caf3e495fd8.e",
        "email": "User@Company.com",
    },
    "exhibitor": {"exhibitorId": "1680309557133001YHhz", "externalId": "1666809514105001lSJN", "name": "IBM"},
    "lead": {"leadId": "1666809456617001wyPj", "note": "Wants a demo of the Ops dashboard."},
    "session": {
        "sessionId": "1666809373585001t4aV",
        "externalId": "1666809456617001wyPj",
        "code": "GS3",
        "title": "Inspiration Keynote",
        "length": 90,
    },
    "sessiontime": {
        "sessiontimeId": "1673033149739001OJLZ",
        "startTime": "2023-03-22 10:00:00",
        "endTime": "2023-03-22 11:30:00",
        "room": "B32",
    },
}


def summit(**paths: Any) -> dict[str, Any]:
    """:data:`SUMMIT`, with each ``group__field=value`` set (``None`` removes the field or group)."""
    data = copy.deepcopy(SUMMIT)
    for path, value in paths.items():
        *groups, name = path.split("__")
        target = data
        for group in groups:
            target = target.setdefault(group, {})
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    return data


def push(transmission_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """The sample as a fresh push: a unique transmissionId (unless given), a minute old, no lead."""
    n = next(_counter)
    stamp = datetime.now(UTC) - timedelta(minutes=1)
    data = summit(exhibitor=None, lead=None, attendee__email=f"Attendee.{n}@Example.com")
    data["transmissionId"] = transmission_id or f"1680309557133{n:03d}{uuid.uuid4().hex[:8]}"
    data["timestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"
    data.update(overrides)
    return data
