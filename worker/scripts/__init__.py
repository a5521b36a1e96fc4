"""The Lua scripts that make each hand-off atomic, one ``.lua`` file each, read once at import."""

from __future__ import annotations

from importlib import resources


def load(name: str) -> str:
    """The text of ``<name>.lua`` in this package."""
    return resources.files(__package__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
