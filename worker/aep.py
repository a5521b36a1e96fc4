"""AEP's streaming inlet on the wire: the request, its headers and token, and what an answer means.

One batch becomes an :class:`Outcome`: which messages AEP accepted, which it refused for good
(with its words), which to retry, and whether delivery should pause or back off. A whole-request
413 splits the batch and a whole-request 400 bisects it, so one bad message never blocks its
neighbours. Redis is not touched here: :mod:`worker.deliver` settles the outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from shared import metrics
from shared.records import OutboxRecord
from shared.settings import Settings
from worker import pause, streams
from worker.errors import AepMisconfigured, AepUnavailable
from worker.ims import TokenCache

log = logging.getLogger(__name__)

#: How long delivery pauses after AEP says the inlet does not exist (404): an operator must act.
MISCONFIGURED_PAUSE_MS = 60_000


@dataclass
class Outcome:
    """What AEP said about the entries of one batch, and what delivery should do next."""

    accepted: list[streams.Entry] = field(default_factory=list)
    rejected: list[tuple[streams.Entry, str]] = field(default_factory=list)
    retry: list[streams.Entry] = field(default_factory=list)
    #: Why the last request failed as a whole, if it did.
    error: str | None = None
    #: Pause every worker this long (Retry-After, or a misconfiguration).
    pause_ms: int | None = None
    #: Back off (a whole-request failure without Retry-After): fleet-wide, or ``local`` to this
    #: host when AEP was never reached (a connection error or timeout: this host's path to it).
    back_off: bool = False
    local: bool = False
    requests: int = 0

    def merge(self, other: Outcome) -> None:
        """Add the outcome of a part of the same batch."""
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.retry += other.retry
        self.error = other.error or self.error
        self.pause_ms = other.pause_ms if other.pause_ms is not None else self.pause_ms
        if other.back_off:
            # Local only if every part that failed never reached AEP.
            self.local = other.local if not self.back_off else self.local and other.local
        self.back_off = self.back_off or other.back_off
        self.requests += other.requests

    @property
    def stop(self) -> bool:
        """AEP is not taking requests now: send nothing more until the pause is over."""
        return self.pause_ms is not None or self.back_off


@dataclass
class AepClient:
    """Posts messages to the AEP streaming inlet with the right headers and token."""

    def __init__(self, settings: Settings, tokens: TokenCache | None, session: requests.Session) -> None:
        self._settings = settings
        self._tokens = tokens
        self._session = session

    def post(self, url: str, body: str) -> requests.Response:
        """POST ``body``; on 401/403 mint a new token once and try again."""
        token = self._tokens.get() if self._tokens else None
        resp = self._post(url, body, token)
        if resp.status_code in (401, 403) and self._tokens and token:
            log.warning("AEP answered %d to our token; getting a new one", resp.status_code)
            self._tokens.invalidate(token)
            resp = self._post(url, body, self._tokens.get())
        return resp

    def _post(self, url: str, body: str, token: str | None) -> requests.Response:
        s = self._settings
        headers = {"Content-Type": "application/json", "x-sandbox-name": s.aep_sandbox_name}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        if s.aep_org_id:
            headers["x-gw-ims-org-id"] = s.aep_org_id
        if s.aep_client_id:
            headers["x-api-key"] = s.aep_client_id
        if s.aep_flow_id:
            headers["x-adobe-flow-id"] = s.aep_flow_id
        started = time.perf_counter()
        try:
            resp = self._session.post(url, data=body.encode(), headers=headers, timeout=s.aep_timeout_seconds)
        except requests.RequestException as exc:
            metrics.inc(metrics.AEP_RESPONSES, status=type(exc).__name__)
            raise AepUnavailable(f"AEP unreachable: {type(exc).__name__}") from None
        finally:
            metrics.observe(metrics.AEP_SECONDS, time.perf_counter() - started)
        metrics.inc(metrics.AEP_RESPONSES, status=str(resp.status_code))
        return resp


def send(
    aep: AepClient,
    settings: Settings,
    entries: list[streams.Entry],
    before: Callable[[int], object] | None = None,
) -> Outcome:
    """Send ``entries`` (one request, or more when AEP makes us split) and sort them by AEP's answer.

    ``before`` is called with the message count before each request (the fleet's rate cap), the
    requests a split makes included.
    """
    if before is not None:
        before(len(entries))
    raw = settings.sends_raw
    messages = [OutboxRecord.parse(entry.fields, entry.ms).message for entry in entries]
    url = settings.aep_single_url if raw else settings.aep_batch_url
    body = messages[0] if raw else '{"messages":[' + ",".join(messages) + "]}"
    metrics.inc(metrics.BATCHES)
    metrics.observe(metrics.BATCH_SIZE, len(entries))
    try:
        resp = aep.post(url, body)
    except AepUnavailable as exc:
        return Outcome(retry=list(entries), error=str(exc), back_off=True, local=True, requests=1)
    except AepMisconfigured as exc:
        log.error("AEP credentials refused, delivery paused: %s", exc)
        return Outcome(retry=list(entries), error=str(exc), pause_ms=MISCONFIGURED_PAUSE_MS, requests=1)

    status = resp.status_code
    if status in (200, 207) and not raw:
        outcome = _per_message(entries, resp)
        outcome.requests = 1
        return outcome
    if 200 <= status < 300:
        return Outcome(accepted=list(entries), requests=1)
    error = f"AEP answered {status}: {_aep_message(resp)}"
    if status in (400, 413):
        # Something in the request is refused: narrow it down to the message(s) at fault.
        if len(entries) == 1:
            return Outcome(rejected=[(entries[0], error)], requests=1)
        half = len(entries) // 2
        outcome = send(aep, settings, entries[:half], before)
        outcome.requests += 1
        if outcome.stop:
            outcome.retry += entries[half:]
        else:
            outcome.merge(send(aep, settings, entries[half:], before))
        return outcome
    if status in (429, 503) and (wait := pause.retry_after_ms(resp.headers.get("Retry-After"))) is not None:
        return Outcome(retry=list(entries), error=error, pause_ms=wait, requests=1)
    if status == 404:
        log.error("AEP_STREAMING_URL names an inlet AEP does not know (404); delivery paused: %s", error)
        return Outcome(retry=list(entries), error=error, pause_ms=MISCONFIGURED_PAUSE_MS, requests=1)
    return Outcome(retry=list(entries), error=error, back_off=True, requests=1)


def _aep_message(resp: requests.Response) -> str:
    try:
        data = resp.json()
    except ValueError:
        return resp.text[:300]
    if isinstance(data, dict):
        report = data.get("report")
        if isinstance(report, dict) and report.get("message"):
            return str(report["message"])[:300]
        for name in ("message", "title", "error_description", "error"):
            if data.get(name):
                return str(data[name])[:300]
    return resp.text[:300]


def _per_message(entries: list[streams.Entry], resp: requests.Response) -> Outcome:
    try:
        answers = resp.json()["responses"]
    except (ValueError, KeyError, TypeError):
        answers = None
    if not isinstance(answers, list) or len(answers) != len(entries):
        error = f"AEP answered {resp.status_code} without one response per message"
        return Outcome(retry=list(entries), error=error, back_off=True)
    outcome = Outcome()
    for entry, answer in zip(entries, answers, strict=True):
        code = _status_of(answer)
        if code is None:
            outcome.accepted.append(entry)
        elif 400 <= code < 500 and code not in (408, 429):
            message = answer.get("message", "") if isinstance(answer, dict) else ""
            outcome.rejected.append((entry, f"AEP refused the message ({code}): {message}"))
        else:
            outcome.retry.append(entry)
    return outcome


def _status_of(answer: Any) -> int | None:
    """None when AEP accepted the message (an xactionId and no error status)."""
    if not isinstance(answer, dict):
        return 500
    code = answer.get("statusCode")
    if code is None and answer.get("xactionId"):
        return None
    try:
        return int(code) if code is not None else 500
    except (TypeError, ValueError):
        return 500
