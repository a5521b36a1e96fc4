"""Which local TCP ports are free, and which process holds one that is not (from /proc)."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path

_LISTEN = "0A"  # TCP state LISTEN in /proc/net/tcp


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing listens on ``port`` and we could bind it now."""
    with socket.socket() as sock:
        # SO_REUSEADDR, as the servers we start set it: a port left in TIME_WAIT is free to them.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def listening(port: int) -> bool:
    """True when some socket listens on ``port`` (any address), as /proc/net/tcp{,6} tell."""
    return bool(_listening_inodes(port))


def holder(port: int) -> str:
    """A short description of who listens on ``port``: "pid 123 (redis-server …)" when /proc says."""
    inodes = _listening_inodes(port)
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (pid_dir / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        return f"pid {pid_dir.name} ({_cmdline(pid_dir)})"
    return "another process (not visible to this user)"


def _listening_inodes(port: int) -> set[str]:
    found: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, state, inode = fields[1], fields[3], fields[9]
                if state == _LISTEN and int(local.rsplit(":", 1)[1], 16) == port:
                    found.add(inode)
    return found


def _cmdline(pid_dir: Path) -> str:
    try:
        parts = (pid_dir / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return "?"
    text = " ".join(" ".join(p.decode(errors="replace").split()) for p in parts if p)
    return text if len(text) <= 80 else text[:77] + "…"
