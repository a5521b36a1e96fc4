"""Logging set-up shared by every process: one format, the level from LOG_LEVEL."""

from __future__ import annotations

import logging

from shared.settings import Settings

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"


def configure_logging(settings: Settings) -> None:
    """Send our loggers to stderr at ``LOG_LEVEL``."""
    logging.basicConfig(level=settings.log_level, format=FORMAT)
    logging.getLogger().setLevel(settings.log_level)
    for noisy in ("urllib3", "werkzeug"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
