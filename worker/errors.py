"""Errors typed by what to do about them: retry later, or dead-letter now."""

from __future__ import annotations

from typing import Any

from shared.deadletter import Reason


class PipelineError(Exception):
    """Base of every error a pipeline stage raises on purpose."""


class Transient(PipelineError):
    """Worth retrying: the same work may succeed later (AEP busy, network, Redis)."""


class Permanent(PipelineError):
    """Retrying cannot help: the item goes to the dead-letter store with ``reason``."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, detail: Any) -> None:
        super().__init__(str(detail))
        self.detail = detail


class InvalidPush(Permanent):
    """The push does not match the schema; ``detail`` holds marshmallow's messages by field."""

    reason = Reason.INVALID_PAYLOAD


class EventTooLarge(Permanent):
    """The XDM event is over AEP Profile's 10 KB limit and would be silently dropped."""

    reason = Reason.EVENT_TOO_LARGE


class XdmInvalid(Permanent):
    """The event does not fit the schema the mapping implies; ``detail`` lists each violation's pointer."""

    reason = Reason.XDM_INVALID


class InternalError(Permanent):
    """A bug of ours while handling the item; kept as a dead letter so it can be replayed after a fix."""

    reason = Reason.INTERNAL_ERROR


class AepUnavailable(Transient):
    """AEP or Adobe IMS did not take the request this time (5xx, 429, timeout, connection)."""


class AepMisconfigured(Transient):
    """AEP refuses us for a reason only an operator can fix (bad client, wrong inlet)."""
