"""Remembered preferences: recognise a user's stated preferences from feature read-outs, keep them
per user in SQLite (versioned, decaying over turns, undoable) and turn them into one style.

The names below are the declared surface (``from polysteer.preferences import ...``); the modules
inside are core's own business and may change."""

from __future__ import annotations

from polysteer.preferences.recogniser import (
    FeatureRecogniser,
    Recognised,
    Recogniser,
    RecogniserError,
    find_recogniser,
    load_recogniser,
    recogniser_search_path,
)
from polysteer.preferences.store import (
    DEFAULT_DECAY,
    SCHEMA_VERSION,
    Preference,
    PreferenceError,
    PreferenceStore,
    Version,
    default_store_path,
)

__all__ = [
    "DEFAULT_DECAY", "FeatureRecogniser", "Preference", "PreferenceError", "PreferenceStore",
    "Recognised", "Recogniser", "RecogniserError", "SCHEMA_VERSION", "Version",
    "default_store_path", "find_recogniser", "load_recogniser", "recogniser_search_path",
]
