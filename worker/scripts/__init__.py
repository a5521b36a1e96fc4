"""The Lua scripts that make each hand-off atomic, one ``.lua`` file each, read once at import."""

from __future__ import annotations

from importlib import resources


def load(*names: str) -> str:
    """The text of ``<name>.lua`` for each name, in order (a shared prelude first)."""
    folder = resources.files(__package__)
    return "\n".join(folder.joinpath(f"{name}.lua").read_text(encoding="utf-8") for name in names)
