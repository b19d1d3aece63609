"""Files and output: atomic writes, safetensors/JSON I/O, cache paths, console messages and figures.

The names below are the declared surface plugins import (``from polysteer.io import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.io.console import say
from polysteer.io.fileio import (
    atomic_path,
    clean_dead_temps,
    read_folder,
    read_json,
    read_meta,
    read_tensors,
    sha256_file,
    staged_folder,
    write_folder,
    write_json,
    write_tensors,
)
from polysteer.io.paths import configs_dir, home
from polysteer.io.plots import pyplot, save_png
from polysteer.io.safeload import (
    check_finite_tree,
    check_regular_file,
    finite,
    load_json,
    load_yaml,
    parse_yaml,
    read_text_guarded,
)

__all__ = [
    "atomic_path", "configs_dir", "home", "pyplot", "read_json", "read_tensors", "save_png", "say",
    "sha256_file", "staged_folder", "write_folder", "write_json", "write_tensors",
    # hostile-input guards and atomic folder reads (docs/security.md)
    "check_finite_tree", "check_regular_file", "clean_dead_temps", "finite", "load_json",
    "load_yaml", "parse_yaml", "read_folder", "read_text_guarded",
    "read_meta",
]
