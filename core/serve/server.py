"""Running the app: uvicorn on loopback by default, with a graceful shutdown."""

from __future__ import annotations

from typing import Any

from polysteer.serve.app import PreferenceSource, ServeLimits, create_app, require_server_packages


def serve(model: Any, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
          limits: ServeLimits | None = None, api_key: str | None = None, styles_dir: Any = None,
          preferences: PreferenceSource | None = None, shutdown_grace_s: float = 10.0,
          log_level: str = "info") -> None:
    """Serve ``model`` until interrupted (Ctrl-C / SIGTERM).

    On shutdown the server stops accepting connections, lets in-flight requests finish for up to
    ``shutdown_grace_s`` seconds, then cancels the rest (their streams end) and stops the engine.
    """
    require_server_packages()
    import uvicorn

    app = create_app(model, name=name, limits=limits, api_key=api_key, styles_dir=styles_dir,
                     preferences=preferences)
    uvicorn.run(app, host=host, port=port, log_level=log_level,
                timeout_graceful_shutdown=max(1, round(shutdown_grace_s)))
