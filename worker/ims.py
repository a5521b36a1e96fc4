"""The AEP access token: minted from Adobe IMS (OAuth server-to-server), cached in Redis.

Every worker process shares one token through Redis, and a lock lets exactly one process mint
a new one when it nears expiry: Adobe throttles clients that ask for tokens too often.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import cast

import redis
import requests

from shared import keys, metrics
from shared.settings import Settings
from worker.errors import AepMisconfigured, AepUnavailable

log = logging.getLogger(__name__)

#: Renew once this share of the token's lifetime has passed (about 2.4 h early for 24 h tokens).
RENEW_AT_SHARE = 0.9
#: How long a minting process may hold the lock before another may try.
LOCK_MS = 15_000

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class AccessToken:
    """A bearer token and when to stop using it (epoch seconds)."""

    value: str
    expires_at: float
    renew_at: float

    def to_json(self) -> str:
        """Serialise for the Redis cache."""
        return json.dumps({"value": self.value, "expires_at": self.expires_at, "renew_at": self.renew_at})

    @classmethod
    def from_json(cls, raw: str) -> AccessToken:
        """Parse what :meth:`to_json` wrote."""
        data = json.loads(raw)
        return cls(str(data["value"]), float(data["expires_at"]), float(data["renew_at"]))


class TokenCache:
    """Hands out a valid AEP token, minting one (once, fleet-wide) when needed."""

    def __init__(self, client: redis.Redis, settings: Settings, session: requests.Session) -> None:
        self._redis = client
        self._settings = settings
        self._session = session
        self._owner = f"{socket.gethostname()}:{os.getpid()}"
        self._release = client.register_script(_RELEASE)

    def get(self) -> str:
        """A token that is valid now; mints or waits for a fresh one when the cached one is due."""
        deadline = time.monotonic() + LOCK_MS / 1000
        while True:
            cached = self.cached()
            now = time.time()
            if cached and now < cached.renew_at:
                return cached.value
            if self._redis.set(keys.TOKEN_LOCK, self._owner, nx=True, px=LOCK_MS):
                try:
                    return self._mint_and_store().value
                except AepUnavailable:
                    # IMS is away at renewal time: the token still works, so delivery goes on.
                    if cached and _usable(cached, now):
                        log.warning(
                            "cannot renew the AEP token yet; the current one is good for %d s",
                            cached.expires_at - now,
                        )
                        return cached.value
                    raise
                finally:
                    self._release(keys=[keys.TOKEN_LOCK], args=[self._owner])
            # Another process is minting. The old token still works until it expires.
            if cached and _usable(cached, now):
                return cached.value
            if time.monotonic() > deadline:
                raise AepUnavailable("timed out waiting for another worker to mint the AEP token")
            time.sleep(0.05)

    def cached(self) -> AccessToken | None:
        """The token in Redis, if any."""
        raw = cast(str | None, self._redis.get(keys.TOKEN))
        return AccessToken.from_json(raw) if raw else None

    def invalidate(self, value: str) -> None:
        """Forget ``value`` (AEP said 401/403 to it), unless another process already replaced it."""
        cached = self.cached()
        if cached and cached.value == value:
            self._redis.delete(keys.TOKEN)

    def _mint_and_store(self) -> AccessToken:
        cached = self.cached()
        if cached and time.time() < cached.renew_at:
            return cached  # minted by another process between our read and our lock
        token = self._mint()
        ttl_ms = int((token.expires_at - time.time()) * 1000)
        if ttl_ms > 0:
            self._redis.set(keys.TOKEN, token.to_json(), px=ttl_ms)
        return token

    def _mint(self) -> AccessToken:
        return mint(self._settings, self._session)


def _usable(token: AccessToken, now: float) -> bool:
    # Not in its last seconds (a request must not outlive it): 5 s, or less for short-lived tokens.
    margin = min(5.0, (token.expires_at - token.renew_at) / 2)
    return now < token.expires_at - margin


def mint(s: Settings, session: requests.Session) -> AccessToken:
    """A new access token from Adobe IMS for the configured client (no caching: see TokenCache)."""
    form = {
        "client_id": s.aep_client_id or "",
        "client_secret": s.aep_client_secret or "",
        "grant_type": "client_credentials",
        "scope": ",".join(s.aep_scopes),
    }
    started = time.time()
    try:
        resp = session.post(s.aep_ims_url, data=form, timeout=s.aep_timeout_seconds)
    except requests.RequestException as exc:
        metrics.inc(metrics.TOKEN_FAILURES, kind="unreachable")
        raise AepUnavailable(f"Adobe IMS unreachable: {type(exc).__name__}") from None
    if resp.status_code in (400, 401, 403):
        metrics.inc(metrics.TOKEN_FAILURES, kind="refused")
        raise AepMisconfigured(f"Adobe IMS refused the client ({resp.status_code}): {resp.text[:300]}")
    if resp.status_code != 200:
        metrics.inc(metrics.TOKEN_FAILURES, kind="error")
        raise AepUnavailable(f"Adobe IMS answered {resp.status_code}")
    try:
        data = resp.json()
        value = str(data["access_token"])
        lifetime = float(data["expires_in"])  # seconds (IMS v3)
    except (ValueError, KeyError, TypeError):
        metrics.inc(metrics.TOKEN_FAILURES, kind="error")
        raise AepUnavailable("Adobe IMS answered 200 without access_token/expires_in") from None
    metrics.inc(metrics.TOKENS_MINTED)
    log.info("minted a new AEP access token, valid for %d s", lifetime)
    return AccessToken(value, started + lifetime, started + lifetime * RENEW_AT_SHARE)
