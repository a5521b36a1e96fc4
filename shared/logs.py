"""Logging shared by every process: JSON lines (or text), ids attached, emails masked."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from shared.settings import Settings

EMAIL = re.compile(
    r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z][\w-]*"
)  # the last label has a letter: not a version
TEXT_FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
#: Attributes a log call may attach with ``extra=``; they become JSON fields.
CONTEXT_FIELDS = ("transmissionId", "receipt", "task_id", "consumer", "stream")


def mask_emails(text: str) -> str:
    """Replace every email address in ``text`` with a mask that keeps only its domain."""
    return EMAIL.sub(lambda m: "***@" + m.group(0).rsplit("@", 1)[1], text)


class MaskingFilter(logging.Filter):
    """Masks emails in the final message, and adds the running Celery task's id when there is one."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite the record in place; never drops it."""
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.msg, record.args = mask_emails(message), None
        if record.exc_text:
            record.exc_text = mask_emails(record.exc_text)
        if not hasattr(record, "task_id"):
            task_id = _current_task_id()
            if task_id:
                record.task_id = task_id
        return True


def _current_task_id() -> str | None:
    try:
        from celery import current_task  # noqa: PLC0415 - the receiver never loads Celery
    except ImportError:
        return None
    request = getattr(current_task, "request", None)
    task_id = getattr(request, "id", None)
    return str(task_id) if task_id else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, process, message, known ids, exception."""

    def format(self, record: logging.LogRecord) -> str:
        """Serialise ``record``."""
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z",
            "level": record.levelname,
            "logger": record.name,
            "process": record.process,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_text:
            line["exception"] = record.exc_text
        return json.dumps(line, ensure_ascii=False, default=str)


def configure_logging(settings: Settings) -> None:
    """Route every logger to stderr at ``LOG_LEVEL``, as JSON lines unless ``LOG_FORMAT=text``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else logging.Formatter(TEXT_FORMAT))
    handler.addFilter(MaskingFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for noisy in ("urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
