"""``polysteer serve``: an OpenAI-compatible HTTP API with per-request steering.

A FastAPI app on uvicorn (the optional extra ``polysteer[serve]``); concurrent requests with
different styles share forward passes (per-row steering, dynamic batching); styles, feature
read-outs and feature search are endpoints too. See docs/serve.md.

The names below are the declared surface (``from polysteer.serve import ...``); the modules inside
are core's own business and may change.
"""

from __future__ import annotations

from polysteer.serve.app import PreferenceSource, ServeLimits, create_app, require_server_packages
from polysteer.serve.engine import BatchEngine, Job, TextModel
from polysteer.serve.errors import APIError
from polysteer.serve.playground import PlaygroundConfig, control_range, static_dir
from polysteer.serve.server import BackgroundServer, serve
from polysteer.serve.styles import StyleStore, Term, default_styles_dir, parse_steering

__all__ = [
    "APIError", "BackgroundServer", "BatchEngine", "Job", "PlaygroundConfig", "PreferenceSource",
    "ServeLimits", "control_range", "static_dir",
    "StyleStore", "Term", "TextModel", "create_app", "default_styles_dir", "parse_steering",
    "require_server_packages", "serve",
]
