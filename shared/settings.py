"""The one settings object: every environment variable parsed, typed and checked once at start."""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn, TypeVar
from urllib.parse import quote, unquote, urlsplit

#: A setting parsed as a number (int or float).
_N = TypeVar("_N", int, float)

PayloadMode = Literal["xdm", "raw"]
IdentityNamespace = Literal["Email", "Email_LC_SHA256"]
Role = Literal["receiver", "worker"]

DEFAULT_SCOPES = (
    "openid",
    "AdobeID",
    "read_organizations",
    "additional_info.projectedProductContext",
    "session",
)


class ConfigError(Exception):
    """A configuration value is missing or malformed; the message names the variable."""


#: Under AEP_MAX_MESSAGES_PER_SECOND, the share of a second's worth one request carries, which is
#: also the burst the fleet's bucket allows (worker/ratecap.py).
RATE_CAP_SLICE_SECONDS = 0.025


@dataclass(frozen=True)
class Settings:
    """Everything rainbridge reads from its environment (the README's Configuration table), already parsed."""

    redis_url: str = field(default="redis://127.0.0.1:6379/0", repr=False)
    redis_sentinel_master: str | None = None

    receiver_tokens: tuple[str, ...] = field(default=(), repr=False)
    receiver_signing_secret: str | None = field(default=None, repr=False)
    receiver_inlet_id: str | None = field(default=None, repr=False)
    receiver_flow_id: str | None = None
    receiver_max_bytes: int = 5 * 1024 * 1024
    receiver_max_pushes: int = 500
    receiver_max_queue_bytes: int = 0
    receiver_max_inbox_depth: int = 1_000_000
    receiver_header_timeout_seconds: float = 10.0
    receiver_body_timeout_seconds: float = 30.0

    aep_streaming_url: str | None = None
    aep_ims_url: str = "https://ims-na1.adobelogin.com/ims/token/v3"
    aep_platform_url: str = "https://platform.adobe.io"
    aep_client_id: str | None = None
    aep_client_secret: str | None = field(default=None, repr=False)
    aep_scopes: tuple[str, ...] = DEFAULT_SCOPES
    aep_org_id: str | None = None
    aep_technical_account_id: str | None = None
    aep_sandbox_name: str = "prod"
    aep_flow_id: str | None = None
    aep_dataset_id: str | None = None
    aep_schema_id: str | None = None
    aep_tenant_id: str | None = None
    aep_payload_mode: PayloadMode = "xdm"
    aep_timeout_seconds: float = 10.0
    identity_namespace: IdentityNamespace = "Email"
    #: The operator's push -> XDM mapping (YAML or JSON); unset, the shipped default for IDENTITY_NAMESPACE.
    mapping_file: str | None = None

    aep_batch_max_messages: int = 200
    aep_max_messages_per_second: float | None = None
    aep_batch_max_bytes: int = 900_000
    aep_batch_max_wait_ms: int = 1000

    dedupe_ttl_seconds: int = 7 * 24 * 3600
    dedupe_buckets: int = 65536
    delivery_max_attempts: int = 200
    delivery_max_age_seconds: int = 6 * 3600
    delivery_backoff_cap_seconds: int = 120
    deadletter_retention_days: int = 14
    pending_claim_seconds: int = 30

    sentry_dsn: str | None = field(default=None, repr=False)
    sentry_environment: str = "production"
    log_level: str = "INFO"
    log_format: Literal["json", "text"] = "json"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from a mapping of environment variables (os.environ by default)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            name = f.name.upper()
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                continue
            parser = _PARSERS.get(f.name, _text)
            values[f.name] = parser(name, raw.strip())
        settings = cls(**values)
        if settings.uses_sentinel and not settings.redis_sentinel_master:
            raise ConfigError("REDIS_SENTINEL_MASTER is not set (REDIS_URL names Sentinels: which master?)")
        return settings

    @property
    def sends_raw(self) -> bool:
        """True in raw mode: each push goes to AEP as it came, alone, for AEP's Data Prep to map."""
        return self.aep_payload_mode == "raw"

    @property
    def messages_per_request(self) -> int:
        """How many messages one AEP request carries at most: one in raw mode (the single inlet)."""
        if self.sends_raw:
            return 1
        if self.aep_max_messages_per_second:
            # Under a cap a request carries a slice of a second's worth (worker/ratecap.py).
            slice_of = max(1, int(self.aep_max_messages_per_second * RATE_CAP_SLICE_SECONDS))
            return min(self.aep_batch_max_messages, slice_of)
        return self.aep_batch_max_messages

    @property
    def uses_sentinel(self) -> bool:
        """True when ``REDIS_URL`` lists Redis Sentinels rather than one server."""
        return self.redis_url.startswith("sentinel://")

    @property
    def sentinels(self) -> Sentinels:
        """What a ``sentinel://`` ``REDIS_URL`` names (call only when ``uses_sentinel``)."""
        return Sentinels.parse(self.redis_url)

    @property
    def aep_credentials(self) -> bool:
        """True when an OAuth client is configured, so AEP calls carry a bearer token."""
        return bool(self.aep_client_id and self.aep_client_secret)

    @property
    def tenant_key(self) -> str:
        """The XDM tenant namespace key, e.g. ``_acme``."""
        return f"_{self.aep_tenant_id}"

    @property
    def aep_batch_url(self) -> str:
        """The batch inlet URL derived from the single-message streaming URL."""
        url = self.aep_streaming_url or ""
        if "/collection/batch/" in url:
            return url
        return url.replace("/collection/", "/collection/batch/", 1)

    @property
    def aep_single_url(self) -> str:
        """The single-message inlet URL."""
        return (self.aep_streaming_url or "").replace("/collection/batch/", "/collection/", 1)

    def require(self, role: Role) -> None:
        """Check that what ``role`` needs is set; raise ConfigError naming the first gap."""
        if role == "receiver":
            if not self.receiver_tokens and not self.receiver_inlet_id:
                raise ConfigError(
                    "RECEIVER_TOKENS is not set (and neither is RECEIVER_INLET_ID): "
                    "the receiver would have no door open"
                )
            return
        needed = ["aep_streaming_url"]
        if self.aep_payload_mode == "xdm":
            needed += ["aep_org_id", "aep_dataset_id", "aep_schema_id", "aep_tenant_id"]
        for name in needed:
            if not getattr(self, name):
                raise ConfigError(f"{name.upper()} is not set (required by the worker)")
        if bool(self.aep_client_id) != bool(self.aep_client_secret):
            missing = "AEP_CLIENT_SECRET" if self.aep_client_id else "AEP_CLIENT_ID"
            raise ConfigError(f"{missing} is not set (AEP_CLIENT_ID and AEP_CLIENT_SECRET go together)")

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict with secrets masked, for logs and ``rainbridge check``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in _SECRETS and value:
                value = "***"
            elif f.name == "redis_url":
                value = _redact_url(value)
            out[f.name.upper()] = list(value) if isinstance(value, tuple) else value
        return out


_SECRETS = {
    "receiver_tokens",
    "receiver_signing_secret",
    "receiver_inlet_id",
    "aep_client_secret",
    "sentry_dsn",
}


def _fail(name: str, why: str) -> NoReturn:
    raise ConfigError(f"{name} {why}")


def _text(name: str, raw: str) -> str:
    return raw


def _number_in(convert: Callable[[str], _N], what: str, low: _N, high: _N) -> Callable[[str, str], _N]:
    def parse(name: str, raw: str) -> _N:
        try:
            value = convert(raw)  # int() and float() both take 1_000
        except ValueError:
            _fail(name, f"must be {what}, got {raw!r}")
        if not low <= value <= high:
            _fail(name, f"must be between {low} and {high}, got {value}")
        return value

    return parse


def _int_in(low: int, high: int) -> Callable[[str, str], int]:
    return _number_in(int, "an integer", low, high)


def _power_of_two(low: int, high: int) -> Callable[[str, str], int]:
    within = _int_in(low, high)

    def parse(name: str, raw: str) -> int:
        value = within(name, raw)
        if value & (value - 1):
            _fail(name, f"must be a power of two ({low:,} to {high:,}), got {raw!r}")
        return value

    return parse


def _float_in(low: float, high: float) -> Callable[[str, str], float]:
    return _number_in(float, "a number", low, high)


def _choice(*options: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        if raw not in options:
            _fail(name, f"must be one of {', '.join(options)}, got {raw!r}")
        return raw

    return parse


def _csv(name: str, raw: str) -> tuple[str, ...]:
    items = tuple(item.strip() for item in raw.split(",") if item.strip())
    if not items:
        _fail(name, "must list at least one value, comma-separated")
    return items


def _tokens(name: str, raw: str) -> tuple[str, ...]:
    tokens = _csv(name, raw)
    short = [t for t in tokens if len(t) < 16]
    if short:
        # A short token is guessable; say how many without printing any of them.
        _fail(name, f"has {len(short)} token(s) shorter than 16 characters; use long random tokens")
    return tokens


def _url(*schemes: str) -> Callable[[str, str], str]:
    def parse(name: str, raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.netloc:
            _fail(name, f"must be a URL starting with {' or '.join(s + '://' for s in schemes)}")
        return raw

    return parse


def _redis_url(name: str, raw: str) -> str:
    # Sentinels are listed as sentinel://host:port;sentinel://host:port/db (as kombu takes them).
    for part in raw.split(";"):
        _url("redis", "rediss", "unix", "sentinel")(name, part)
    if ";" in raw and not all(part.startswith("sentinel://") for part in raw.split(";")):
        _fail(name, "may list several servers only as sentinel://host:port;sentinel://host:port")
    if raw.startswith("sentinel://"):
        try:
            Sentinels.parse(raw)
        except ValueError as exc:
            _fail(name, str(exc))
    return raw


#: The TLS options a sentinel:// URL may end with, as redis-py names them for rediss:// URLs.
SENTINEL_TLS_OPTIONS = ("ssl", "ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")
#: For Sentinels that ask for a password themselves (``requirepass`` in sentinel.conf).
SENTINEL_AUTH_OPTIONS = ("sentinel_username", "sentinel_password")
_CERT_REQS = ("required", "optional", "none")


@dataclass(frozen=True)
class Sentinels:
    """A ``sentinel://`` URL read: the Sentinels, the database, the master's user and TLS options.

    ``sentinel://[user:password@]h1:26379;sentinel://h2:26379/0[?ssl_ca_certs=…&ssl_cert_reqs=required]``:
    the user and password (on any one Sentinel) are the master's; the TLS options after the
    database apply to the Sentinels and the master alike, and any of them turns TLS on;
    ``sentinel_password`` (and ``sentinel_username``) are what the Sentinels themselves ask for.
    """

    hosts: tuple[tuple[str, int], ...]
    db: int
    username: str | None
    password: str | None
    tls: Mapping[str, str]
    sentinel_auth: Mapping[str, str] = field(default_factory=dict)

    @property
    def sentinel_kwargs(self) -> dict[str, Any]:
        """How to connect to the Sentinels themselves (redis-py's and kombu's ``sentinel_kwargs``)."""
        tls: dict[str, Any] = {"ssl": True, **self.tls} if self.tls else {}
        auth = {key.removeprefix("sentinel_"): value for key, value in self.sentinel_auth.items()}
        return tls | auth

    @classmethod
    def parse(cls, raw: str) -> Sentinels:
        """Read ``raw``; ValueError says what is wrong with it."""
        parts = [urlsplit(part) for part in raw.split(";")]
        if any(part.query for part in parts[:-1]):
            raise ValueError("puts TLS options once, at the end, after the database: …/0?ssl_ca_certs=…")
        try:
            hosts = tuple((p.hostname or "127.0.0.1", p.port or 26379) for p in parts)
        except ValueError:  # a port that is not a number
            raise ValueError("names a Sentinel with a port that is not a number") from None
        db_text = parts[-1].path.strip("/") or "0"
        if not db_text.isdigit() or any(p.path.strip("/") not in ("", db_text) for p in parts[:-1]):
            raise ValueError("names one database, as a number at the end: sentinel://…;sentinel://…/0")
        tls: dict[str, str] = {}
        auth: dict[str, str] = {}
        for key, _, value in (item.partition("=") for item in parts[-1].query.split("&") if item):
            if key not in SENTINEL_TLS_OPTIONS + SENTINEL_AUTH_OPTIONS:
                known = ", ".join(SENTINEL_TLS_OPTIONS + SENTINEL_AUTH_OPTIONS)
                raise ValueError(f"has an unknown option {key!r}; a sentinel:// URL takes {known}")
            (auth if key in SENTINEL_AUTH_OPTIONS else tls)[key] = unquote(value)
        if "sentinel_username" in auth and "sentinel_password" not in auth:
            raise ValueError("has sentinel_username without sentinel_password")
        if tls.get("ssl", "true").lower() not in ("true", "false"):
            raise ValueError("has ssl= other than true or false")
        if tls.get("ssl_cert_reqs", "required") not in _CERT_REQS:
            raise ValueError(f"has ssl_cert_reqs= other than {', '.join(_CERT_REQS)}")
        # Any TLS option turns TLS on, ssl=false turns it off.
        wants_tls = bool(tls) and tls.pop("ssl", "true").lower() == "true"
        tls = tls | {"ssl_cert_reqs": tls.get("ssl_cert_reqs", "required")} if wants_tls else {}
        username = next((unquote(p.username) for p in parts if p.username), None)
        password = next((unquote(p.password) for p in parts if p.password), None)
        return cls(hosts, int(db_text), username, password, tls, auth)

    @property
    def broker_url(self) -> str:
        """The URL for Celery: each Sentinel with the user and the database, no TLS options.

        kombu reads the user and database from the first Sentinel only, and the TLS options come
        to it as ``broker_use_ssl``; naming everything on every part keeps its failover cycle whole.
        """
        auth = ""
        if self.password is not None:
            auth = f"{quote(self.username or '', safe='')}:{quote(self.password, safe='')}@"
        return ";".join(f"sentinel://{auth}{host}:{port}/{self.db}" for host, port in self.hosts)


def _streaming_url(name: str, raw: str) -> str:
    _url("https", "http")(name, raw)
    if "/collection/" not in urlsplit(raw).path:
        _fail(name, "must be an AEP streaming inlet URL containing /collection/<CONNECTION_ID>")
    return raw


def _tenant(name: str, raw: str) -> str:
    tenant = raw.lstrip("_")
    if not tenant or not tenant.replace("_", "").isalnum():
        _fail(name, f"must be the tenant id, letters, digits and underscores only, got {raw!r}")
    return tenant


def _log_level(name: str, raw: str) -> str:
    level = raw.upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        _fail(name, f"must be DEBUG, INFO, WARNING, ERROR or CRITICAL, got {raw!r}")
    return level


def _redact_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@", 1)
    return url


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "redis_url": _redis_url,
    "receiver_tokens": _tokens,
    "receiver_max_bytes": _int_in(1024, 100 * 1024 * 1024),
    "receiver_max_pushes": _int_in(1, 100_000),
    "receiver_max_queue_bytes": _int_in(0, 2**50),
    "receiver_max_inbox_depth": _int_in(0, 2**40),
    "receiver_header_timeout_seconds": _float_in(0.5, 600),
    "receiver_body_timeout_seconds": _float_in(0.5, 3600),
    "aep_streaming_url": _streaming_url,
    "aep_ims_url": _url("https", "http"),
    "aep_platform_url": _url("https", "http"),
    "aep_scopes": _csv,
    "aep_tenant_id": _tenant,
    "aep_payload_mode": _choice("xdm", "raw"),
    "aep_timeout_seconds": _float_in(0.5, 120),
    "identity_namespace": _choice("Email", "Email_LC_SHA256"),
    "aep_batch_max_messages": _int_in(1, 10_000),
    "aep_max_messages_per_second": _float_in(1, 100_000),
    "aep_batch_max_bytes": _int_in(10_000, 1_000_000),  # AEP refuses requests over 1 MB
    "aep_batch_max_wait_ms": _int_in(0, 600_000),
    "dedupe_ttl_seconds": _int_in(60, 10 * 365 * 24 * 3600),
    "dedupe_buckets": _power_of_two(256, 2**24),
    "delivery_max_attempts": _int_in(1, 10_000),
    "delivery_max_age_seconds": _int_in(60, 30 * 24 * 3600),
    "delivery_backoff_cap_seconds": _int_in(1, 3600),
    "deadletter_retention_days": _int_in(1, 3650),
    "pending_claim_seconds": _int_in(1, 3600),
    "log_level": _log_level,
    "log_format": _choice("json", "text"),
}


def load_or_exit(
    role: Role | None = None, environ: Mapping[str, str] | None = None, *, exit_code: int = 2
) -> Settings:
    """Settings from the environment; on a bad value print one line naming it and exit."""
    try:
        settings = Settings.from_env(environ)
    except ConfigError as exc:
        exit_on_config_error(exc, exit_code)
    if role is not None:
        require_or_exit(settings, role, exit_code=exit_code)
    return settings


def require_or_exit(settings: Settings, role: Role, *, exit_code: int = 2) -> None:
    """Exit with one line naming the variable when ``settings`` lack what ``role`` needs."""
    try:
        settings.require(role)
    except ConfigError as exc:
        exit_on_config_error(exc, exit_code)


def exit_on_config_error(exc: ConfigError, exit_code: int = 2) -> NoReturn:
    """The one way a process reports a bad setting: one line on stderr, then exit."""
    print(f"rainbridge: configuration error: {exc}", file=sys.stderr, flush=True)
    raise SystemExit(exit_code) from None
