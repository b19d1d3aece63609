"""llama.cpp control vectors (GGUF): export a style, import a control vector as a style.

A llama.cpp control vector is a GGUF file with ``general.architecture = "controlvector"``,
``controlvector.model_hint`` (the model family, e.g. ``llama``), ``controlvector.layer_count`` and
one float32 tensor ``direction.<il>`` of width ``n_embd`` per steered layer. llama.cpp adds
``scale x direction.<il>`` to the output of decoder layer ``il`` (0-based, the same index as
``model.layers[il]`` in transformers), for every position; it has no slot for layer 0
(``direction.0`` is refused by its loader), and ``--control-vector-layer-range a b`` keeps layers
``a..b`` inclusive.

Site mapping (polysteer site -> llama.cpp layer):

==========================  ==============  =================================================
polysteer site              llama.cpp ``il``  why
==========================  ==============  =================================================
``blocks.N.resid_post``     ``N``           the output of decoder layer N
``blocks.N.mlp_out``        ``N``           the MLP output is added to the stream unchanged,
                                            so adding v to it adds v to layer N's output
``blocks.N.resid_pre``      ``N - 1``       the input of block N is the output of block N-1
``blocks.N.attn_out``       refused         the MLP of block N reads it: not a layer output
==========================  ==============  =================================================

Scaling: polysteer's ``add`` moves ``intensity x weight x site_norm`` along the feature's unit
direction, so the exported tensor for a layer is ``sum(weight x (unit x site_norm))`` over the
components at that layer (computed in float32 in the same order as the runtime): llama.cpp at
``--control-vector-scaled style.gguf 1.0`` adds exactly what polysteer adds at intensity 1.0.
Only what llama.cpp can express exports: ``add`` components with a constant schedule over all
positions, every row, enabled. Clamp/ablate/scale (they depend on the activation), schedules
(llama.cpp has no step clock), position masks, branches, disabled components and rules (no
read-outs in llama.cpp) are refused by name, or skipped with a warning when
``skip_unsupported=True``.

Import reads each ``direction.<il>`` as a one-direction :class:`DirectionSet` at
``blocks.<il>.resid_post`` tied to the model (fingerprint), with ``site_norm`` = the vector's
norm, and writes a style whose components have weight 1.0, so that the style at intensity 1.0
adds the file's vectors (what llama.cpp does at scale 1.0). Export of an imported style gives the
file's vectors back to float32 rounding (``unit x norm``; measured max relative difference ~1e-7).
"""

from __future__ import annotations

import math
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from polysteer.errors import ConfigError, CorruptFileError, PolysteerError
from polysteer.features import DictionaryInfo, DirectionSet, resolve_dictionary
from polysteer.io import atomic_path
from polysteer.steering import Component, Style, calibrated_style, load_style

__all__ = ["ControlVector", "GGUFExportError", "GGUFExportWarning", "export_gguf", "import_gguf",
           "layer_for_site", "read_control_vector", "style_vectors", "write_control_vector"]

ARCHITECTURE = "controlvector"
_SITE = re.compile(r"^blocks\.(\d+)\.(resid_post|resid_pre|mlp_out|attn_out)$")
_DIRECTION = re.compile(r"^direction\.(\d+)$")


class GGUFExportError(PolysteerError, ValueError):
    """A style (or part of one) that a llama.cpp control vector cannot express."""


class GGUFExportWarning(UserWarning):
    """Components left out of a control vector (``skip_unsupported=True``)."""


class ControlVector:
    """A control vector in memory: ``{layer: (n_embd,) float32}`` plus its model hint and metadata."""

    def __init__(self, directions: dict[int, np.ndarray], model_hint: str,
                 metadata: dict[str, Any] | None = None):
        self.directions = {int(k): np.asarray(v, dtype=np.float32) for k, v in sorted(directions.items())}
        self.model_hint = model_hint
        self.metadata = dict(metadata or {})

    @property
    def width(self) -> int:
        return len(next(iter(self.directions.values())))


def layer_for_site(site: str) -> int:
    """The llama.cpp layer index ``il`` whose output a polysteer site's addition lands on."""
    match = _SITE.match(site)
    if not match:
        raise GGUFExportError(f"site {site!r} is not a decoder-layer site; llama.cpp control vectors "
                              "steer layer outputs (blocks.N.resid_post)")
    block, kind = int(match.group(1)), match.group(2)
    if kind == "attn_out":
        raise GGUFExportError(f"site {site!r}: the attention output feeds block {block}'s MLP, so no "
                              f"llama.cpp layer output equals adding there; build the concept at "
                              f"blocks.{block}.resid_post instead")
    layer = block - 1 if kind == "resid_pre" else block
    if layer < 1:
        raise GGUFExportError(f"site {site!r} is llama.cpp layer {layer}; llama.cpp never steers "
                              "layer 0 (or the embeddings): use a later layer")
    return layer


def _model_hint(adapter: Any) -> str:
    config = getattr(adapter.model, "config", None)
    return str(getattr(config, "model_type", None) or adapter.model_fingerprint.name)


def _n_layers(adapter: Any) -> int:
    blocks = [int(m.group(1)) for s in adapter.sites() if (m := _SITE.match(s))]
    return max(blocks) + 1 if blocks else 0


def _unsupported(comp: Component) -> str | None:
    if comp.intervention != "add":
        return (f"intervention {comp.intervention!r} depends on the activation; llama.cpp only adds "
                "a fixed vector")
    if comp.options:
        return f"options {sorted(comp.options)} have no llama.cpp equivalent"
    if comp.schedule.get("kind") != "constant" or set(comp.schedule) - {"kind"}:
        return f"schedule {comp.schedule} varies over the generation; llama.cpp has no step clock"
    if comp.positions.get("kind") != "all" or set(comp.positions) - {"kind"}:
        return f"positions {comp.positions}: llama.cpp adds to every position"
    if comp.branches is not None:
        return f"branches {list(comp.branches)}: llama.cpp has no batch branches"
    if not comp.enabled:
        return "disabled until a rule applies it; llama.cpp has no rules"
    return None


def style_vectors(style: Style | str | os.PathLike, adapter: Any, *, intensity: float = 1.0,
                  skip_unsupported: bool = False, plugins: Any = None) -> ControlVector:
    """The control vector that adds what ``steer(adapter, style, intensity)`` adds (see module docs).

    Raises :class:`GGUFExportError` naming every component (and rule) llama.cpp cannot express,
    unless ``skip_unsupported`` (then a :class:`GGUFExportWarning` lists what was left out).
    """
    if not isinstance(style, Style):
        style = load_style(style)
    if not (isinstance(intensity, int | float) and math.isfinite(intensity)):
        raise GGUFExportError(f"intensity must be a finite number, got {intensity!r}")
    # a style calibrated for this model: the vector is what its calibrated intensity adds
    style, _ = calibrated_style(style, adapter.model_fingerprint)
    problems: list[str] = [f"rule {r.name or 'on ' + r.target!r}: llama.cpp has no read-outs or rules"
                           for r in style.rules]
    sums: dict[int, torch.Tensor] = {}
    used: list[str] = []
    n_layers = _n_layers(adapter)
    for comp in style.components:
        why = _unsupported(comp)
        ref, feature, weight = comp.dictionary, comp.feature, comp.weight
        if why is None and comp.concept is not None:
            real = style.concepts[comp.concept].get(adapter.modality)
            if real is None:
                why = f"concept {comp.concept!r} has no {adapter.modality} realisation"
            else:
                ref, feature, weight = real.dictionary, real.feature, weight * real.weight
        if why is not None:
            problems.append(f"component {comp.name!r}: {why}")
            continue
        dictionary = resolve_dictionary(ref, style.base_dir, plugins)
        site = dictionary.info.site
        dictionary.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
        try:
            layer = layer_for_site(site)
        except GGUFExportError as err:
            problems.append(f"component {comp.name!r}: {err}")
            continue
        if layer >= n_layers:
            problems.append(f"component {comp.name!r}: layer {layer} is past the model's last "
                            f"layer ({n_layers - 1})")
            continue
        vector = dictionary.directions[dictionary.feature_index(feature)].detach().float().cpu() * \
            dictionary.info.site_norm  # the runtime's add vector, in the runtime's order
        added = torch.tensor(float(intensity) * weight, dtype=torch.float32) * vector
        sums[layer] = added if layer not in sums else sums[layer] + added
        used.append(comp.name)
    if problems and not skip_unsupported:
        raise GGUFExportError(f"style {style.name!r} cannot be a llama.cpp control vector as it is: "
                              + "; ".join(problems)
                              + ". Remove those parts, or pass --skip-unsupported to export the rest")
    if problems:
        warnings.warn(f"left out of the control vector: {'; '.join(problems)}", GGUFExportWarning,
                      stacklevel=2)
    if not sums:
        raise GGUFExportError(f"style {style.name!r} has no component a llama.cpp control vector "
                              "can express (an add at a constant weight on a layer output)")
    return ControlVector({k: v.numpy() for k, v in sums.items()}, _model_hint(adapter),
                         {"polysteer.style": style.name, "polysteer.components": ",".join(used),
                          "polysteer.intensity": float(intensity),
                          "polysteer.model": adapter.model_fingerprint.short()})


def write_control_vector(vector: ControlVector, path: str | os.PathLike) -> Path:
    """Write ``vector`` as a llama.cpp control-vector GGUF file, atomically."""
    import gguf

    path = Path(path)
    with atomic_path(path) as tmp:
        writer = gguf.GGUFWriter(str(tmp), ARCHITECTURE)
        writer.add_string("controlvector.model_hint", vector.model_hint)
        writer.add_uint32("controlvector.layer_count", len(vector.directions))
        for key, value in vector.metadata.items():
            if isinstance(value, float):
                writer.add_float32(key, value)
            else:
                writer.add_string(key, str(value))
        for layer, direction in vector.directions.items():
            writer.add_tensor(f"direction.{layer}", np.ascontiguousarray(direction, dtype=np.float32))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
    return path


def export_gguf(style: Style | str | os.PathLike, adapter: Any, path: str | os.PathLike, *,
                intensity: float = 1.0, skip_unsupported: bool = False, plugins: Any = None
                ) -> ControlVector:
    """Write ``style`` on ``adapter``'s model as a llama.cpp control vector at ``path``."""
    vector = style_vectors(style, adapter, intensity=intensity, skip_unsupported=skip_unsupported,
                           plugins=plugins)
    write_control_vector(vector, path)
    return vector


def _field_value(field: Any) -> Any:
    import gguf

    kind = field.types[0] if field.types else None
    if kind == gguf.GGUFValueType.STRING:
        return bytes(field.parts[-1]).decode("utf-8", errors="replace")
    if kind == gguf.GGUFValueType.ARRAY:
        return None
    return field.parts[-1].tolist()[0]


def read_control_vector(path: str | os.PathLike) -> ControlVector:
    """Read a llama.cpp control vector (polysteer's, repeng's, llama.cpp's cvector-generator's)."""
    import gguf

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such control-vector file")
    try:
        reader = gguf.GGUFReader(str(path))
    except Exception as err:  # the gguf reader raises ValueError/struct errors/IndexError on damage
        raise CorruptFileError(f"{path} is not a readable GGUF file ({type(err).__name__}: {err}); "
                               "re-export it") from None
    meta = {name: _field_value(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    arch = meta.get("general.architecture")
    if arch != ARCHITECTURE:
        raise CorruptFileError(f"{path}: general.architecture is {arch!r}, not {ARCHITECTURE!r}: "
                               "this is not a control vector (a model file?)")
    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        match = _DIRECTION.match(tensor.name)
        if not match:
            continue  # llama.cpp skips other tensors too
        layer = int(match.group(1))
        if layer == 0:
            raise CorruptFileError(f"{path}: tensor direction.0 is invalid (llama.cpp has no layer 0 "
                                   "control); remove it")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise CorruptFileError(f"{path}: {tensor.name} must be a 1-D float32 tensor (llama.cpp "
                                   f"reads only those), got {tensor.tensor_type.name} {list(tensor.shape)}")
        values = np.array(tensor.data, dtype=np.float32).reshape(-1)
        if not np.isfinite(values).all():
            raise CorruptFileError(f"{path}: {tensor.name} holds NaN or infinite values")
        directions[layer] = values
    if not directions:
        raise CorruptFileError(f"{path}: no direction.<layer> tensors; not a control vector")
    widths = {len(v) for v in directions.values()}
    if len(widths) != 1:
        raise CorruptFileError(f"{path}: direction tensors have different widths {sorted(widths)}")
    return ControlVector(directions, str(meta.get("controlvector.model_hint") or ""), meta)


def import_gguf(path: str | os.PathLike, adapter: Any, out_dir: str | os.PathLike, *,
                name: str | None = None) -> Style:
    """Import a control vector for ``adapter``'s model into ``out_dir``.

    Writes one direction set per layer (``layer-<il>/``, at ``blocks.<il>.resid_post``, tied to the
    model's fingerprint) and ``style.yaml`` whose components add them at weight 1.0, so that
    ``steer(adapter, style, 1.0)`` adds what llama.cpp adds at scale 1.0. Returns the style.
    """
    vector = read_control_vector(path)
    out_dir = Path(out_dir)
    n_layers, hint = _n_layers(adapter), _model_hint(adapter)
    if vector.model_hint and vector.model_hint != hint:
        warnings.warn(f"{path}: made for a {vector.model_hint!r} model, loading on a {hint!r} model "
                      "(llama.cpp does not check this either)", GGUFExportWarning, stacklevel=2)
    name = name or Path(path).stem
    components = []
    for layer, values in vector.directions.items():
        site = f"blocks.{layer}.resid_post"
        if layer >= n_layers:
            raise ConfigError(f"{path}: direction.{layer} is past the model's last layer "
                              f"({n_layers - 1}); is it made for another model?")
        channels = adapter.bind(site).channels
        if len(values) != channels:
            raise ConfigError(f"{path}: direction.{layer} has width {len(values)}, the model's "
                              f"{site} has {channels}; the file is for another model")
        v = torch.from_numpy(values.copy())
        norm = float(v.norm())
        if norm == 0:
            continue  # llama.cpp adds nothing for a zero direction
        info = DictionaryInfo(model=adapter.model_fingerprint, site=site, site_norm=norm,
                              method="llama.cpp-control-vector",
                              details={"source": str(path), "model_hint": vector.model_hint,
                                       "layer": layer, "site_norm_is_vector_norm": True})
        dset = DirectionSet(v[None], info, labels=[name])
        dset.save(out_dir / f"layer-{layer}")
        components.append(Component(name=f"{name}-layer-{layer}", weight=1.0,
                                    dictionary=f"layer-{layer}", feature=name))
    style = Style(name=name, components=components,
                  description=f"imported from the llama.cpp control vector {Path(path).name}",
                  base_dir=out_dir)
    style.save(out_dir / "style.yaml")
    return style
