"""Running the app: uvicorn on loopback by default, with a graceful shutdown."""

from __future__ import annotations

from typing import Any

from polysteer.serve.app import PreferenceSource, ServeLimits, create_app, require_server_packages


def serve(model: Any, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          limits: ServeLimits | None = None, api_key: str | None = None, styles_dir: Any = None,
          preferences: PreferenceSource | None = None, shutdown_grace_s: float = 10.0,
          log_level: str = "info", playground: Any = True) -> None:
    """Serve ``model`` until interrupted (Ctrl-C / SIGTERM).

    On shutdown the server stops accepting connections, lets in-flight requests finish for up to
    ``shutdown_grace_s`` seconds, then cancels the rest (their streams end) and stops the engine.
    ``playground``: as :func:`create_app`'s (the web page at ``/``).
    """
    require_server_packages()
    import uvicorn

    app = create_app(model, name=name, limits=limits, api_key=api_key, styles_dir=styles_dir,
                     preferences=preferences, playground=playground)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=max(1, round(shutdown_grace_s)))


class BackgroundServer:
    """An app served by uvicorn on a thread, on a free loopback port: for notebooks, docs and tests.

    ``server = BackgroundServer(app).start()``; ``server.url`` is ``http://127.0.0.1:PORT``;
    ``server.stop()`` shuts it down gracefully (also as a context manager).
    """

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0,
                 shutdown_grace_s: float = 5.0):
        require_server_packages()
        self.app, self.host, self.port, self.grace = app, host, port, shutdown_grace_s
        self._server: Any = None
        self._thread: Any = None
        self._socket: Any = None

    @property
    def url(self) -> str:
        """The base URL (the OpenAI client's ``base_url`` is ``url + "/v1"``)."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 60.0) -> BackgroundServer:
        import socket
        import threading
        import time

        import uvicorn

        self._socket = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._socket.bind((self.host, self.port))
        self.port = self._socket.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning",
                                                     timeout_graceful_shutdown=max(1, round(self.grace))))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]},
                                        name="polysteer-serve", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (up to the grace period), stop the engine."""
        if self._server is not None:
            self._server.should_exit = True
            self._thread.join(self.grace + 30)
            self._socket.close()
            self._server = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *_: Any) -> None:
        self.stop()
