"""Data on disk: the embedded-artifact catalogue, model manifests, named corpora and package fetching.

The names below are the declared surface plugins import (``from polysteer.data import
...``); the modules inside are core's own business and may change."""

from __future__ import annotations

from polysteer.data.catalogue import MODEL_MANIFEST, Artifact, artifact, catalogue, verify_folder
from polysteer.data.datasets import load_dataset
from polysteer.data.formats import (
    FOLDER_FORMAT,
    FolderFormatError,
    check_readback,
    dtype_kwargs,
    folder_format_problem,
    make_portable,
    manifest_of,
    readback,
    transformers_version,
)
from polysteer.data.manifest import folder_problems, is_complete, write_model_manifest
from polysteer.data.wheels import download_wheel

__all__ = [
    "Artifact", "MODEL_MANIFEST", "artifact", "catalogue", "download_wheel", "folder_problems",
    "is_complete", "load_dataset", "verify_folder", "write_model_manifest",
    "FOLDER_FORMAT", "FolderFormatError", "check_readback", "dtype_kwargs", "folder_format_problem",
    "make_portable", "manifest_of", "readback", "transformers_version",
]
