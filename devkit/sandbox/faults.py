"""The fault language: instructions posted to ``/sandbox/faults`` and the state they leave."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the state holds Faults: importing it here at run time would be a cycle
    from devkit.sandbox.state import SandboxState


_DEFAULT_REJECT_MESSAGE = "Message rejected by the sandbox (fault instruction reject_ids)"


@dataclass
class Faults:
    """Current fault instructions; ``down_until`` is on the ``time.monotonic`` clock."""

    fail_next: dict[str, Any] | None = None
    ims_fail_next: dict[str, Any] | None = None
    reject_ids: frozenset[str] = frozenset()
    reject_status: int = 400
    reject_message: str = _DEFAULT_REJECT_MESSAGE
    reject_mode: str = "message"
    slow_ms: int = 0
    down_until: float = 0.0
    token_ttl: int | None = None

    def describe(self, now: float) -> dict[str, Any]:
        """Return the instructions in force, in the shape ``POST /sandbox/faults`` accepts."""
        out: dict[str, Any] = {}
        if self.fail_next:
            out["fail_next"] = dict(self.fail_next)
        if self.reject_ids or self.reject_status != 400 or self.reject_mode != "message":
            out.update(
                reject_ids=sorted(self.reject_ids),
                reject_status=self.reject_status,
                reject_message=self.reject_message,
                reject_mode=self.reject_mode,
            )
        if self.slow_ms:
            out["slow_ms"] = self.slow_ms
        if self.down_until > now:
            out["down_for_ms"] = int((self.down_until - now) * 1000)
        if self.token_ttl is not None:
            out["token_ttl"] = self.token_ttl
        if self.ims_fail_next:
            out["ims_fail_next"] = dict(self.ims_fail_next)
        return out


class _BadInstruction(ValueError):
    """A fault instruction that cannot be applied."""


def _int_field(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _BadInstruction(f"{name} must be an integer from {low} to {high}")
    return value


def _failure_spec(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _BadInstruction(f"{name} must be an object")
    unknown = set(value) - {"count", "status", "retry_after", "body"}
    if unknown:
        raise _BadInstruction(f"{name} has unknown keys: {sorted(unknown)}")
    if "status" not in value:
        raise _BadInstruction(f"{name}.status is required")
    spec: dict[str, Any] = {
        "count": _int_field(value.get("count", 1), f"{name}.count", 0, 1_000_000),
        "status": _int_field(value["status"], f"{name}.status", 200, 599),
    }
    retry_after = value.get("retry_after")
    if retry_after is not None:
        if isinstance(retry_after, bool) or not isinstance(retry_after, (str, int)) or retry_after == "":
            raise _BadInstruction(f"{name}.retry_after must be seconds or an HTTP-date string")
        spec["retry_after"] = str(retry_after)
    if "body" in value:
        spec["body"] = value["body"]
    return spec if spec["count"] else None


def apply_fault_instructions(state: SandboxState, data: Any, now: float) -> None:
    """Merge instructions into ``state.faults`` atomically; raise ValueError if any is invalid."""
    if not isinstance(data, dict):
        raise _BadInstruction("fault instructions must be a JSON object")
    known = {
        "fail_next",
        "ims_fail_next",
        "reject_ids",
        "reject_status",
        "reject_message",
        "reject_mode",
        "slow_ms",
        "down_for_ms",
        "expire_tokens",
        "token_ttl",
    }
    unknown = set(data) - known
    if unknown:
        raise _BadInstruction(f"unknown fault instructions: {sorted(unknown)}")
    new = dataclasses.replace(state.faults)
    if "fail_next" in data:
        new.fail_next = _failure_spec(data["fail_next"], "fail_next")
    if "ims_fail_next" in data:
        new.ims_fail_next = _failure_spec(data["ims_fail_next"], "ims_fail_next")
    if "reject_ids" in data:
        ids = data["reject_ids"] or []
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise _BadInstruction("reject_ids must be a list of strings")
        new.reject_ids = frozenset(ids)
    if "reject_status" in data:
        new.reject_status = _int_field(data["reject_status"] or 400, "reject_status", 400, 599)
    if "reject_message" in data:
        message = data["reject_message"] or _DEFAULT_REJECT_MESSAGE
        if not isinstance(message, str):
            raise _BadInstruction("reject_message must be a string")
        new.reject_message = message
    if "reject_mode" in data:
        mode = data["reject_mode"] or "message"
        if mode not in ("message", "request"):
            raise _BadInstruction('reject_mode must be "message" or "request"')
        new.reject_mode = mode
    if "slow_ms" in data:
        new.slow_ms = _int_field(data["slow_ms"] or 0, "slow_ms", 0, 600_000)
    if "down_for_ms" in data:
        down_ms = _int_field(data["down_for_ms"] or 0, "down_for_ms", 0, 86_400_000)
        new.down_until = now + down_ms / 1000 if down_ms else 0.0
    if "token_ttl" in data:
        ttl = data["token_ttl"]
        new.token_ttl = None if ttl is None else _int_field(ttl, "token_ttl", 1, 10 * 86400)
    expire = data.get("expire_tokens", False)
    if not isinstance(expire, bool):
        raise _BadInstruction("expire_tokens must be true or false")
    state.faults = new
    if expire:
        state.tokens.clear()


def take_failure(faults: Faults, attr: str) -> dict[str, Any] | None:
    """Consume one use of a ``fail_next``-style instruction (caller holds the lock)."""
    spec: dict[str, Any] | None = getattr(faults, attr)
    if not spec:
        return None
    remaining = spec["count"] - 1
    setattr(faults, attr, {**spec, "count": remaining} if remaining > 0 else None)
    return spec
