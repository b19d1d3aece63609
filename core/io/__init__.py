"""Files and output: atomic writes, safetensors/JSON I/O, cache paths, console messages and figures.

The names below are the declared surface plugins import (``from polysteer.io import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.io import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.io import
...``); the modules inside are core's own business and may change.

The names below are the declared surface plugins import (``from polysteer.io import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.io.console import say
from polysteer.io.fileio import (
    atomic_path,
    read_json,
    read_tensors,
    sha256_file,
    staged_folder,
    write_folder,
    write_json,
    write_tensors,
)
from polysteer.io.paths import configs_dir, home
from polysteer.io.plots import pyplot, save_png

__all__ = [
    "atomic_path", "configs_dir", "home", "pyplot", "read_json", "read_tensors", "save_png", "say",
    "sha256_file", "staged_folder", "write_folder", "write_json", "write_tensors",
]
