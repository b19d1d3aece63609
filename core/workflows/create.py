"""``polysteer create``: one style applied to a story, a portrait of its narrator and its narration.

The workflow is written once for any three models (by default SmolLM2, the avatar model and the
Piper voice ``joe``), through the adapter protocol only (``prepare_inputs``, ``generate``,
``save_outputs``, ``describe_outputs``) and the registered measures; what is modality-specific
(how a description becomes an image condition, how text becomes speech, how outputs are written)
lives in the plugins.

1. **story**: the text model answers the prompt (in :attr:`CreateConfig.story_template`), kept
   to its complete sentences;
2. **portrait**: the image model draws the narrator from a description (the prompt and the
   story; the avatar model reads hair colour, glasses and the setting from it and leaves the
   expression to the style, see ``docs/create.md``);
3. **narration**: the voice says the story sentence by sentence (any length), the rows joined
   with a short pause.

Each part is generated twice with the same seed and the same inputs: under the style at the given
intensity and without it (its *unsteered twin*), so what differs is the style's doing in that
modality alone (both narrations read the steered story). Each part is measured with the
measures configured for its modality (steered against its twin). The folder gets ``story.txt``,
``portrait.png``, ``narration.wav`` (and ``*.unsteered.*`` twins), spectrograms, ``creation.json``
and ``report.html``.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import inspect
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from polysteer.errors import ConfigError, PolysteerError
from polysteer.io.fileio import atomic_path, write_json
from polysteer.io.plots import pyplot, save_png
from polysteer.models.loading import load_model
from polysteer.plugin.manager import PluginManager, current_plugin_manager
from polysteer.steering.generation import Generation
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style, load_style

DEFAULT_STYLE = "cheerful"
"""The style ``create`` and the demo use when none is given (the shipped cross-modal concept ``cheerful``)."""

ROLES = {"story": "text", "portrait": "image", "narration": "voice"}
"""Each part of a creation and the modality of the model that makes it."""


@dataclass
class CreateConfig:
    """Everything ``create`` can be told besides the prompt, style, intensity and seed.

    Load overrides from YAML with :meth:`from_file` (the same keys); the CLI's ``--text-model``,
    ``--image-model``, ``--voice-model`` set the three models.
    """

    text_model: Any = "smollm2"
    """A model name ``polysteer.load_model`` knows, a config node, or a loaded adapter."""
    image_model: Any = "avatars"
    voice_model: Any = "joe"
    story_template: str = ("Write a very short story (four or five sentences), told in the first "
                           "person by its narrator, about this: {prompt}")
    """How the prompt is put to the text model (``{prompt}`` is replaced)."""
    text_options: dict[str, Any] = field(default_factory=lambda: {
        "max_new_tokens": 96, "do_sample": True, "temperature": 0.7, "top_p": 0.9,
        "repetition_penalty": 1.1})
    """Keyword arguments of the text model's ``generate`` (seeded sampling by default)."""
    image_options: dict[str, Any] = field(default_factory=lambda: {"num_inference_steps": 25})
    voice_options: dict[str, Any] = field(default_factory=dict)
    sentences_per_call: int = 4
    """Sentences the voice says per ``generate`` call (one progress step each)."""
    pause: float = 0.3
    """Seconds of silence between narrated sentences."""
    measures: dict[str, list[str]] = field(default_factory=lambda: {
        "text": ["text_positive", "text_perplexity", "changed_fraction"],
        "image": ["avatar_mouth_smile", "avatar_mouth_sad", "image_brightness", "image_distance"],
        "voice": ["voice_pitch_median", "voice_pitch_range", "voice_centroid",
                  "voice_speaking_rate", "voice_wer"],
    })
    """Registered measure names per modality, each called as ``measure(steered, unsteered)``."""

    @classmethod
    def from_file(cls, path: str | Path, **overrides: Any) -> CreateConfig:
        """A config from a YAML file of these keys, then ``overrides`` (``None`` values ignored)."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of create settings, got "
                              f"{type(data).__name__}")
        return cls.from_dict({**data, **{k: v for k, v in overrides.items() if v is not None}},
                             source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "create config") -> CreateConfig:
        """A config from a mapping; an unknown key is a :class:`ConfigError` naming it."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                from polysteer.errors import did_you_mean

                raise ConfigError(f"{source}: {key}: unknown create setting.{did_you_mean(key, names)} "
                                  f"Settings are {', '.join(names)}")
        return cls(**dict(data))


@dataclass
class CreatedPart:
    """One modality's part of a creation: its model, files and measures.

    Attributes:
        role: ``story``, ``portrait`` or ``narration``.
        model: the model's name; ``modality`` its modality.
        inputs: what the model was given, as text (the prompt, the condition, the sentences).
        files: ``{"steered": path, "unsteered": path, ...}`` relative to the folder.
        measures: ``{name: {"unsteered": v, "steered": v}}`` (``None`` where undefined); a measure
            that could not run has ``{"error": message}``.
        not_applied: components of the style that do not apply to this model, and why.
        described: ``{"steered": line, "unsteered": line}`` from ``describe_outputs``.
        seconds: wall time of this part (both generations).
    """

    role: str
    model: str
    modality: str
    inputs: str
    files: dict[str, str] = field(default_factory=dict)
    measures: dict[str, dict[str, Any]] = field(default_factory=dict)
    not_applied: list[str] = field(default_factory=list)
    described: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class Creation:
    """What :func:`create` made: the folder, the story and each part (``parts[role]``)."""

    folder: Path
    prompt: str
    style: str
    intensity: float
    seed: int
    story: str
    story_unsteered: str
    parts: dict[str, CreatedPart]
    seconds: float

    @property
    def report(self) -> Path:
        """The HTML report."""
        return self.folder / "report.html"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (as written to ``creation.json``; no timings, so reruns compare equal)."""
        return {"prompt": self.prompt, "style": self.style, "intensity": self.intensity,
                "seed": self.seed, "story": self.story, "story_unsteered": self.story_unsteered,
                "parts": {role: {k: v for k, v in dataclasses.asdict(p).items() if k != "seconds"}
                          for role, p in self.parts.items()}}


# -- helpers ---------------------------------------------------------------------------------------
def seeded_generate(adapter: Any, inputs: Any, *, seed: int, style: Style | None = None,
                    intensity: float = 1.0, options: Mapping[str, Any] | None = None
                    ) -> tuple[Generation, list[str]]:
    """``adapter.generate`` with ``seed`` (torch's global generator, and the adapter's own ``seed``
    argument where it takes one), under ``style`` when given; returns the record and the style's
    components that did not apply to this model (``"name: reason"``)."""
    options = dict(options or {})
    if "seed" in inspect.signature(adapter.run_generation).parameters:
        options.setdefault("seed", int(seed))
    torch.manual_seed(int(seed))
    if style is None:
        return adapter.generate(inputs, **options), []
    import warnings

    with warnings.catch_warnings():  # the not-applied list is reported instead of warned
        warnings.simplefilter("ignore")
        with steer(adapter, style, intensity) as run:
            record = adapter.generate(inputs, **options)
    return record, [f"{name}: {why}" for name, why in run.not_applied]


def complete_sentences(text: str) -> str:
    """``text`` cut after its last sentence end (``.``, ``!``, ``?``, optionally followed by a closing
    quote or bracket); the whole text when it has none."""
    text = text.strip()
    ends = [m.end() for m in re.finditer(r"[.!?][\"')\]\u201d\u2019]*(?=\s|$)", text)]
    return text[:ends[-1]].strip() if ends else text


def sentences(text: str) -> list[str]:
    """The sentences of ``text`` to say one by one: split after ``.!?`` and at line breaks,
    markdown marks (``#*_``) dropped, empty pieces left out."""
    clean = re.sub(r"[#*_`]+", " ", text)
    parts = re.split(r"(?<=[.!?])[\"')\]\u201d\u2019]*\s+|\n+", clean)
    return [" ".join(p.split()) for p in parts if p and re.search(r"\w", p)]


def _measure(fn: Any, steered: Generation, unsteered: Generation) -> dict[str, Any]:
    def finite(v: Any) -> float | None:
        v = float(v)
        return v if math.isfinite(v) else None

    try:
        return {"unsteered": finite(fn(unsteered, unsteered)), "steered": finite(fn(steered, unsteered))}
    except Exception as err:  # a measure that cannot judge this model is reported, not fatal
        return {"error": f"{type(err).__name__}: {err}".splitlines()[0][:300]}


def _measures(names: list[str], pairs: list[tuple[Generation, Generation]],
              plugins: PluginManager) -> dict[str, dict[str, Any]]:
    """Each measure over ``(steered, unsteered)`` pairs, the mean weighted by rows."""
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            fn = plugins.measures.get(name)
        except PolysteerError as err:
            out[name] = {"error": str(err).splitlines()[0]}
            continue
        results = [(_measure(fn, s, u), len(s)) for s, u in pairs]
        errors = [r["error"] for r, _ in results if "error" in r]
        if errors:
            out[name] = {"error": errors[0]}
            continue
        merged: dict[str, Any] = {}
        for key in ("unsteered", "steered"):
            values = [(r[key], n) for r, n in results if r[key] is not None]
            total = sum(n for _, n in values)
            merged[key] = sum(v * n for v, n in values) / total if total else None
        out[name] = merged
    return out


def _load(role: str, model: Any, plugins: PluginManager) -> Any:
    """The adapter for ``role``: ``model`` itself if already loaded, else loaded by name/node, with
    an error that names the option to change when it cannot be loaded or has the wrong modality."""
    modality = ROLES[role]
    option = f"--{modality}-model"
    if isinstance(model, str | dict):
        try:
            adapter = load_model(model, plugins=plugins)
        except PolysteerError as err:
            raise ConfigError(f"the {role} ({modality}) model {model!r} could not be loaded: "
                              f"{str(err).splitlines()[0]}. Install it (see 'polysteer models'), "
                              f"or choose another with {option}") from err
        except (OSError, ImportError, ValueError) as err:
            raise ConfigError(f"the {role} ({modality}) model {model!r} is not installed or cannot "
                              f"be loaded ({type(err).__name__}: {err}). Install it (see "
                              f"'polysteer models'), or choose another with {option}") from err
    else:
        adapter = model
    if adapter.modality != modality:
        raise ConfigError(f"the {role} needs a {modality} model, but {adapter.name!r} is a "
                          f"{adapter.modality} model; choose one with {option}")
    return adapter


def _save(adapter: Any, record: Generation, stem: Path) -> Path:
    """``adapter.save_outputs`` at ``stem``; a single file is renamed to ``stem`` + its suffix
    (``portrait-0.png`` -> ``portrait.png``)."""
    paths = adapter.save_outputs(record, stem)
    if len(paths) != 1:
        raise PolysteerError(f"{adapter.name} wrote {len(paths)} files for one {adapter.modality} "
                             "output; create expects one")
    target = stem.with_name(stem.name + paths[0].suffix)
    if paths[0] != target:
        paths[0].replace(target)
    return target


def _joined(records: list[Generation], pause: float, text: str) -> Generation:
    """One record of one row: every row of ``records`` in order along the last axis, ``pause``
    seconds of zeros between them (records with a ``sample_rate``)."""
    rate = records[0].sample_rate
    if rate is None:
        raise PolysteerError(f"the narration model {records[0].model!r} returned no sample rate, so "
                             "its sentences cannot be joined into one recording")
    gap = torch.zeros(*records[0].outputs.shape[1:-1], int(round(pause * rate)))
    pieces: list[torch.Tensor] = []
    for record in records:
        for row in record.rows():
            if pieces:
                pieces.append(gap.to(row.dtype))
            pieces.append(row.detach().cpu())
    joined = torch.cat(pieces, dim=-1)[None]
    return Generation(outputs=joined, modality=records[0].modality, model=records[0].model,
                      texts=[text], sample_rate=rate)


# -- the workflow --------------------------------------------------------------------------------
def create(prompt: str, style: str | Path | Style | None = None, intensity: float = 1.0, *,
           out: str | Path = "creation", seed: int = 0, config: CreateConfig | None = None,
           text_model: Any = None, image_model: Any = None, voice_model: Any = None,
           plugins: PluginManager | None = None, progress: bool = True) -> Creation:
    """Generate a story, a portrait of its narrator and its narration, all steered by ``style`` at
    ``intensity``, each beside its unsteered twin (same seed, same inputs), and write them with a
    report to ``out``.

    ``style`` is a :class:`Style`, a style YAML file or a shipped style name (default
    :data:`DEFAULT_STYLE`). Models default to ``config``'s (SmolLM2, ``avatars``, ``joe``); pass a
    name, a config node or a loaded adapter to replace one. The same arguments and seed give the
    same files. Returns the :class:`Creation` (``creation.report`` is the HTML page).
    """
    start = time.perf_counter()
    if not isinstance(prompt, str) or not prompt.strip():
        raise ConfigError("create needs a prompt: what the story is about, e.g. "
                          "'a walk to the market'")
    if not math.isfinite(float(intensity)):
        raise ConfigError(f"intensity must be a finite number, got {intensity}")
    plugins = plugins or current_plugin_manager()
    config = dataclasses.replace(config or CreateConfig(), **{
        k: v for k, v in {"text_model": text_model, "image_model": image_model,
                          "voice_model": voice_model}.items() if v is not None})
    style_obj = style if isinstance(style, Style) else load_style(style or DEFAULT_STYLE)
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=8, desc="create", unit="step", disable=not progress)
    try:
        bar.set_postfix_str("loading models")
        models = {role: _load(role, getattr(config, f"{modality}_model"), plugins)
                  for role, modality in ROLES.items()}
        bar.update(1)
        parts: dict[str, CreatedPart] = {}

        # story ------------------------------------------------------------------------------
        t0 = time.perf_counter()
        text = models["story"]
        question = config.story_template.format(prompt=prompt.strip())
        inputs = text.prepare_inputs([question])
        records: dict[str, Generation] = {}
        for key, with_style in (("unsteered", None), ("steered", style_obj)):
            bar.set_postfix_str(f"story ({key})")
            record, skipped = seeded_generate(text, inputs, seed=seed, style=with_style,
                                              intensity=intensity, options=config.text_options)
            kept = complete_sentences(text.describe_outputs(record)[0])
            records[key] = dataclasses.replace(record, texts=[kept])
            if with_style is not None:
                story_skipped = skipped
            bar.update(1)
        story, story_unsteered = records["steered"].texts[0], records["unsteered"].texts[0]
        if not story:
            raise PolysteerError(f"the text model {text.name!r} wrote an empty story for {question!r}; "
                                 "try another seed or prompt")
        parts["story"] = _part("story", text, question, records, story_skipped, folder,
                               config.measures.get(text.modality, []), plugins, t0)

        # portrait ---------------------------------------------------------------------------
        t0 = time.perf_counter()
        image = models["portrait"]
        description = f"{prompt.strip()}\n{story}"
        inputs = image.prepare_inputs(description)
        records = {}
        for key, with_style in (("unsteered", None), ("steered", style_obj)):
            bar.set_postfix_str(f"portrait ({key})")
            records[key], skipped = seeded_generate(image, inputs, seed=seed, style=with_style,
                                                    intensity=intensity, options=config.image_options)
            if with_style is not None:
                portrait_skipped = skipped
            bar.update(1)
        shown = inputs if not isinstance(inputs, Mapping) else (
            ", ".join(f"{k}={v}" for k, v in inputs.items()) or "no attribute named: the model's choice")
        parts["portrait"] = _part("portrait", image, str(shown), records, portrait_skipped, folder,
                                  config.measures.get(image.modality, []), plugins, t0)

        # narration --------------------------------------------------------------------------
        t0 = time.perf_counter()
        voice = models["narration"]
        said = sentences(story)
        step = max(1, int(config.sentences_per_call))
        chunks = [said[i:i + step] for i in range(0, len(said), step)]
        bar.total += 2 * len(chunks) - 2
        bar.refresh()
        pairs: list[tuple[Generation, Generation]] = []
        narration_skipped: list[str] = []
        for n, chunk in enumerate(chunks):
            inputs = voice.prepare_inputs(chunk)
            bar.set_postfix_str(f"narration {n + 1}/{len(chunks)} (unsteered)")
            plain, _ = seeded_generate(voice, inputs, seed=seed + n, options=config.voice_options)
            bar.update(1)
            bar.set_postfix_str(f"narration {n + 1}/{len(chunks)} (steered)")
            steered, narration_skipped = seeded_generate(voice, inputs, seed=seed + n, style=style_obj,
                                                         intensity=intensity,
                                                         options=config.voice_options)
            bar.update(1)
            pairs.append((steered, plain))
        records = {"unsteered": _joined([u for _, u in pairs], config.pause, story),
                   "steered": _joined([s for s, _ in pairs], config.pause, story)}
        bar.set_postfix_str("measuring")
        parts["narration"] = _part("narration", voice, "\n".join(said), records, narration_skipped,
                                   folder, config.measures.get(voice.modality, []), plugins, t0,
                                   pairs=pairs)
        bar.set_postfix_str("report")
        creation = Creation(folder, prompt, style_obj.name, float(intensity), int(seed), story,
                            story_unsteered, parts, 0.0)
        _spectrograms(creation, records)
        write_json(folder / "creation.json", creation.to_dict())
        write_report(creation, style_obj)
        bar.update(1)
    finally:
        bar.close()
    creation.seconds = time.perf_counter() - start
    return creation


def _part(role: str, adapter: Any, inputs: str, records: dict[str, Generation], skipped: list[str],
          folder: Path, measures: list[str], plugins: PluginManager, t0: float,
          pairs: list[tuple[Generation, Generation]] | None = None) -> CreatedPart:
    files = {"steered": _save(adapter, records["steered"], folder / role).name,
             "unsteered": _save(adapter, records["unsteered"], folder / f"{role}.unsteered").name}
    pairs = pairs or [(records["steered"], records["unsteered"])]
    return CreatedPart(role, adapter.name, adapter.modality, inputs, files,
                       _measures(measures, pairs, plugins), list(skipped),
                       {k: str(adapter.describe_outputs(r)[0]) for k, r in records.items()},
                       time.perf_counter() - t0)


def _spectrograms(creation: Creation, records: dict[str, Generation]) -> None:
    """``narration.spectrogram.png``: log-magnitude spectrograms of both narrations, one above the
    other (when matplotlib is installed)."""
    plt = pyplot()
    if plt is None:
        return
    rate = records["steered"].sample_rate or 1
    fig, axes = plt.subplots(2, 1, figsize=(8, 4.6), sharex=True)
    for ax, key in zip(axes, ("unsteered", "steered"), strict=True):
        wave = records[key].outputs[0].flatten().float()
        n_fft = 1024 if rate >= 16000 else 512
        spec = torch.stft(wave, n_fft, hop_length=n_fft // 4, window=torch.hann_window(n_fft),
                          return_complex=True).abs().clamp_min(1e-6).log10() * 20
        seconds = wave.numel() / rate
        ax.imshow(spec.numpy(), origin="lower", aspect="auto", cmap="magma",
                  extent=(0.0, seconds, 0.0, rate / 2000), vmin=float(spec.max()) - 80)
        ax.set_ylabel("kHz")
        ax.set_title(key if key == "unsteered" else f"{creation.style} x {creation.intensity:g}",
                     fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    save_png(fig, creation.folder / "narration.spectrogram.png")
    creation.parts["narration"].files["spectrogram"] = "narration.spectrogram.png"


# -- the report ---------------------------------------------------------------------------------
def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def _measure_table(part: CreatedPart, style: str, intensity: float) -> str:
    rows = []
    for name, m in part.measures.items():
        if "error" in m:
            rows.append(f"<tr><td>{html.escape(name)}</td><td colspan=3 class=err>not measured: "
                        f"{html.escape(m['error'])}</td></tr>")
            continue
        u, s = m["unsteered"], m["steered"]
        change = "n/a" if u is None or s is None else f"{s - u:+.4g}"
        rows.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(u)}</td><td>{_fmt(s)}</td>"
                    f"<td><b>{change}</b></td></tr>")
    if not rows:
        return "<p>(no measures configured for this modality)</p>"
    return (f"<table><tr><th>measure</th><th>unsteered</th><th>{html.escape(style)} x "
            f"{intensity:g}</th><th>change</th></tr>{''.join(rows)}</table>")


def _embedded(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


def _media(folder: Path, part: CreatedPart, key: str) -> str:
    name = part.files[key]
    path = folder / name
    suffix = path.suffix.lower()
    if suffix == ".txt":
        return f"<div class=story>{html.escape(path.read_text()).strip()}</div>"
    if suffix == ".png":
        return (f'<img class=portrait src="{html.escape(name)}" alt="{part.role} ({key})">'
                f"<div class=small>{html.escape(part.described.get(key, ''))}</div>")
    if suffix == ".wav":
        return (f'<audio controls preload="none" src="{_embedded(path, "audio/wav")}"></audio>'
                f'<div class=small><a href="{html.escape(name)}">{html.escape(name)}</a> '
                f"{html.escape(part.described.get(key, ''))}</div>")
    return f'<a href="{html.escape(name)}">{html.escape(name)}</a>'


_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:1.5em}
.pair>div{background:#f7f7f9;padding:1em;border-radius:8px}
.story{white-space:pre-wrap;line-height:1.5}.portrait{width:192px;height:192px;image-rendering:pixelated}
table{border-collapse:collapse;margin:.8em 0}td,th{border:1px solid #ccc;padding:.3em .7em;text-align:right}
td:first-child,th:first-child{text-align:left}.small{font-size:.85em;color:#555}.err{color:#a33;text-align:left}
h3{margin:.2em 0 .6em}audio{width:100%}"""


def write_report(creation: Creation, style: Style | None = None) -> Path:
    """Write ``report.html`` in the creation's folder: each part unsteered beside steered (text,
    image, an audio player with the WAV embedded, spectrograms) with its measures."""
    folder = creation.folder
    title = f"{creation.style} x {creation.intensity:g}"
    sections = []
    for part in creation.parts.values():
        skipped = "".join(f"<li>{html.escape(s)}</li>" for s in part.not_applied)
        extra = ""
        if "spectrogram" in part.files:
            extra = (f'<p><img src="{html.escape(part.files["spectrogram"])}" alt="spectrograms" '
                     'style="max-width:100%"></p>')
        sections.append(f"""<section id="{part.role}"><h2>{part.role.capitalize()}
<span class=small>({html.escape(part.model)}, {part.modality}, {part.seconds:.0f} s)</span></h2>
<p class=small>Input: {html.escape(part.inputs)}</p>
<div class=pair><div><h3>unsteered</h3>{_media(folder, part, "unsteered")}</div>
<div><h3>{html.escape(title)}</h3>{_media(folder, part, "steered")}</div></div>{extra}
{_measure_table(part, creation.style, creation.intensity)}
{f"<p class=small>Not applied to this model:</p><ul class=small>{skipped}</ul>" if skipped else ""}
</section>""")
    described = html.escape(style.description) if style is not None and style.description else ""
    head = f"<title>polysteer create: {html.escape(creation.prompt)}</title>"
    page = f"""<!doctype html><html lang="en"><meta charset="utf-8">{head}
<style>{_CSS}</style>
<h1>{html.escape(creation.prompt)}</h1>
<p>Style <b>{html.escape(creation.style)}</b> at intensity <b>{creation.intensity:g}</b>,
seed {creation.seed}. {described}</p>
<p class=small>Each part is shown beside its unsteered twin: the same model, inputs and seed without
the style, so what differs is the style's doing in that modality (both narrations read the steered
story). Measures compare the steered output with its twin.</p>
{''.join(sections)}
<h2>Files</h2><ul>{''.join(f'<li><a href="{html.escape(f)}">{html.escape(f)}</a></li>'
                       for p in creation.parts.values() for f in p.files.values())}
<li><a href="creation.json">creation.json</a></li></ul>
<pre class=small>{html.escape(json.dumps({"prompt": creation.prompt, "style": creation.style,
                                           "intensity": creation.intensity, "seed": creation.seed},
                                          indent=1))}</pre>
</html>
"""
    with atomic_path(folder / "report.html") as tmp:
        tmp.write_text(page)
    return folder / "report.html"
