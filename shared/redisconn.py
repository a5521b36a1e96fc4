"""Redis connections with timeouts that suit a request path and a worker loop."""

from __future__ import annotations

import logging
from typing import Any

import redis
from redis.sentinel import MasterNotFoundError, Sentinel

from shared.settings import Settings

log = logging.getLogger(__name__)


def connect(settings: Settings, *, socket_timeout: float = 5.0) -> redis.Redis:
    """A Redis client for ``REDIS_URL`` that fails fast instead of hanging when Redis is away.

    With Sentinels the client asks them for the current master on every (re)connection, so a
    failover is followed without a restart.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 2.0,
        "socket_timeout": socket_timeout,
        "socket_keepalive": True,
        "health_check_interval": 30,
        "decode_responses": True,
    }
    if not settings.uses_sentinel:
        return redis.Redis.from_url(settings.redis_url, **options)
    named = settings.sentinels
    tls: dict[str, Any] = {"ssl": True, **named.tls} if named.tls else {}
    sentinels = Sentinel(  # type: ignore[no-untyped-call]
        list(named.hosts),
        sentinel_kwargs={"socket_connect_timeout": 2.0, "socket_timeout": 2.0, **named.sentinel_kwargs},
    )
    master: redis.Redis = sentinels.master_for(  # type: ignore[no-untyped-call]
        settings.redis_sentinel_master or "",
        db=named.db,
        username=named.username,
        password=named.password,
        **options,
        **tls,
    )
    return master


def durability_warnings(client: redis.Redis) -> list[str]:
    """In words, what about this Redis breaks what rainbridge needs of it (AOF on, noeviction)."""
    warnings = []
    try:
        config = client.config_get("appendonly") | client.config_get("maxmemory-policy")
    except redis.ResponseError:
        return ["cannot read CONFIG (disabled on this server): check appendonly and maxmemory-policy by hand"]
    if config.get("appendonly") != "yes":
        warnings.append(
            "Redis has appendonly=no: a Redis restart loses every queued push. Set appendonly yes."
        )
    policy = config.get("maxmemory-policy")
    if policy != "noeviction":
        warnings.append(
            f"Redis has maxmemory-policy={policy}: Redis may silently delete queued pushes. "
            "Set maxmemory-policy noeviction."
        )
    return warnings


def warn_if_not_durable(client: redis.Redis) -> None:
    """Log each durability problem loudly; never fail start-up for it (Redis may be down yet)."""
    try:
        for warning in durability_warnings(client):
            log.warning("REDIS NOT SAFE FOR RAINBRIDGE: %s", warning)
    except redis.RedisError as exc:
        log.warning("could not check Redis durability settings: %s", exc)


def refusal(client: redis.Redis) -> str | None:
    """Why Redis will never take this client as configured (TLS trust, user, password), or None.

    A Redis that is merely away is not a refusal: processes wait for it and carry on.
    """
    try:
        client.ping()
    except redis.AuthenticationError as exc:
        return f"REDIS_URL: Redis refused the user and password ({exc})"
    except redis.ResponseError as exc:
        return f"REDIS_URL: the Redis user may not run PING ({exc})" if "NOPERM" in str(exc) else None
    except MasterNotFoundError:
        # The Sentinels' own answers say why (their errors are folded into this one unreadably).
        manager = getattr(client.connection_pool, "sentinel_manager", None)
        for sentinel in getattr(manager, "sentinels", []):
            try:
                sentinel.ping()
            except redis.AuthenticationError as exc:
                return (
                    f"REDIS_URL: a Sentinel refused the password ({exc}); give the Sentinels' own"
                    " with sentinel_password=<password> at the end of REDIS_URL"
                )
            except redis.RedisError:
                pass
            if problem := refusal(sentinel):
                return problem
        return None
    except redis.ConnectionError as exc:
        text = str(exc)
        if "CERTIFICATE_VERIFY_FAILED" in text or "certificate verify failed" in text:
            why = text.split("certificate verify failed:", 1)[-1].split("(_ssl", 1)[0].strip()
            return (
                f"REDIS_URL: Redis's TLS certificate is not trusted ({why}); name the CA that signed it"
                " with ssl_ca_certs=<file> in REDIS_URL"
            )
        if "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
            return "REDIS_URL: rediss:// (TLS), but the server at that address does not speak TLS"
        return None
    return None
