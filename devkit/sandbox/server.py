"""Serving the sandbox app on a port in a thread, restartable with its state kept."""

from __future__ import annotations

import threading
from types import TracebackType

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from devkit.sandbox.app import create_sandbox_app
from devkit.sandbox.config import STATE_KEY, SandboxConfig
from devkit.sandbox.state import SandboxState


class _QuietHandler(WSGIRequestHandler):
    """Request handler that does not log every request (benchmarks send thousands)."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


class SandboxServer:
    """Serve a sandbox app from a background thread on ``host:port`` (port 0 picks a free one).

    The state belongs to the app, not to the server: ``stop()`` then ``start()`` (or ``restart()``)
    rebinds the same port with the same state, and ``SandboxServer(port=old.port, app=old.app)``
    does the same from a new object. While stopped, connections are refused.
    """

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app: Flask | None = None,
    ) -> None:
        if config is not None and app is not None:
            raise ValueError("pass a config or an existing app, not both")
        self.app = app if app is not None else create_sandbox_app(config or SandboxConfig())
        self.host = host
        self.port = port
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def state(self) -> SandboxState:
        """The state shared by every server of this app."""
        state: SandboxState = self.app.extensions[STATE_KEY]
        return state

    @property
    def config(self) -> SandboxConfig:
        """The configuration the app was built with."""
        return self.state.config

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:8088``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is accepting connections."""
        return self._server is not None

    def start(self) -> SandboxServer:
        """Bind and serve in a daemon thread; return self."""
        if self._server is not None:
            raise RuntimeError("sandbox server is already running")
        try:
            server = make_server(self.host, self.port, self.app, threaded=True, request_handler=_QuietHandler)
        except SystemExit as exc:
            # werkzeug exits the process when the port is taken; a library caller wants an exception.
            raise OSError(f"cannot bind {self.host}:{self.port}") from exc
        self.port = server.port
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="aep-sandbox", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop accepting connections and close the listening socket; state is kept."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def restart(self) -> SandboxServer:
        """Stop and start again on the same port with the same state."""
        self.stop()
        return self.start()

    def __enter__(self) -> SandboxServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
