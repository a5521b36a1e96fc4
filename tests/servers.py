"""Moved to devkit.procs (the soak run uses the same helpers); kept for old imports."""

from devkit.procs import *  # noqa: F403
