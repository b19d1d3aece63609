"""Load a diffusers pipeline: the shipped ``avatars`` model by name, or any local pipeline folder.

``avatars`` is the attribute-conditioned avatar model polysteer trains
(``scripts/train_avatar_diffusion.py``) and ships as package data in ``polysteer.configs``
(``model/avatars/``). Any other folder with a ``model_index.json`` loads through
``diffusers.DiffusionPipeline.from_pretrained`` from local files only (nothing is downloaded): UNet2D
pipelines (DDPM/DDIM), the Stable Diffusion family and transformer (DiT/PixArt/SD3...) pipelines.
Pipelines with a text encoder may leave ``tokenizer``/``text_encoder`` out and be given
``prompt_embeds`` directly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.fileio import read_json, sha256_file
from polysteer.paths import configs_dir

EMBEDDED = ("avatars",)
"""Names of the pipelines shipped inside the package."""


def embedded_folder(name: str) -> Path:
    """Where the shipped pipeline ``name`` lives (inside the installed package)."""
    return configs_dir() / "model" / name


def pipeline_folder(name_or_path: str | Path) -> Path:
    """The folder of an embedded name or a local path; a clear error when there is none."""
    if str(name_or_path) in EMBEDDED:
        folder = embedded_folder(str(name_or_path))
        if not (folder / "model_index.json").is_file():
            raise PolysteerError(f"the shipped pipeline {name_or_path!r} is missing from {folder}: "
                                 "reinstall polysteer, or retrain it with scripts/train_avatar_diffusion.py")
        return folder
    folder = Path(name_or_path).expanduser()
    if not (folder / "model_index.json").is_file():
        names = ", ".join(EMBEDDED)
        raise PolysteerError(f"{name_or_path!r} is neither a shipped image model ({names}) nor a "
                             "diffusers pipeline folder (one holding model_index.json); pass a local folder "
                             "saved with pipeline.save_pretrained(...)")
    return folder


def verify(folder: Path) -> None:
    """Check every file listed in ``manifest.json`` against its sha256 (shipped models)."""
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return
    for rel, digest in read_json(manifest).get("files", {}).items():
        path = folder / rel
        if not path.is_file() or sha256_file(path) != digest:
            raise CorruptFileError(f"{path} is missing or damaged (sha256 differs from {manifest}); "
                                   "reinstall polysteer or retrain the model")


def load_pipeline(name_or_path: str | Path, dtype: str = "float32", device: str = "cpu") -> Any:
    """A pipeline ready to run: the shipped ``avatars`` or a local diffusers folder."""
    folder = pipeline_folder(name_or_path)
    torch_dtype = getattr(torch, dtype)
    index = read_json(folder / "model_index.json")
    if index.get("_class_name") == "AvatarPipeline":
        from polysteer.plugins.image.avatars import load_avatar_pipeline

        verify(folder)
        pipe = load_avatar_pipeline(folder, torch_dtype)
        pipe.unet.to(device)
        pipe.conditioner.to(device)
        return pipe
    from diffusers import DiffusionPipeline

    # components saved as absent (a pipeline built without tokenizer/text encoder) load as None
    absent = {k: None for k, v in index.items()
              if not k.startswith("_") and isinstance(v, list) and v and v[0] is None}
    pipe = DiffusionPipeline.from_pretrained(folder, dtype=torch_dtype, local_files_only=True, **absent)
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)
