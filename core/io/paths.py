"""Where polysteer keeps its cache (converted models, dictionaries, datasets)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """polysteer's cache folder: ``$POLYSTEER_HOME``, else ``$XDG_CACHE_HOME/polysteer``."""
    env = os.environ.get("POLYSTEER_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "polysteer"


def configs_dir() -> Path:
    """The folder of shipped configs (``configs/`` in a checkout, ``polysteer/configs`` when installed)."""
    from polysteer import configs

    return Path(configs.__file__).parent
