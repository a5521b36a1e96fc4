"""The deliver stage: send batches to AEP, then settle each message by what AEP said of it.

Accepted messages are acknowledged; messages AEP refused for good go to the dead-letter stream;
everything else stays pending in the outbox and is sent again once its claim time has passed.
Acks and dead letters are written by one atomic script, and only for entries still pending,
so a batch that two workers both sent (one of them presumed dead) is settled once.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import redis
import requests

from shared import deadletter, keys
from shared.settings import Settings
from worker import streams
from worker.batch import Batcher
from worker.errors import AepMisconfigured, AepUnavailable
from worker.ims import TokenCache

log = logging.getLogger(__name__)

_SETTLE = """
local outbox, dlq = KEYS[1], KEYS[2]
local group, minid, n_acks = ARGV[1], ARGV[2], tonumber(ARGV[3])
local done = {}
for i = 4, 3 + n_acks do
  if redis.call('XACK', outbox, group, ARGV[i]) == 1 then done[#done + 1] = ARGV[i] end
end
for i = 4 + n_acks, #ARGV, 9 do
  local id, reason, detail, push, xdm, tid, et, attempts, rcv = unpack(ARGV, i, i + 8)
  if redis.call('XACK', outbox, group, id) == 1 then
    done[#done + 1] = id
    redis.call('XADD', dlq, 'MINID', '~', minid, '*', 'reason', reason, 'detail', detail, 'push', push,
               'xdm', xdm, 'transmissionId', tid, 'eventType', et, 'attempts', attempts, 'receivedMs', rcv)
  end
end
if #done > 0 then redis.call('XDEL', outbox, unpack(done)) end
return #done
"""


@dataclass
class Outcome:
    """What AEP said about each entry of one request."""

    accepted: list[streams.Entry] = field(default_factory=list)
    rejected: list[tuple[streams.Entry, str]] = field(default_factory=list)
    retry: list[streams.Entry] = field(default_factory=list)
    error: str | None = None


@dataclass
class DeliverSummary:
    """What one delivery run did, for the task's result and the logs."""

    requests: int = 0
    accepted: int = 0
    rejected: int = 0
    retrying: int = 0
    busy: bool = False
    errors: list[str] = field(default_factory=list)


class AepClient:
    """Posts messages to the AEP streaming inlet with the right headers and token."""

    def __init__(self, settings: Settings, tokens: TokenCache | None, session: requests.Session) -> None:
        self._settings = settings
        self._tokens = tokens
        self._session = session

    def post(self, url: str, body: str) -> requests.Response:
        """POST ``body``; on 401/403 renew the token once and try again."""
        token = self._tokens.get() if self._tokens else None
        resp = self._post(url, body, token)
        if resp.status_code in (401, 403) and self._tokens and token:
            log.warning("AEP answered %d to our token; minting a new one", resp.status_code)
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
        try:
            return self._session.post(url, data=body.encode(), headers=headers, timeout=s.aep_timeout_seconds)
        except requests.RequestException as exc:
            raise AepUnavailable(f"AEP unreachable: {type(exc).__name__}") from None


def send(aep: AepClient, settings: Settings, entries: list[streams.Entry]) -> Outcome:
    """Send one batch (or, in raw mode, one push) and sort its entries by AEP's answer."""
    messages = [entry.fields.get("message", "") for entry in entries]
    raw = settings.aep_payload_mode == "raw"
    url = settings.aep_single_url if raw else settings.aep_batch_url
    body = messages[0] if raw else '{"messages":[' + ",".join(messages) + "]}"
    try:
        resp = aep.post(url, body)
    except (AepUnavailable, AepMisconfigured) as exc:
        return Outcome(retry=list(entries), error=str(exc))
    status = resp.status_code
    if status == 200 and raw:
        return Outcome(accepted=list(entries))
    if status in (200, 207) and not raw:
        return _per_message(entries, resp)
    error = f"AEP answered {status}: {resp.text[:300]}"
    if raw and 400 <= status < 500 and status not in (401, 403, 404, 408, 429):
        return Outcome(rejected=[(entries[0], error)], error=error)
    return Outcome(retry=list(entries), error=error)


def _per_message(entries: list[streams.Entry], resp: requests.Response) -> Outcome:
    try:
        answers = resp.json()["responses"]
    except (ValueError, KeyError, TypeError):
        answers = None
    if not isinstance(answers, list) or len(answers) != len(entries):
        return Outcome(
            retry=list(entries), error=f"AEP answered {resp.status_code} without one response per message"
        )
    outcome = Outcome()
    for entry, answer in zip(entries, answers, strict=True):
        code = _status_of(answer)
        if code is None:
            outcome.accepted.append(entry)
        elif 400 <= code < 500 and code not in (408, 429):
            outcome.rejected.append((entry, f"AEP refused the message ({code}): {answer.get('message', '')}"))
        else:
            outcome.retry.append(entry)
    return outcome


def _status_of(answer: Any) -> int | None:
    """None when AEP accepted the message (it has an xactionId and no error status)."""
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
    """Writes an outcome to Redis: acks for accepted, dead letters for refused, atomically."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self._script = client.register_script(_SETTLE)
        self._settings = settings

    def __call__(self, outcome: Outcome, attempts: int = 1) -> int:
        """Settle ``outcome``; returns how many entries were still ours to settle."""
        if not outcome.accepted and not outcome.rejected:
            return 0
        args: list[str | int] = [keys.OUTBOX_GROUP, deadletter.retention_minid(self._settings)]
        args.append(len(outcome.accepted))
        args += [entry.id for entry in outcome.accepted]
        for entry, detail in outcome.rejected:
            f = entry.fields
            args += [
                entry.id,
                deadletter.AEP_REJECTED,
                json.dumps(detail),
                f.get("push", ""),
                f.get("message", ""),
            ]
            args += [f.get("transmissionId", ""), f.get("eventType", ""), attempts, f.get("receivedMs", "0")]
        return int(self._script(keys=[keys.OUTBOX, keys.DEADLETTER], args=args))


def run(
    client: redis.Redis, settings: Settings, consumer: str, aep: AepClient, budget_s: float
) -> DeliverSummary:
    """Deliver outbox batches until idle or out of time, finishing any batch already read."""
    batcher = Batcher(client, settings, consumer)
    settle = Settler(client, settings)
    summary = DeliverSummary()
    deadline = time.monotonic() + budget_s
    while True:
        entries = batcher.next(deadline)
        if not entries:
            break
        outcome = send(aep, settings, entries)
        settle(outcome)
        summary.requests += 1
        summary.accepted += len(outcome.accepted)
        summary.rejected += len(outcome.rejected)
        summary.retrying += len(outcome.retry)
        for entry, detail in outcome.rejected:
            log.warning("%s dead-lettered (aep_rejected): %s", entry.fields.get("transmissionId"), detail)
        if outcome.error:
            summary.errors.append(outcome.error)
            log.warning(
                "%s delivery of %d message(s) failed, will retry: %s", consumer, len(entries), outcome.error
            )
            # AEP is not taking requests now; the entries stay pending and come back after the claim time.
            break
        summary.busy = len(entries) >= settings.aep_batch_max_messages
        if time.monotonic() >= deadline and not batcher.held:
            break
    if batcher.held:
        log.info("%s leaves %d read message(s) pending for the next run", consumer, len(batcher.held))
    if summary.requests:
        log.info(
            "%s deliver: %d request(s), accepted %d, dead-lettered %d, retrying %d",
            consumer,
            summary.requests,
            summary.accepted,
            summary.rejected,
            summary.retrying,
        )
    return summary
