"""Logs: JSON lines with the ids they are about, emails masked, text on request."""

from __future__ import annotations

import json
import logging

import pytest

from shared.logs import JsonFormatter, MaskingFilter, configure_logging, mask_emails
from shared.settings import Settings


def emit(formatter: logging.Formatter, message: str, *args: object, **extra: object) -> str:
    record = logging.LogRecord("worker.ingest", logging.WARNING, __file__, 1, message, args, None)
    record.__dict__.update(extra)
    MaskingFilter().filter(record)
    return formatter.format(record)


def test_a_json_line_carries_the_ids_and_masks_emails() -> None:
    line = emit(
        JsonFormatter(), "%s dead-lettered: %s", "T1", "bad push from Ada.L@Example.com", transmissionId="T1"
    )
    data = json.loads(line)
    assert data["level"] == "WARNING"
    assert data["logger"] == "worker.ingest"
    assert data["transmissionId"] == "T1"
    assert "Ada.L@Example.com" not in line
    assert "***@Example.com" in data["message"]


def test_exceptions_are_masked_too() -> None:
    try:
        raise ValueError("no such attendee ada@example.com")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info()
        )
    MaskingFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "ada@example.com" not in line
    assert "ValueError" in json.loads(line)["exception"]


@pytest.mark.parametrize("text", ["a@b.co", "first.last+tag@sub.example.org", "x_y@host-1.example"])
def test_mask_emails(text: str) -> None:
    assert text not in mask_emails(f"user {text} here")


def test_text_format_on_request(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved, level = list(root.handlers), root.level
    try:
        configure_logging(Settings(log_format="text"))
        logging.getLogger("rainbridge.test").warning("hello ada@example.com")
    finally:
        root.handlers[:] = saved
        root.setLevel(level)
    err = capsys.readouterr().err
    assert "WARNING" in err and "hello ***@example.com" in err
    assert not err.lstrip().startswith("{")
