"""What the receiver's routes share: the settings and the Redis client, built once per app."""

from __future__ import annotations

from dataclasses import dataclass

import redis
from flask import Flask

from receiver.backpressure import Backpressure
from receiver.enqueue import Inbox
from shared.settings import Settings


@dataclass(frozen=True)
class ReceiverState:
    """Per-app state, stored in ``app.extensions``."""

    settings: Settings
    redis: redis.Redis
    backpressure: Backpressure
    inbox: Inbox


def receiver_state(app: Flask) -> ReceiverState:
    """The state of the running app."""
    state: ReceiverState = app.extensions["rainbridge"]
    return state
