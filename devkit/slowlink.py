"""A slow link: a TCP relay that holds every chunk for a fixed time in each direction.

This kernel has no ``netem`` qdisc, so latency is added here, in user space; packet loss is
added below it with an iptables ``statistic`` rule, so TCP sees real drops and retransmits.
Order within a connection is kept: each direction is one queue, sent in arrival order.
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field


@dataclass
class SlowLink:
    """Relay ``listen`` to ``target``, adding ``delay`` seconds each way (twice that per round trip)."""

    listen: tuple[str, int]
    target: tuple[str, int]
    delay: float
    connections: int = 0
    chunks: int = 0
    _server: socket.socket | None = None
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> None:
        """Listen and relay in the background until ``stop``."""
        server = socket.create_server(self.listen, reuse_port=False)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True, name="slowlink").start()

    def stop(self) -> None:
        """Close the listener and every relayed connection."""
        if self._server is not None:
            self._server.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()
            self._sockets.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets += [client, upstream]
            self._direction(client, upstream)
            self._direction(upstream, client)

    def _direction(self, source: socket.socket, sink: socket.socket) -> None:
        held: queue.Queue[tuple[float, bytes] | None] = queue.Queue()

        def read() -> None:
            while True:
                try:
                    data = source.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    held.put(None)
                    return
                held.put((time.monotonic() + self.delay, data))

        def send() -> None:
            while (item := held.get()) is not None:
                due, data = item
                time.sleep(max(0.0, due - time.monotonic()))
                try:
                    sink.sendall(data)
                except OSError:
                    break
                with self._lock:
                    self.chunks += 1
            # The other side hears the close as late as it would have heard the data.
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_WR)

        threading.Thread(target=read, daemon=True).start()
        threading.Thread(target=send, daemon=True).start()
