"""Figures without a display: matplotlib when it is installed, written atomically as PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from polysteer.io.fileio import atomic_path


def pyplot() -> Any | None:
    """``matplotlib.pyplot`` on the non-interactive Agg backend, or None without matplotlib
    (callers then skip the figure; ``pip install 'polysteer[plots]'`` adds it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_png(fig: Any, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Write ``fig`` to ``path`` as PNG (under a temporary name, then renamed) and close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
