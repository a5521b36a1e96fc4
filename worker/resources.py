"""What a worker process talks to Redis and AEP with, opened in each pool process after the fork."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import redis
import requests

from shared import metrics, redisconn
from shared.settings import Settings
from worker.aep import AepClient
from worker.ims import TokenCache
from worker.mapfile import Active

T = TypeVar("T")


@dataclass(frozen=True)
class Resources:
    """One process's Redis client, AEP client and stream consumer name."""

    redis: redis.Redis
    aep: AepClient
    consumer: str
    #: The running mapping; made before the fork, so a pool process restarted while MAPPING_FILE
    #: is bad still has the last good one.
    mappings: Active

    @classmethod
    def open(cls, settings: Settings, mappings: Active | None = None) -> Resources:
        """Connect to Redis and make an AEP client with its own HTTP session and token cache."""
        client = redisconn.connect(settings)
        metrics.RECORDER.bind(client)
        session = requests.Session()
        tokens = TokenCache(client, settings, session) if settings.aep_credentials else None
        return cls(
            redis=client,
            aep=AepClient(settings, tokens, session),
            consumer=f"{socket.gethostname()}:{os.getpid()}",
            mappings=mappings if mappings is not None else Active(settings),
        )


class PerProcess(Generic[T]):
    """A value made once per process: sockets opened before a fork belong to the parent.

    Celery's prefork pool calls :meth:`open` in each child (``worker_process_init``); pools that
    do not fork (``--pool solo``, threads) never send that signal, so :meth:`get` opens on first use.
    """

    def __init__(self, make: Callable[[], T]) -> None:
        self._make = make
        self._value: T | None = None
        self._pid = 0

    def open(self) -> T:
        """Make this process's value (again, after a fork)."""
        self._value, self._pid = self._make(), os.getpid()
        return self._value

    def get(self) -> T:
        """This process's value, made now if this process has none yet."""
        if self._value is None or self._pid != os.getpid():
            return self.open()
        return self._value
