"""The web playground that ``polysteer serve`` shows at ``/``: read, search and steer with sliders.

The page itself is static (``polysteer/serve/static``: HTML, JavaScript and CSS shipped in the
package, nothing fetched from elsewhere). It talks to the server's own endpoints: the OpenAI-shaped
chat completions (streamed, with the ``steering`` field) for the text, ``/v1/inspect`` and
``/v1/features/search`` for the read-outs, ``/v1/styles`` to save and load styles, and these
endpoints for the rest (all JSON, errors in OpenAI's shape):

* ``GET /v1/playground/info``: the served model, the image and voice models (loaded or not), the
  dictionaries that fit the text model, the token limits;
* ``GET /v1/playground/controls?modality=text|image|voice``: one slider per style that applies to
  that modality's model, each with its ``range`` and whether it is ``calibrated``
  (:func:`control_range` is the one place ranges come from);
* ``POST /v1/playground/feature`` ``{"dictionary", "feature", "text"}``: a feature's card: its label,
  the label evidence recorded for it (``labels.json``: top contexts, promoted tokens, density,
  effect), where it fires in ``text``, and its nearest features;
* ``POST /v1/playground/compose`` ``{"sliders"}``: the sliders as one style (data and YAML);
* ``POST /v1/playground/draw`` ``{"sliders", "seed", "steps"}``: the image model's picture without
  and with the sliders (PNG data URLs);
* ``POST /v1/playground/speak`` ``{"text", "sliders", "seed"}``: the voice without and with the
  sliders (WAV data URLs and spectrograms);
* ``POST /v1/playground/create`` ``{"prompt", "sliders", "seed"}``: ``polysteer create`` (story,
  portrait and narration, each beside its unsteered twin).

A slider is ``{"kind": "style", "name", "value"}`` or ``{"kind": "feature", "dictionary",
"feature", "value"}``; ``value`` is the intensity (a style's) or the weight (a feature's).

The image and voice models are loaded on first use (by name, default ``avatars`` and ``joe``; or
adapters handed in) and run on one media thread: a second drawing, speech or creation while one
runs is a 429 ``media_busy``. A creation also uses the text model, so it runs on the engine's
worker (text requests wait for it) while holding the media thread.
"""

# no "from __future__ import annotations": FastAPI reads the handlers' annotations (Request)

import asyncio
import base64
import concurrent.futures
import contextvars
import math
import tempfile
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import quote

import torch
import yaml

from polysteer.errors import PolysteerError
from polysteer.features.dictionary import dictionary_search_path
from polysteer.features.labels import LABELS_FILE, load_labels
from polysteer.features.search import similar_features
from polysteer.models.loading import load_model
from polysteer.serve.errors import APIError, bad_request
from polysteer.serve.readout import activations, dictionary_for
from polysteer.serve.styles import NAME, StyleStore
from polysteer.steering.runtime import SteeringWarning, steer
from polysteer.steering.style import Style
from polysteer.workflows.create import CreateConfig, create, seeded_generate

MODALITIES = ("text", "image", "voice")
MIME = {".png": "image/png", ".wav": "audio/wav", ".txt": "text/plain"}


def static_dir() -> Path:
    """The folder of the page's files (``index.html``, ``playground.js``, ``playground.css``)."""
    return Path(str(resources.files("polysteer.serve") / "static"))


@dataclass
class PlaygroundConfig:
    """How the playground gets its image and voice models and how hard it works them.

    ``image_model`` / ``voice_model``: a model name ``polysteer.load_model`` knows, a config node or
    a loaded adapter; loaded on first use. ``create_config``: the settings of the cross-modal tab
    (``polysteer create``'s, default :class:`CreateConfig`). ``image_options`` / ``voice_options``:
    keyword arguments of the drawing and speaking ``generate`` calls (``steps`` of a draw request
    replaces ``num_inference_steps``, up to ``max_steps``).
    """

    image_model: Any = "avatars"
    voice_model: Any = "joe"
    create_config: CreateConfig | None = None
    image_options: dict[str, Any] = field(default_factory=lambda: {"num_inference_steps": 25})
    voice_options: dict[str, Any] = field(default_factory=dict)
    max_steps: int = 100
    max_speech_chars: int = 600


def control_range(style: Style | None = None, modality: str = "text", *, feature: Any = None,
                  model: Any = None) -> dict[str, Any]:
    """The slider range of a style (or of a feature: ``feature=(dictionary, index)``) on a modality.

    ``{"range": [low, high], "calibrated": bool, "calibration": figures | None}``: the intensities
    the slider spans. A style calibrated for ``model`` (``polysteer calibrate``) spans ``[0, 1]`` in
    calibrated units, 1.0 being the strongest setting that stayed coherent on that model, and
    carries its figures (where the concept starts rising, the raw intensity 1.0 stands for).
    Uncalibrated styles and features span ``[0, 1]`` too, 1.0 being a style's recommended strength
    or a feature's typical scale.
    """
    calibration = None
    if style is not None and model is not None:
        from polysteer.workflows import calibration_for

        calibration = calibration_for(style, model)
    return {"range": [0.0, 1.0], "calibrated": calibration is not None, "calibration": calibration}


@dataclass
class AppParts:
    """What the playground needs from the app it is added to (see :func:`add_playground`)."""

    model: Any
    name: str
    engine: Any
    store: StyleStore
    limits: Any
    authorise: Callable[[Any], None]
    body: Callable[[Any], Any]
    on_worker: Callable[[Callable[[], Any]], Any]
    prompt_ids: Callable[[Any, str], list[int]]


class _Media:
    """The image and voice models, loaded on first use, and the one thread that runs them."""

    def __init__(self, config: PlaygroundConfig):
        self.config = config
        self.models: dict[str, Any] = {}
        self.busy = 0
        self.lock = threading.Lock()
        self.context = contextvars.copy_context()  # the plugin manager in use where the app is made
        self.pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="polysteer-media")

    def wanted(self, modality: str) -> Any:
        return getattr(self.config, f"{modality}_model")

    def name(self, modality: str) -> str:
        model = self.models.get(modality, self.wanted(modality))
        return str(getattr(model, "name", model))

    def adapter(self, modality: str) -> Any:
        """The loaded model for ``modality`` (loads it; call on the media thread)."""
        if modality not in self.models:
            wanted = self.wanted(modality)
            if isinstance(wanted, str | dict):
                try:
                    adapter = load_model(wanted)
                except (PolysteerError, OSError, ImportError, ValueError) as err:
                    raise APIError(503, f"the {modality} model {wanted!r} cannot be loaded: "
                                        f"{str(err).splitlines()[0]}. Install it (see 'polysteer "
                                        f"models') or pick another with --{modality}-model",
                                   code="model_unavailable") from None
            else:
                adapter = wanted
            if getattr(adapter, "modality", None) != modality:
                raise APIError(503, f"the {modality} model {getattr(adapter, 'name', wanted)!r} is "
                                    f"a {getattr(adapter, 'modality', '?')} model; pick a {modality} "
                                    f"model with --{modality}-model", code="model_unavailable")
            self.models[modality] = adapter
        return self.models[modality]

    async def run(self, fn: Callable[[], Any], *, exclusive: bool) -> Any:
        """``fn()`` on the media thread; ``exclusive`` work (a generation) is refused with a 429
        while another waits or runs, so a click never queues behind minutes of work."""
        if exclusive:
            with self.lock:
                if self.busy:
                    raise APIError(429, "the image and voice worker is busy with another drawing, "
                                        "speech or creation; try again when it has finished",
                                   code="media_busy")
                self.busy += 1
        try:
            future = self.pool.submit(self.context.copy().run, fn)
            return await asyncio.wrap_future(future)
        except APIError:
            raise
        except PolysteerError as err:
            raise APIError(400, str(err), code="invalid_value") from None
        finally:
            if exclusive:
                with self.lock:
                    self.busy -= 1

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


# -- helpers ---------------------------------------------------------------------------------------
def applies(adapter: Any, style: Style) -> tuple[bool, list[str]]:
    """Whether any component of ``style`` acts on ``adapter``, and what does not (``"name: why"``)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SteeringWarning)
            with steer(adapter, [(style, [0.0])]) as run:
                skipped = [f"{name}: {why}" for name, why in run.skipped]
    except Exception as err:  # a dictionary made for another model, a missing file, ...
        return False, [str(err).splitlines()[0]]
    return len(skipped) < max(1, len(style.components)), skipped


def _sliders(value: Any, max_intensity: float) -> list[dict[str, Any]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise APIError(422, "sliders must be a list of {kind, name | dictionary+feature, value}",
                       code="invalid_type", param="sliders")
    out = []
    for i, item in enumerate(value):
        where = f"sliders[{i}]"
        if not isinstance(item, dict) or item.get("kind") not in ("style", "feature"):
            raise APIError(422, f"{where} must be an object with kind 'style' or 'feature'",
                           code="invalid_type", param=where)
        v = item.get("value")
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise APIError(422, f"{where}.value must be a number", code="invalid_type",
                           param=f"{where}.value")
        if abs(v) > max_intensity:
            raise bad_request(f"{where}.value {v:g} is over the server's maximum intensity "
                              f"{max_intensity:g}", f"{where}.value", "intensity_too_high")
        if item["kind"] == "style":
            if not isinstance(item.get("name"), str) or not NAME.match(item["name"]):
                raise bad_request(f"{where}.name must be a style name", f"{where}.name", "invalid_name")
        else:
            if not isinstance(item.get("dictionary"), str) or not NAME.match(item["dictionary"]):
                raise bad_request(f"{where}.dictionary must be a dictionary name",
                                  f"{where}.dictionary", "invalid_name")
            feature = item.get("feature")
            if isinstance(feature, bool) or not isinstance(feature, int | str):
                raise APIError(422, f"{where}.feature must be an index or a label",
                               code="invalid_type", param=f"{where}.feature")
        if v:
            out.append(item)
    return out


def _slider_name(item: dict[str, Any]) -> str:
    return item["name"] if item["kind"] == "style" else f"{item['dictionary']}#{item['feature']}"


def compose(sliders: list[dict[str, Any]], store: StyleStore, name: str = "playground") -> Style | None:
    """The sliders as one style: each style scaled by its value, the features as ``add``
    components weighted by theirs (None when every slider is at 0). The description lists the
    sliders (``playground: cheerful=0.7, smollm2-res-sae#12=0.4``) so the page can set them again."""
    if not sliders:
        return None
    total: Style | None = None
    for item in sliders:
        if item["kind"] == "style":
            part = store.load(item["name"], "sliders").scaled(float(item["value"]))
            part = Style(name=item["name"], components=part.components, rules=part.rules,
                         concepts=part.concepts, base_dir=part.base_dir)
        else:
            part = Style.from_dict({"name": _slider_name(item), "components": [{
                "name": f"{item['dictionary']}-{item['feature']}", "dictionary": item["dictionary"],
                "feature": item["feature"], "weight": float(item["value"])}]})
        total = part if total is None else total + part
    assert total is not None
    description = "playground: " + ", ".join(f"{_slider_name(s)}={float(s['value']):g}" for s in sliders)
    return Style(name=name, components=total.components, rules=total.rules, concepts=total.concepts,
                 description=description, base_dir=total.base_dir)


def _data_url(path: Path) -> str:
    mime = MIME.get(path.suffix.lower(), "application/octet-stream")
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _saved(adapter: Any, record: Any, folder: Path, stem: str) -> str:
    paths = adapter.save_outputs(record, folder / stem)
    if not paths:
        raise PolysteerError(f"{adapter.name} wrote no file for its output")
    return _data_url(Path(paths[0]))


def spectrogram(wave: torch.Tensor, rate: int, *, bins: int = 96, frames: int = 320) -> dict[str, Any]:
    """A log-magnitude spectrogram of a mono ``wave`` as bytes 0..255 (80 dB below the peak to the
    peak), at most ``bins`` x ``frames`` (max-pooled), low frequencies first:
    ``{"width", "height", "data" (base64, row-major, height rows), "seconds", "khz"}``."""
    wave = wave.detach().float().flatten().cpu()
    n_fft = 1024 if rate >= 16000 else 512
    if wave.numel() < n_fft:
        wave = torch.nn.functional.pad(wave, (0, n_fft - wave.numel()))
    spec = torch.stft(wave, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                      return_complex=True).abs().clamp_min(1e-6).log10() * 20
    spec = torch.nn.functional.adaptive_max_pool2d(spec[None], (min(bins, spec.shape[0]),
                                                                min(frames, spec.shape[1])))[0]
    peak = float(spec.max())
    scaled = ((spec - (peak - 80)) / 80).clamp(0, 1) * 255
    data = scaled.round().to(torch.uint8).contiguous().numpy().tobytes()
    return {"width": int(spec.shape[1]), "height": int(spec.shape[0]),
            "data": base64.b64encode(data).decode(), "seconds": wave.numel() / rate,
            "khz": rate / 2000}


def feature_evidence(dictionary: str, index: int) -> dict[str, Any] | None:
    """The label evidence recorded for a feature (``labels.json`` beside its dictionary, as
    ``polysteer labels`` writes it), or None where none was recorded."""
    for folder in dictionary_search_path():
        if (folder / dictionary / LABELS_FILE).is_file():
            try:
                reports = load_labels(folder / dictionary)
            except PolysteerError:
                return None
            if not 0 <= index < len(reports):
                return None
            r = reports[index]
            contexts = r.details.get("contexts", [])
            return {"label": r.label, "source": r.source, "density": r.density,
                    "positions": r.positions, "effect_score": r.effect_score, "flagged": r.flagged,
                    "contexts": [{"value": t.value, "text": c}
                                 for t, c in zip(r.top, contexts, strict=False)],
                    "promoted": list(r.details.get("promoted", []))}
        if (folder / dictionary).is_dir():
            return None
    return None


def _int(req: Any, key: str, default: int, low: int, high: int) -> int:
    value = req.get(key, int, default)
    if not low <= value <= high:
        raise bad_request(f"{key} must be {low}..{high}, got {value}", key)
    return value


# -- the endpoints ---------------------------------------------------------------------------------
def add_playground(app: Any, parts: AppParts, config: PlaygroundConfig | None = None) -> None:
    """Serve the page at ``/`` (files under ``/static``) and add its endpoints to ``app``."""
    from fastapi import Request
    from fastapi.responses import FileResponse
    from fastapi.staticfiles import StaticFiles

    config = config or PlaygroundConfig()
    media = _Media(config)
    app.state.closers.append(media.close)
    app.state.playground = media
    folder = static_dir()
    app.mount("/static", StaticFiles(directory=folder), name="playground-static")
    model, store, limits = parts.model, parts.store, parts.limits
    cache: dict[str, Any] = {}

    @app.get("/", include_in_schema=False)
    async def page() -> Any:
        return FileResponse(folder / "index.html", media_type="text/html")

    def text_dictionaries() -> list[dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for root in dictionary_search_path():
            if not root.is_dir():
                continue
            for sub in sorted(root.iterdir()):
                if sub.name in found or not NAME.match(sub.name) or \
                        not (sub / "dictionary.json").is_file() and not (sub / "cfg.json").is_file():
                    continue
                try:
                    d = dictionary_for(model, sub.name)
                except APIError:
                    continue
                found[sub.name] = {"name": sub.name, "kind": d.kind, "features": d.d_features,
                                   "site": d.info.site}
        # sparse autoencoders first (many features to read), then direction sets, by name
        return sorted(found.values(), key=lambda d: (d["kind"] != "sae", d["name"]))

    @app.get("/v1/playground/info")
    async def info(request: Request) -> dict[str, Any]:
        parts.authorise(request)
        if "dictionaries" not in cache:
            cache["dictionaries"] = await parts.on_worker(text_dictionaries)
        return {"model": parts.name, "modalities": {
                    "text": {"model": parts.name, "loaded": True},
                    **{m: {"model": media.name(m), "loaded": m in media.models}
                       for m in ("image", "voice")}},
                "dictionaries": cache["dictionaries"], "max_tokens": limits.max_tokens,
                "default_tokens": min(limits.default_tokens, 48),
                "max_intensity": limits.max_intensity}

    def controls_on(adapter: Any, modality: str) -> list[dict[str, Any]]:
        out = []
        for entry in store.names():
            try:
                style = store.load(entry["name"])
            except (APIError, PolysteerError, OSError):
                continue
            ok, skipped = applies(adapter, style)
            if ok and not (skipped and modality == "text"):  # a chat request's steering is strict
                out.append({"id": f"style:{entry['name']}", "kind": "style", "name": entry["name"],
                            "description": entry["description"], "source": entry["source"],
                            "not_applied": skipped,
                            "audit": f"/v1/playground/audit?modality={modality}"
                                     f"&style={quote(entry['name'])}",
                            **control_range(style, modality, model=adapter)})
        return out

    @app.get("/v1/playground/controls")
    async def controls(request: Request, modality: str = "text") -> dict[str, Any]:
        parts.authorise(request)
        if modality not in MODALITIES:
            raise bad_request(f"modality must be one of {', '.join(MODALITIES)}", "modality")
        if modality == "text":
            found = await parts.on_worker(lambda: controls_on(model, "text"))
            name = parts.name
        else:
            def listing() -> tuple[str, list[dict[str, Any]]]:
                adapter = media.adapter(modality)
                return adapter.name, controls_on(adapter, modality)

            name, found = await media.run(listing, exclusive=False)
        return {"object": "list", "modality": modality, "model": name, "data": found}

    @app.get("/v1/playground/audit", include_in_schema=False)
    async def audit_page(request: Request, style: str, modality: str = "text",
                         intensity: float = 1.0) -> Any:
        """The side-effect audit of a stored style on this modality's model, as an HTML page."""
        from fastapi.responses import HTMLResponse

        from polysteer.workflows import audit

        parts.authorise(request)
        if modality not in MODALITIES:
            raise bad_request(f"modality must be one of {', '.join(MODALITIES)}", "modality")
        if not (math.isfinite(intensity) and 0.0 <= intensity <= limits.max_intensity):
            raise bad_request(f"intensity must be 0..{limits.max_intensity}", "intensity")
        chosen = store.load(style)  # 404 naming the style when there is none

        def run() -> str:
            adapter = model if modality == "text" else media.adapter(modality)
            return audit(adapter, chosen, intensity, top=10,
                         generate={"max_new_tokens": 12} if modality == "text" else None).to_html()

        page = (await parts.on_worker(run) if modality == "text"
                else await media.run(run, exclusive=True))
        return HTMLResponse(page)

    @app.post("/v1/playground/feature")
    async def feature(request: Request) -> dict[str, Any]:
        req = await parts.body(request)
        name = req.get("dictionary", str, None)
        if not name or not NAME.match(name):
            raise bad_request("dictionary must be a dictionary name", "dictionary", "invalid_name")
        wanted = req.get("feature", (int, str), None)
        if wanted is None:
            raise APIError(422, "feature must be an index or a label", code="invalid_type",
                           param="feature")
        text = req.get("text", str, "")
        if text:
            parts.prompt_ids(text, "text")

        def card() -> dict[str, Any]:
            d = dictionary_for(model, name)
            if isinstance(wanted, int):
                if not 0 <= wanted < d.d_features:
                    raise APIError(404, f"{name} has features 0..{d.d_features - 1}, not {wanted}",
                                   code="feature_not_found", param="feature")
                index = wanted
            elif wanted in d.labels:
                index = d.labels.index(wanted)
            else:
                raise APIError(404, f"{name} has no feature labelled {wanted!r}",
                               code="feature_not_found", param="feature")
            in_text = []
            if text:
                acts, ids = activations(model, d, text)
                with torch.no_grad():
                    values = d.to(acts.device).encode(acts)[:, index] / float(
                        d.scales[index].clamp_min(1e-8))
                tokens = model.tokenizer.convert_ids_to_tokens(ids)
                in_text = [{"text": model.tokenizer.convert_tokens_to_string([t]),
                            "value": round(float(v), 4)} for t, v in zip(tokens, values.tolist(),
                                                                         strict=True)]
            similar = [{"index": m.index, "label": m.label, "score": round(float(m.score), 4)}
                       for m in similar_features(d, index, 6) if m.index != index][:5]
            return {"dictionary": name, "index": index, "label": d.labels[index], "kind": d.kind,
                    "site": d.info.site, "evidence": feature_evidence(name, index),
                    "in_text": in_text, "similar": similar,
                    **control_range(None, "text", feature=(name, index))}

        return await parts.on_worker(card)

    @app.post("/v1/playground/compose")
    async def compose_endpoint(request: Request) -> dict[str, Any]:
        req = await parts.body(request)
        sliders = _sliders(req.data.get("sliders"), limits.max_intensity)
        style = compose(sliders, store, req.get("name", str, "playground"))
        if style is None:
            raise bad_request("every slider is at 0: move one to make a style", "sliders")
        data = style.to_dict()
        return {"style": data, "yaml": yaml.safe_dump(data, sort_keys=False)}

    def pair(adapter: Any, inputs: Any, style: Style | None, seed: int, options: dict[str, Any]
             ) -> dict[str, Any]:
        with tempfile.TemporaryDirectory(prefix="polysteer-play-") as tmp:
            plain, _ = seeded_generate(adapter, inputs, seed=seed, options=options)
            steered, skipped = (plain, []) if style is None else seeded_generate(
                adapter, inputs, seed=seed, style=style, intensity=1.0, options=options)
            out: dict[str, Any] = {"model": adapter.name, "not_applied": skipped, "records": {}}
            for key, record in (("unsteered", plain), ("steered", steered)):
                out[key] = _saved(adapter, record, Path(tmp), key)
                out["records"][key] = record
            return out

    @app.post("/v1/playground/draw")
    async def draw(request: Request) -> dict[str, Any]:
        req = await parts.body(request)
        sliders = _sliders(req.data.get("sliders"), limits.max_intensity)
        seed = _int(req, "seed", 0, 0, 2**31 - 1)
        options = dict(config.image_options)
        steps = req.get("steps", int, None)
        if steps is not None:
            if not 1 <= steps <= config.max_steps:
                raise bad_request(f"steps must be 1..{config.max_steps}", "steps")
            options["num_inference_steps"] = steps
        style = compose(sliders, store)
        prompt = req.get("prompt", str, "")

        def run() -> dict[str, Any]:
            adapter = media.adapter("image")
            out = pair(adapter, adapter.prepare_inputs(prompt), style, seed, options)
            records = out.pop("records")
            out["described"] = {k: str(adapter.describe_outputs(r)[0]) for k, r in records.items()}
            return out

        return await media.run(run, exclusive=True)

    @app.post("/v1/playground/speak")
    async def speak(request: Request) -> dict[str, Any]:
        req = await parts.body(request)
        sliders = _sliders(req.data.get("sliders"), limits.max_intensity)
        text = req.get("text", str, "")
        if not text.strip():
            raise APIError(422, "text must be a non-empty string: what the voice says",
                           code="invalid_type", param="text")
        if len(text) > config.max_speech_chars:
            raise bad_request(f"text is {len(text)} characters; at most {config.max_speech_chars}",
                              "text")
        seed = _int(req, "seed", 0, 0, 2**31 - 1)
        style = compose(sliders, store)

        def run() -> dict[str, Any]:
            adapter = media.adapter("voice")
            out = pair(adapter, adapter.prepare_inputs([text.strip()]), style, seed,
                       dict(config.voice_options))
            records = out.pop("records")
            for key, record in records.items():
                out[key] = {"audio": out[key], "seconds": float(record.outputs.shape[-1] /
                                                                 (record.sample_rate or 1)),
                            "spectrogram": spectrogram(record.outputs[0], record.sample_rate or 16000)}
            return out

        return await media.run(run, exclusive=True)

    @app.post("/v1/playground/create")
    async def create_endpoint(request: Request) -> dict[str, Any]:
        req = await parts.body(request)
        sliders = _sliders(req.data.get("sliders"), limits.max_intensity)
        prompt = req.get("prompt", str, "")
        if not prompt.strip():
            raise APIError(422, "prompt must say what the story is about", code="invalid_type",
                           param="prompt")
        parts.prompt_ids(prompt, "prompt")
        seed = _int(req, "seed", 0, 0, 2**31 - 1)
        style = compose(sliders, store)
        if style is None:
            raise bad_request("every slider is at 0: move one to create with a style", "sliders")

        def run() -> dict[str, Any]:
            image, voice = media.adapter("image"), media.adapter("voice")

            def make() -> dict[str, Any]:
                with tempfile.TemporaryDirectory(prefix="polysteer-create-") as tmp:
                    made = create(prompt, style, 1.0, out=tmp, seed=seed, config=config.create_config,
                                  text_model=model, image_model=image, voice_model=voice,
                                  progress=False)
                    result: dict[str, Any] = {"story": made.story,
                                              "story_unsteered": made.story_unsteered,
                                              "style": style.description, "parts": {}}
                    for role, part in made.parts.items():
                        entry: dict[str, Any] = {"model": part.model, "modality": part.modality,
                                                 "measures": part.measures,
                                                 "not_applied": part.not_applied}
                        for key in ("unsteered", "steered"):
                            path = made.folder / part.files[key]
                            entry[key] = (path.read_text().strip() if path.suffix == ".txt"
                                          else _data_url(path))
                        result["parts"][role] = entry
                    return result

            return parts.engine.call(make).result()  # the text model is the engine's: run there

        return await media.run(run, exclusive=True)
