"""Status lines on stderr for long steps (downloads, conversions), so stdout stays for results."""

from __future__ import annotations

import sys


def say(message: str, enabled: bool = True) -> None:
    """Print ``polysteer: message`` to stderr when ``enabled``."""
    if enabled:
        print(f"polysteer: {message}", file=sys.stderr, flush=True)
