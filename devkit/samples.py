"""Realistic RainFocus pushes for tests."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

_counter = itertools.count()


def push(transmission_id: str | None = None, **overrides: Any) -> dict[str, Any]:
    """A SessionScheduled push, about 600 bytes, with a unique transmissionId unless given one."""
    n = next(_counter)
    stamp = datetime.now(UTC) - timedelta(minutes=1)
    data: dict[str, Any] = {
        "transmissionId": transmission_id or f"1680309557133{n:03d}{uuid.uuid4().hex[:8]}",
        "eventType": "SessionScheduled",
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z",
        "event": {"name": "Adobe Summit 2023"},
        "attendee": {
            "registered": "Yes",
            "attendeeId": "1619119968857001fvLB",
            "externalId": "1666809456617001wyPj",
            "clientId": "8EFC1F57631CAFE70A495ECB@8f3f1f5c631caf3e495fd8.e",
            "email": f"Attendee.{n}@Example.com",
        },
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
    data.update(overrides)
    return data
