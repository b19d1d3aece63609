"""Which features fire on each token of a text: deterministic read-outs through a dictionary.

:func:`inspect_text` gives the strongest features per token; :func:`write_inspect_html` writes a
self-contained HTML page with the text's tokens highlighted once per strongest feature.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polysteer import FeatureDictionary, resolve_dictionary, steer
from polysteer.features import OUTLIER_FACTOR
from polysteer.io import atomic_path, say


@dataclass
class Readout:
    """A text read through a dictionary.

    Attributes:
        text: the text.
        tokens: the tokenizer's tokens (padding dropped).
        pieces: each token as the text it stands for (for display).
        values: ``(tokens, d_features)`` feature values in units of each feature's typical scale.
        labels: feature labels.
        description: one line about the dictionary.
    """

    text: str
    tokens: list[str]
    pieces: list[str]
    values: torch.Tensor
    labels: list[str]
    description: str


def read_text(adapter: Any, dictionary: FeatureDictionary | str, text: str) -> Readout:
    """Run ``text`` through the model and read every token through ``dictionary``.

    The dictionary is checked against the model (fingerprint, site) first. Attention-sink tokens
    (norm over ten site norms) read 0. A dictionary without a site norm (an SAELens import) gets
    one estimated from this text (:meth:`~polysteer.FeatureDictionary.ensure_site_norm`), said on
    stderr.
    """
    d = resolve_dictionary(dictionary)
    site = d.info.site
    d.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    with steer(adapter, None, capture=[site]) as run:
        _, mask = adapter.forward([text])
    acts = run.captured(site)[0][mask[0].bool()].float()
    estimate = d.ensure_site_norm(acts)
    if estimate is not None:
        say(f"{d.describe()}: it has no site norm (typical token norm, e.g. an SAELens import), so "
            f"{estimate:.4g} was estimated from this text's {len(acts)} tokens and is used for now "
            "(in memory only; import it with a site norm to fix it)")
    with torch.no_grad():
        values = d.to(acts.device).encode(acts) / d.scales.to(acts.device).clamp_min(1e-8)
    # attention sinks (the first token, ~170x the typical norm in SmolLM2) read huge on every
    # feature and mean nothing: show them as silent, as rule read-outs treat them
    values[acts.norm(dim=-1) > OUTLIER_FACTOR * d.info.site_norm] = 0.0
    ids = adapter.encode([text], chat=False)["input_ids"][0][mask[0].bool()]
    tokens = adapter.tokenizer.convert_ids_to_tokens(ids.tolist())
    pieces = [_piece(adapter.tokenizer, t) for t in tokens]
    return Readout(text, tokens, pieces, values.cpu(), list(d.labels), d.describe())


def _piece(tokenizer: Any, token: str) -> str:
    """The text of one token; a tokenizer without a decoder shows the token itself (transformers
    4.x's ``convert_tokens_to_string`` fails on those, 5.x returns the token)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None and backend.decoder is None:
        return token
    return tokenizer.convert_tokens_to_string([token])


def top_per_token(readout: Readout, top: int = 3) -> list[dict[str, Any]]:
    """Per token: ``{"token", "features": [(label, value), ...]}``, strongest first."""
    values = readout.values
    k = min(top, values.shape[1])
    strongest = values.abs().topk(k, dim=-1).indices
    return [{"token": tok, "features": [(readout.labels[i], values[p, i].item())
                                        for i in strongest[p].tolist()]}
            for p, tok in enumerate(readout.tokens)]


def inspect_text(adapter: Any, dictionary: FeatureDictionary | str, text: str, top: int = 3
                 ) -> list[dict[str, Any]]:
    """Per token: ``{"token", "features": [(label, value), ...]}``, strongest first.

    Values are read-outs in units of each feature's typical scale (1.0 = fires as usual). The
    dictionary is checked against the model (fingerprint, site) first.
    """
    return top_per_token(read_text(adapter, dictionary, text), top)


def strongest_features(readout: Readout, features: int = 8) -> list[int]:
    """Indices of the features with the largest ``|value|`` anywhere in the text, strongest first.

    Features that never fire (all zero) are left out; ties keep index order.
    """
    peak = readout.values.abs().amax(0) if len(readout.tokens) else torch.zeros(len(readout.labels))
    order = sorted(range(len(peak)), key=lambda i: (-peak[i].item(), i))
    return [i for i in order[:features] if peak[i] > 0]


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.3em; } .meta { color: #666; font-size: 0.9em; }
.feature { margin: 1.2em 0; } .feature h2 { font-size: 1em; margin: 0 0 0.3em 0; }
.peak { color: #666; font-weight: normal; }
.tokens { font-family: ui-monospace, monospace; line-height: 2; }
.tok { white-space: pre; padding: 0.15em 0.1em; margin: 0 1px; border-radius: 3px;
       border: 1px solid #ddd; }
"""


def _colour(value: float, peak: float) -> str:
    """Background for ``value``: orange for positive, blue for negative, alpha ``|value|/peak``."""
    alpha = min(1.0, abs(value) / peak) if peak > 0 else 0.0
    rgb = "255,140,0" if value >= 0 else "30,110,255"
    return f"rgba({rgb},{alpha:.3f})"


def render_html(readout: Readout, features: int = 8) -> str:
    """A self-contained HTML page: for each of the strongest ``features`` features, the text's
    tokens with background intensity proportional to the feature's value (relative to its peak in
    the text), its label and peak value. Deterministic: the same read-out gives the same bytes."""
    esc = html.escape
    parts = ["<!DOCTYPE html>", "<html lang=\"en\">", "<head>", "<meta charset=\"utf-8\">",
             "<title>polysteer inspect</title>", f"<style>{_STYLE}</style>", "</head>", "<body>",
             "<h1>polysteer inspect</h1>",
             f"<p class=\"meta\">{esc(readout.description)}; {len(readout.tokens)} tokens; values in "
             "units of each feature's typical scale (1.0 = fires as usual)</p>",
             f"<p class=\"text\">{esc(readout.text)}</p>"]
    chosen = strongest_features(readout, features)
    if not chosen:
        parts.append("<p>No feature fires on this text.</p>")
    for i in chosen:
        row = readout.values[:, i].tolist()
        peak_at = max(range(len(row)), key=lambda p: (abs(row[p]), -p))
        peak = abs(row[peak_at])
        spans = "".join(
            f"<span class=\"tok\" style=\"background:{_colour(v, peak)}\" "
            f"title=\"{esc(tok)}: {v:+.3f}\">{esc(piece)}</span>"
            for tok, piece, v in zip(readout.tokens, readout.pieces, row, strict=True))
        parts += ["<div class=\"feature\">",
                  f"<h2>#{i} {esc(readout.labels[i])} <span class=\"peak\">max {row[peak_at]:+.3f} "
                  f"at {esc(readout.pieces[peak_at])}</span></h2>",
                  f"<div class=\"tokens\">{spans}</div>", "</div>"]
    parts += ["</body>", "</html>", ""]
    return "\n".join(parts)


def write_inspect_html(readout: Readout, path: str | os.PathLike, features: int = 8) -> Path:
    """Write :func:`render_html` of ``readout`` to ``path`` atomically (UTF-8)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(render_html(readout, features), encoding="utf-8")
    return path
