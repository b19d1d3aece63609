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

from polysteer.data import Artifact
from polysteer.errors import CorruptFileError, PolysteerError
from polysteer.io import read_json, sha256_file

EMBEDDED = ("avatars",)
"""Names of the pipelines shipped inside the package."""


def embedded_folder(name: str) -> Path:
    """Where the shipped pipeline ``name`` lives (inside the installed package)."""
    from polysteer.plugins.image import SHIPPED

    return SHIPPED / "model" / name


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


def problems(folder: Path) -> list[str]:
    """Files listed in the folder's ``manifest.json`` that are missing or whose sha256 differs
    (empty: intact, or no manifest to check against)."""
    if not (folder / "model_index.json").is_file():
        return [f"{folder} holds no pipeline (model_index.json is missing); reinstall polysteer, or "
                "retrain it with scripts/train_avatar_diffusion.py"]
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        return []
    return [f"{folder / rel} is missing or damaged (sha256 differs from {manifest}); reinstall "
            "polysteer or retrain the model"
            for rel, digest in read_json(manifest).get("files", {}).items()
            if not (folder / rel).is_file() or sha256_file(folder / rel) != digest]


def verify(folder: Path) -> None:
    """Check every file listed in ``manifest.json`` against its sha256 (shipped models)."""
    found = problems(folder)
    if found:
        raise CorruptFileError(found[0])


def _shipped(name: str, force: bool = False, progress: bool = True) -> Path:
    """A shipped pipeline needs no install: its folder, or the error saying how to get it back."""
    return pipeline_folder(name)


def artifacts() -> list[Artifact]:
    """The shipped pipelines as catalogue entries (registered by the image plugin)."""
    return [Artifact(
        name=name, kind="model", modality="image",
        description="avatar diffusion model trained by polysteer (32 x 32, attribute-conditioned UNet, "
                    "DDIM), shipped inside the package",
        licence="Apache-2.0", size="9 MB", package="polysteer",
        locate=lambda n=name: embedded_folder(n),
        installer=lambda force, progress, n=name: _shipped(n, force, progress),
        verifier=lambda n=name: problems(embedded_folder(n)), marker="model_index.json",
    ) for name in EMBEDDED]


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
