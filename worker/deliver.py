"""The deliver stage: send batches to AEP, then settle each message by what AEP said of it.

- accepted (an ``xactionId``): acknowledged and removed from the outbox;
- refused for good (a 4xx for that message, or a lone message AEP refuses whole): dead-lettered
  as ``aep_rejected`` with AEP's words;
- anything else (429, 5xx, timeouts): left pending and tried again later, alone if it failed alone.

A whole-request 413 splits the batch and a whole-request 400 bisects it, so one bad message never
blocks its neighbours. 429/503 with Retry-After pause every worker for that long; other failures
back off exponentially with full jitter, fleet-wide; a 404 (wrong inlet) is an operator's problem:
delivery pauses, it is logged as an error, nothing is dead-lettered for it.

Acks and dead letters are written by one atomic script, and only for entries still pending, so a
batch that two workers both sent (one of them presumed dead) is settled once.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from shared import deadletter, keys, metrics
from shared.settings import Settings
from worker import pause, scripts, streams
from worker.batch import Batch, Batcher
from worker.errors import AepMisconfigured, AepUnavailable
from worker.ims import TokenCache

log = logging.getLogger(__name__)

#: How long delivery pauses after AEP says the inlet does not exist (404): an operator must act.
MISCONFIGURED_PAUSE_MS = 60_000

_SETTLE = scripts.load("settle")


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
    #: Back off fleet-wide (a whole-request failure without Retry-After).
    back_off: bool = False
    requests: int = 0

    def merge(self, other: Outcome) -> None:
        """Add the outcome of a part of the same batch."""
        self.accepted += other.accepted
        self.rejected += other.rejected
        self.retry += other.retry
        self.error = other.error or self.error
        self.pause_ms = other.pause_ms if other.pause_ms is not None else self.pause_ms
        self.back_off = self.back_off or other.back_off
        self.requests += other.requests

    @property
    def stop(self) -> bool:
        """AEP is not taking requests now: send nothing more until the pause is over."""
        return self.pause_ms is not None or self.back_off


@dataclass
class DeliverSummary:
    """What one delivery run did, for the task's result and the logs."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    retrying: int = 0
    exhausted: int = 0
    busy: bool = False


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


def send(aep: AepClient, settings: Settings, entries: list[streams.Entry]) -> Outcome:
    """Send ``entries`` (one request, or more when AEP makes us split) and sort them by AEP's answer."""
    raw = settings.sends_raw
    messages = [entry.fields.get("message", "") for entry in entries]
    url = settings.aep_single_url if raw else settings.aep_batch_url
    body = messages[0] if raw else '{"messages":[' + ",".join(messages) + "]}"
    metrics.inc(metrics.BATCHES)
    metrics.observe(metrics.BATCH_SIZE, len(entries))
    try:
        resp = aep.post(url, body)
    except AepUnavailable as exc:
        return Outcome(retry=list(entries), error=str(exc), back_off=True, requests=1)
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
        outcome = send(aep, settings, entries[:half])
        outcome.requests += 1
        if outcome.stop:
            outcome.retry += entries[half:]
        else:
            outcome.merge(send(aep, settings, entries[half:]))
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


class Settler:
    """Writes outcomes to Redis: acks for accepted, dead letters for refused, atomically."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._script = client.register_script(_SETTLE)
        self._settings = settings

    def __call__(
        self,
        accepted: list[streams.Entry],
        dead: list[tuple[streams.Entry, deadletter.Reason, str]],
        attempts: dict[str, int],
    ) -> int:
        """Ack ``accepted`` and dead-letter ``dead`` (entry, reason, detail); returns how many were ours."""
        if not accepted and not dead:
            return 0
        args: list[str | int] = [keys.OUTBOX_GROUP, deadletter.retention_minid(self._settings), len(accepted)]
        args += [entry.id for entry in accepted]
        for entry, reason, detail in dead:
            f = entry.fields
            args += [entry.id, reason, json.dumps(detail), f.get("push", ""), f.get("message", "")]
            args += [f.get("transmissionId", ""), f.get("eventType", ""), attempts.get(entry.id, 1)]
            args.append(f.get("receivedMs", "0"))
        return int(self._script(keys=[keys.OUTBOX, keys.DEADLETTER], args=args))


def run(
    client: redis.Redis, settings: Settings, consumer: str, aep: AepClient, budget_s: float
) -> DeliverSummary:
    """Deliver outbox batches until idle or out of time, finishing any batch already read."""
    batcher = Batcher(client, settings, consumer)
    settle = Settler(client, settings)
    summary = DeliverSummary()
    claim_ms = settings.pending_claim_seconds * 1000
    deadline = time.monotonic() + budget_s

    def release(entries: list[streams.Entry], delay_ms: int = 0) -> None:
        ids = [entry.id for entry in entries]
        streams.release(
            client, keys.OUTBOX, keys.OUTBOX_GROUP, consumer, ids, claim_idle_ms=claim_ms, delay_ms=delay_ms
        )

    while True:
        if _wait_out_pause(client, deadline):
            break
        batch = batcher.next(deadline)
        _settle_exhausted(settle, batch, summary)
        if not batch.entries:
            if batch.exhausted:
                continue
            break
        if pause.paused_until(client):
            # Another worker paused delivery while this batch filled: hand it back untouched.
            release(batch.entries + batcher.held)
            batcher.held = []
            continue
        outcome = send(aep, settings, batch.entries)
        _settle_outcome(client, settings, settle, batch, outcome, summary=summary, release=release)
        if outcome.stop:
            release(batcher.held)
            batcher.held = []
            continue
        summary.busy = len(batch.entries) >= settings.messages_per_request
        if time.monotonic() >= deadline and not batcher.held:
            break
    if summary.requests or summary.exhausted:
        log.info(
            "%s deliver: %d request(s), accepted %d, dead-lettered %d (+%d exhausted), retrying %d",
            consumer,
            summary.requests,
            summary.accepted,
            summary.rejected,
            summary.exhausted,
            summary.retrying,
        )
    return summary


def _wait_out_pause(client: redis.Redis, deadline: float) -> bool:
    """Sleep while delivery is paused; True when the pause outlasts this run's time."""
    while until := pause.paused_until(client):
        left = deadline - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(left, max(0.0, (until - pause.now_ms()) / 1000), 0.5))
    return time.monotonic() >= deadline


def _settle_exhausted(settle: Settler, batch: Batch, summary: DeliverSummary) -> None:
    if not batch.exhausted:
        return
    dead = []
    for entry in batch.exhausted:
        attempts = batch.attempts.get(entry.id, 1) - 1  # this claim was not an attempt
        received = int(entry.fields.get("receivedMs") or entry.ms)
        age_s = (pause.now_ms() - received) / 1000
        detail = f"not delivered after {attempts} attempt(s) over {age_s:.0f} s"
        dead.append((entry, deadletter.Reason.DELIVERY_EXHAUSTED, detail))
        batch.attempts[entry.id] = attempts
        tid = entry.fields.get("transmissionId")
        log.warning("%s dead-lettered (delivery_exhausted): %s", tid, detail, extra={"transmissionId": tid})
    settle([], dead, batch.attempts)
    summary.exhausted += len(dead)
    metrics.inc(metrics.DEADLETTERS, len(dead), reason=deadletter.Reason.DELIVERY_EXHAUSTED)


def _settle_outcome(
    client: redis.Redis,
    settings: Settings,
    settle: Settler,
    batch: Batch,
    outcome: Outcome,
    *,
    summary: DeliverSummary,
    release: Callable[..., None],
) -> None:
    dead = [(entry, deadletter.Reason.AEP_REJECTED, detail) for entry, detail in outcome.rejected]
    settle(outcome.accepted, dead, batch.attempts)
    for entry, detail in outcome.rejected:
        tid = entry.fields.get("transmissionId")
        log.warning("%s dead-lettered (aep_rejected): %s", tid, detail, extra={"transmissionId": tid})
    summary.requests += outcome.requests
    summary.accepted += len(outcome.accepted)
    summary.rejected += len(outcome.rejected)
    summary.retrying += len(outcome.retry)
    metrics.inc(metrics.PUSHES, len(outcome.accepted), outcome="sent")
    metrics.inc(metrics.RETRIES, len(outcome.retry))
    metrics.inc(metrics.DEADLETTERS, len(outcome.rejected), reason=deadletter.Reason.AEP_REJECTED)
    if outcome.accepted:
        pause.succeeded(client)
    cap_ms = settings.delivery_backoff_cap_seconds * 1000
    if outcome.pause_ms is not None:
        pause.pause(client, pause.now_ms() + outcome.pause_ms, outcome.error or "AEP asked us to wait")
    elif outcome.back_off:
        pause.back_off(client, cap_ms, outcome.error or "AEP request failed")
    if outcome.stop:
        release(outcome.retry)  # first in line once the pause is over
    elif outcome.retry:
        # Only some messages failed (a 429/5xx for them in the 207): retry them alone, a little later.
        release(
            outcome.retry,
            delay_ms=min(cap_ms, 1000 * 2 ** min(max(batch.attempts.get(outcome.retry[0].id, 1), 1), 10)),
        )
