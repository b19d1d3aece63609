"""Feature dictionaries: a set of features at one site, behind one protocol.

Two kinds share :class:`FeatureDictionary` (``encode(x) -> f``, ``decode(f) -> x``, ``d_in``,
``d_features``, labels, metadata):

* :class:`DirectionSet`: unit vectors with a typical activation scale, built from contrastive
  examples (difference of means, PCA of differences), from a measured attribute (a linear probe)
  or loaded;
* :class:`SparseAutoencoder`: TopK, JumpReLU or ReLU sparse autoencoders.

Each dictionary records the model it was made on (a :class:`ModelFingerprint`), the site, the
site's typical activation norm and how it was made; applying it to another model or site is an
error. Files are safetensors plus JSON, written atomically; nothing is unpickled.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from polysteer.errors import CorruptFileError, DictionaryMismatchError, SteeringError, did_you_mean
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io.fileio import (
    read_folder,
    read_meta,
    read_tensors,
    write_folder,
    write_json,
    write_tensors,
)
from polysteer.io.paths import home
from polysteer.io.safeload import finite
from polysteer.plugin.manager import PluginManager, current_plugin_manager

FORMAT_VERSION = 1
SAE_ACTIVATIONS = ("topk", "jumprelu", "relu")


MAX_SITE_NORM = 1e6
"""Largest typical token norm a dictionary may declare (activations of fp16 models stay far below)."""


@dataclass
class DictionaryInfo:
    """What a dictionary is tied to and how it was made.

    Attributes:
        model: fingerprint of the model it was made on (``None`` for a model-free dictionary).
        site: the site it reads and writes, e.g. ``blocks.12.resid_post``.
        site_norm: typical (median) token norm at the site; intensity 1.0 means this much.
        method: how it was made (``diff-of-means``, ``pca``, ``probe``, ``sae-topk``, ...).
        details: anything else worth keeping (data, hyperparameters, metrics).
    """

    model: ModelFingerprint | None
    site: str
    site_norm: float
    method: str = "manual"
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        data = asdict(self)
        data["model"] = self.model.to_json() if self.model else None
        return data

    @staticmethod
    def from_json(data: dict) -> DictionaryInfo:
        model = data.get("model")
        site_norm = finite(data["site_norm"], "info.site_norm", low=0.0, high=MAX_SITE_NORM,
                           error=CorruptFileError)
        return DictionaryInfo(model=ModelFingerprint.from_json(model) if model else None,
                              site=str(data["site"]), site_norm=site_norm,
                              method=str(data.get("method", "manual")),
                              details=dict(data.get("details", {})))


class FeatureDictionary(nn.Module):
    """The protocol every dictionary follows.

    ``encode(x)`` maps activations ``(..., d_in)`` to feature values ``(..., d_features)``;
    ``decode(f)`` maps back. ``directions`` are the unit write directions of the features
    (``(d_features, d_in)``) and ``scales`` the typical value of ``encode(x)[..., i]`` when
    feature ``i`` fires, so that a read-out divided by its scale is 1.0 at typical strength.
    """

    kind: str = "abstract"

    def __init__(self, info: DictionaryInfo, labels: list[str] | None, d_features: int):
        super().__init__()
        self.info = info
        labels = list(labels) if labels is not None else [f"feature {i}" for i in range(d_features)]
        if len(labels) != d_features:
            raise ValueError(f"{len(labels)} labels for {d_features} features")
        self.labels = labels
        self.source: Path | None = None  # the folder it was loaded from, if any

    # -- the protocol -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature values ``(..., d_features)`` of activations ``(..., d_in)``."""
        raise NotImplementedError

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Activations ``(..., d_in)`` written by feature values ``(..., d_features)``."""
        raise NotImplementedError

    @property
    def directions(self) -> torch.Tensor:
        """Unit write direction of each feature, ``(d_features, d_in)``."""
        raise NotImplementedError

    @property
    def scales(self) -> torch.Tensor:
        """Typical activation value of each feature when it fires, ``(d_features,)``."""
        raise NotImplementedError

    @property
    def d_in(self) -> int:
        return int(self.directions.shape[1])

    @property
    def d_features(self) -> int:
        return len(self.labels)

    @property
    def device(self) -> torch.device:
        """Where the dictionary's tensors are (CPU for one without any)."""
        tensor = next(iter([*self.parameters(), *self.buffers()]), None)
        return tensor.device if tensor is not None else torch.device("cpu")

    def _arch(self) -> dict:
        """Architecture fields saved in JSON (beyond the common ones)."""
        return {}

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items()}

    # -- features by name ---------------------------------------------------------------------
    def feature_index(self, feature: int | str) -> int:
        """Index of a feature given by index or label; a clear error if it does not exist."""
        if isinstance(feature, bool):
            raise SteeringError(f"feature {feature!r} must be an index or a label")
        if isinstance(feature, int):
            if not 0 <= feature < self.d_features:
                raise SteeringError(
                    f"feature {feature} does not exist: {self.describe()} has features "
                    f"0..{self.d_features - 1}")
            return feature
        if feature in self.labels:
            return self.labels.index(feature)
        if str(feature).isdigit():
            return self.feature_index(int(feature))
        hint = did_you_mean(feature, self.labels) or (
            f" Its labels are {self.labels[:8]}{' ...' if self.d_features > 8 else ''}")
        raise SteeringError(f"no feature labelled {feature!r} in {self.describe()}.{hint}")

    def describe(self) -> str:
        """One line: kind, size, site and model (and a note when the site norm is unknown)."""
        model = self.info.model.short() if self.info.model else "any model"
        norm = ""
        if not self.site_norm_known:
            estimated = self.info.details.get("site_norm_estimated")
            norm = (f", site norm unknown, estimated {estimated:.4g}" if estimated is not None
                    else ", site norm unknown")
        return (f"{self.kind} dictionary ({self.d_features} features, d_in={self.d_in}) "
                f"at {self.info.site} of {model}{norm}")

    # -- site norm ---------------------------------------------------------------------------------
    @property
    def site_norm_known(self) -> bool:
        """False for a dictionary made without the site's typical token norm (an SAELens folder
        imported without ``site_norm=``): its ``info.site_norm`` is a placeholder until
        :meth:`ensure_site_norm` estimates one."""
        return self.info.details.get("site_norm_known", True) is not False

    def ensure_site_norm(self, acts: torch.Tensor) -> float | None:
        """Estimate the site norm from ``acts`` (``(..., d_in)`` activations at the site) when it is
        unknown and not yet estimated; return the estimate, or None when nothing was done.

        The estimate is the median token norm after leaving out attention sinks (tokens over
        ``OUTLIER_FACTOR`` times the median of all). It is kept in memory only (``info.site_norm``
        and ``info.details["site_norm_estimated"]``): save the dictionary, or import it with
        ``site_norm=``, to keep one. Read-outs that drop sinks by the site norm need it: with the
        placeholder 1.0 every token of a real model reads as a sink, and every value as 0.
        """
        if self.site_norm_known or "site_norm_estimated" in self.info.details:
            return None
        from polysteer.features.classifier import OUTLIER_FACTOR

        norms = acts.detach().reshape(-1, acts.shape[-1]).float().norm(dim=-1).cpu()
        norms = norms[torch.isfinite(norms)]
        if not len(norms):
            return None
        typical = norms[norms <= OUTLIER_FACTOR * norms.median()]
        estimate = float(typical.median()) if len(typical) else float(norms.median())
        if not estimate > 0:
            return None
        self.info.site_norm = estimate
        self.info.details["site_norm_estimated"] = estimate
        return estimate

    # -- compatibility ------------------------------------------------------------------------
    def check_compatible(self, model: ModelFingerprint | None, site: str, d_in: int | None = None,
                         ) -> None:
        """Raise :class:`DictionaryMismatchError` unless this dictionary fits ``model`` at ``site``."""
        if site != self.info.site:
            raise DictionaryMismatchError(
                f"{self.describe()} was made for site {self.info.site!r}, not {site!r}: apply it "
                f"at {self.info.site!r} or build a dictionary at {site!r}")
        if d_in is not None and d_in != self.d_in:
            raise DictionaryMismatchError(
                f"{self.describe()} expects {self.d_in} channels but site {site!r} has {d_in}: it "
                "was made for another model")
        if self.info.model is not None and model is not None and not self.info.model.matches(model):
            same_arch = self.info.model.architecture == model.architecture
            why = "same architecture but different weights" if same_arch else "another architecture"
            raise DictionaryMismatchError(
                f"{self.describe()} was made on model {self.info.model.short()}, but this model is "
                f"{model.short()} ({why}): rebuild the dictionary on this model (same "
                "architecture and weights are required)")

    # -- files --------------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, dtype: torch.dtype | None = None) -> Path:
        """Save as a folder with ``dictionary.json`` and ``dictionary.safetensors``, atomically.

        ``dtype`` (e.g. ``torch.float16``, half the size) stores floating tensors in that type;
        :func:`load_dictionary` always returns float32. A dictionary loaded from a folder with a
        ``labels.json`` (the labels' evidence) takes that file along.
        """
        path = Path(path)
        meta = {"format": "polysteer-dictionary", "version": FORMAT_VERSION, "kind": self.kind,
                "d_in": self.d_in, "d_features": self.d_features, "labels": self.labels,
                "info": self.info.to_json(), "arch": self._arch()}
        tensors = self._tensors()
        if dtype is not None:
            tensors = {k: v.to(dtype) if v.is_floating_point() else v for k, v in tensors.items()}
        evidence = self.source / "labels.json" if self.source is not None else None
        evidence = evidence.read_bytes() if evidence is not None and evidence.is_file() else None

        def write(tmp: Path) -> None:
            write_tensors(tmp / "dictionary.safetensors", tensors)
            write_json(tmp / "dictionary.json", meta)
            if evidence is not None:
                (tmp / "labels.json").write_bytes(evidence)

        write_folder(path, write)
        return path


class DirectionSet(FeatureDictionary):
    """Features that are unit directions: ``encode`` is a projection, ``decode`` a weighted sum."""

    kind = "directions"

    def __init__(self, directions: torch.Tensor, info: DictionaryInfo,
                 labels: list[str] | None = None, scales: torch.Tensor | None = None):
        directions = torch.as_tensor(directions, dtype=torch.float32)
        if directions.ndim == 1:
            directions = directions[None]
        super().__init__(info, labels, directions.shape[0])
        norms = directions.norm(dim=1, keepdim=True)
        if (norms == 0).any() or not torch.isfinite(directions).all():
            raise ValueError("directions must be finite and non-zero")
        self.register_buffer("unit", directions / norms)
        scales = torch.ones(len(directions)) * info.site_norm if scales is None else scales
        self.register_buffer("scale", torch.as_tensor(scales, dtype=torch.float32).reshape(-1))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.unit.to(x.dtype).T

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.unit.to(f.dtype)

    @property
    def directions(self) -> torch.Tensor:
        return self.unit

    @property
    def scales(self) -> torch.Tensor:
        return self.scale


class SparseAutoencoder(FeatureDictionary):
    """A sparse autoencoder: ``f = act((x - b_dec) @ W_enc + b_enc)``, ``x' = f @ W_dec + b_dec``.

    ``activation`` is ``topk`` (keep the ``k`` largest pre-activations, ReLU'd), ``jumprelu``
    (zero below a learned per-feature ``threshold``) or ``relu``.
    """

    kind = "sae"

    def __init__(self, d_in: int, d_features: int, info: DictionaryInfo,
                 activation: str = "topk", k: int | None = None,
                 labels: list[str] | None = None):
        super().__init__(info, labels, d_features)
        if activation not in SAE_ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {SAE_ACTIVATIONS}")
        if activation == "topk" and not (isinstance(k, int) and not isinstance(k, bool)
                                         and 0 < k <= d_features):
            raise ValueError(f"a topk SAE needs 0 < k <= d_features, got k={k}")
        self.activation, self.k = activation, k
        self.W_enc = nn.Parameter(torch.empty(d_in, d_features))
        self.b_enc = nn.Parameter(torch.zeros(d_features))
        self.W_dec = nn.Parameter(torch.empty(d_features, d_in))
        self.b_dec = nn.Parameter(torch.zeros(d_in))
        self.threshold = nn.Parameter(torch.zeros(d_features), requires_grad=activation == "jumprelu")
        self.register_buffer("feature_scale", torch.ones(d_features))
        nn.init.kaiming_uniform_(self.W_dec)
        with torch.no_grad():
            self.W_dec /= self.W_dec.norm(dim=1, keepdim=True)
            self.W_enc.copy_(self.W_dec.T)

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """Encoder output before the sparsifying activation."""
        return (x - self.b_dec.to(x.dtype)) @ self.W_enc.to(x.dtype) + self.b_enc.to(x.dtype)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.pre_activation(x)
        if self.activation == "relu":
            return torch.relu(pre)
        if self.activation == "jumprelu":
            return torch.relu(pre) * (pre > self.threshold.to(pre.dtype))
        top = pre.topk(self.k, dim=-1)
        return torch.zeros_like(pre).scatter_(-1, top.indices, torch.relu(top.values))

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        return f @ self.W_dec.to(f.dtype) + self.b_dec.to(f.dtype)

    @property
    def directions(self) -> torch.Tensor:
        return self.W_dec / self.W_dec.norm(dim=1, keepdim=True).clamp_min(1e-12)

    @property
    def scales(self) -> torch.Tensor:
        return self.feature_scale

    def _arch(self) -> dict:
        return {"activation": self.activation, "k": self.k}


def load_dictionary(path: str | os.PathLike) -> FeatureDictionary:
    """Load a dictionary folder written by :meth:`FeatureDictionary.save`.

    Every file is read from one version of the folder (a concurrent save never mixes in), every
    number is checked finite (a NaN ``site_norm`` or weight is refused here, not met in a hook).
    """
    path = Path(path)
    d = read_folder(path, lambda real: _load_dictionary_files(real, path))
    d.source = path
    return d


def _load_dictionary_files(real: Path, path: Path) -> FeatureDictionary:
    meta_path = real / "dictionary.json"
    meta = read_meta(real, "dictionary.json", "polysteer-dictionary", FORMAT_VERSION,
                     "recreate it or check that it was written by polysteer", shown=path,
                     what="polysteer dictionary")
    tensors = read_tensors(real / "dictionary.safetensors")
    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CorruptFileError(f"{path / 'dictionary.safetensors'}: tensor {name!r} holds NaN "
                                   "or infinite values; recreate the dictionary")
    try:
        info = DictionaryInfo.from_json(meta["info"])
        labels, kind = list(meta["labels"]), meta["kind"]
        if not all(isinstance(label, str) for label in labels):
            raise TypeError("labels must be strings")
        if kind == "directions":
            d = DirectionSet(tensors["unit"], info, labels, tensors["scale"])
            d.unit.copy_(tensors["unit"])  # bit-exact: skip the constructor's renormalisation
        elif kind == "sae":
            arch = meta["arch"]
            d = SparseAutoencoder(int(meta["d_in"]), int(meta["d_features"]), info,
                                  arch["activation"], arch.get("k"), labels)
            d.load_state_dict(tensors)
        else:
            raise KeyError(f"kind {kind!r}")
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError, AttributeError) as err:
        if isinstance(err, CorruptFileError):
            raise CorruptFileError(f"{meta_path}: {err}") from None
        raise CorruptFileError(
            f"{path} is not a valid polysteer dictionary ({type(err).__name__}: {err}); "
            "recreate it or check that it was written by polysteer") from err
    return d


@dataclass(frozen=True)
class DictionaryFormat:
    """A dictionary file format plugins register: how to recognise, load and save a folder."""

    detect: Any  # (path: Path) -> bool
    load: Any  # (path: Path) -> FeatureDictionary
    save: Any = None  # (dictionary, path: Path) -> None


def _is_native(path: Path) -> bool:
    return (Path(path) / "dictionary.json").exists()


NATIVE_FORMAT = DictionaryFormat(detect=_is_native, load=load_dictionary,
                                 save=lambda d, path: d.save(path))
"""polysteer's own format: ``dictionary.json`` + ``dictionary.safetensors``."""


# -- finding dictionaries by name ----------------------------------------------------------------
def dictionary_search_path(base_dir: Path | None = None,
                           plugins: PluginManager | None = None) -> list[Path]:
    """Folders a dictionary name is looked up in, in order: ``base_dir``, the working folder, the
    cache (``$POLYSTEER_HOME/dictionaries``), then the ``dictionary`` folder every plugin ships."""
    folders = [base_dir] if base_dir else []
    shipped = (plugins or current_plugin_manager()).shipped_folders("dictionary")
    return [*folders, Path.cwd(), home() / "dictionaries", *shipped]


@lru_cache(maxsize=32)
def _load_cached(version: str, mtime_ns: int, manager: PluginManager, path: str) -> FeatureDictionary:
    """Keyed by the resolved folder (a replaced folder is a new version, so it is read again);
    loaded by its own name, so its ``source`` stays the name the user gave."""
    for entry in manager.dictionary_formats:
        fmt = entry.value
        if fmt.detect(Path(path)):
            return manager.dictionary_formats.get(entry.name).load(Path(path))
    return load_dictionary(path)


def resolve_dictionary(ref: Any, base_dir: Path | None = None,
                       plugins: PluginManager | None = None) -> FeatureDictionary:
    """A loaded dictionary from a :class:`FeatureDictionary`, a folder path, or a name.

    Names are looked up in :func:`dictionary_search_path`; the folder is read by the first
    registered dictionary format that recognises it (loads are cached while the folder is
    unchanged).
    """
    if isinstance(ref, FeatureDictionary):
        return ref
    if not isinstance(ref, str | Path):
        raise SteeringError(f"dictionary must be a path or a name, got {type(ref).__name__}")
    for folder in dictionary_search_path(base_dir, plugins):
        candidate = folder / ref
        if candidate.is_dir():
            stat = candidate.stat()
            return _load_cached(str(candidate.resolve()), stat.st_mtime_ns,
                                plugins or current_plugin_manager(), str(candidate.absolute()))
    searched = ", ".join(str(f) for f in dictionary_search_path(base_dir, plugins))
    raise FileNotFoundError(f"dictionary {str(ref)!r} not found; looked in: {searched}. Build it "
                            "(e.g. polysteer concept build) or give a folder path")
