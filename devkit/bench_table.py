"""The benchmark's hand-written-table worker: the real worker, mapping with ``worker.mapping``'s table.

The mapping file engine must not slow ingest. To measure that in one run, the drain section runs
the same backlog through the real worker twice: once as shipped (the default mapping file), once
as this app, which is the same Celery app with the one call that builds the event pointed at the
hand-written table (:func:`worker.transform.to_xdm`) instead of the mapping. Everything else (validation,
the schema check, dedupe, batching, delivery) is the real code.

Run it as ``celery -A devkit.bench_table worker`` with the same environment as the real worker.
"""

from __future__ import annotations

from collections.abc import Mapping as MappingABC
from typing import Any

from shared.settings import load_or_exit
from worker import ingest, mapfile, transform
from worker.app import app
from worker.validate import Push

_settings = load_or_exit()


def _table_event(
    push: Push, raw: MappingABC[str, Any], mapping: mapfile.Mapping, flat: MappingABC[str, Any] | None = None
) -> dict[str, Any]:
    return transform.to_xdm(push, _settings)


ingest.map_event = _table_event  # type: ignore[attr-defined]  # the one call this app changes

__all__ = ["app"]
