"""Make ``polysteer_example`` importable when it is not installed (CI runs these tests from the
polysteer repository root without ``pip install``-ing the example)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("polysteer_example") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
