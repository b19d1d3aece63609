"""Feature read-outs for the server: which features fire on each token, and feature search.

Run on the engine's worker thread (``engine.call``), never beside a generation. The read-out is
the one ``polysteer inspect`` shows: the dictionary's feature values per token in units of each
feature's typical scale, attention sinks read as 0.
"""

from __future__ import annotations

from typing import Any

import torch

from polysteer.features.classifier import OUTLIER_FACTOR
from polysteer.features.dictionary import FeatureDictionary, resolve_dictionary
from polysteer.features.search import contrast_features, search_labels, similar_features
from polysteer.serve.errors import APIError
from polysteer.steering.runtime import steer


def dictionary_for(adapter: Any, name: str, param: str = "dictionary") -> FeatureDictionary:
    """The dictionary called ``name``, checked against the served model (404 / 400 otherwise)."""
    try:
        d = resolve_dictionary(name)
    except FileNotFoundError as err:
        raise APIError(404, str(err), code="dictionary_not_found", param=param) from None
    site = d.info.site
    try:
        d.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    except Exception as err:  # a mismatch, or a site this model does not have
        raise APIError(400, f"dictionary {name!r} does not fit the served model: {err}",
                       code="dictionary_mismatch", param=param) from None
    return d


def activations(adapter: Any, d: FeatureDictionary, text: str) -> tuple[torch.Tensor, list[int]]:
    """``(tokens, channels)`` activations of ``text`` at the dictionary's site, and its token ids
    (padding dropped)."""
    site = d.info.site
    with steer(adapter, None, capture=[site]) as run:
        _, mask = adapter.forward([text])
    keep = mask[0].bool()
    acts = run.captured(site)[0][keep].float()
    ids = adapter.encode([text], chat=False)["input_ids"][0][keep.to(mask.device)].tolist()
    return acts, ids


def read_tokens(adapter: Any, d: FeatureDictionary, text: str, top: int) -> list[dict[str, Any]]:
    """Per token: ``{"token", "text", "features": [{"index", "label", "value"}]}``, strongest first."""
    acts, ids = activations(adapter, d, text)
    with torch.no_grad():
        values = d.to(acts.device).encode(acts) / d.scales.to(acts.device).clamp_min(1e-8)
    values[acts.norm(dim=-1) > OUTLIER_FACTOR * d.info.site_norm] = 0.0
    values = values.cpu()
    tokens = adapter.tokenizer.convert_ids_to_tokens(ids)
    k = min(top, values.shape[1])
    strongest = values.abs().topk(k, dim=-1).indices
    return [{"token": tok, "text": adapter.tokenizer.convert_tokens_to_string([tok]),
             "features": [{"index": i, "label": d.labels[i], "value": round(values[p, i].item(), 6)}
                          for i in strongest[p].tolist()]}
            for p, tok in enumerate(tokens)]


def search(adapter: Any, d: FeatureDictionary, *, query: str | None, similar_to: Any,
           positive: list[str] | None, negative: list[str] | None, top: int) -> list[dict[str, Any]]:
    """Features by label (``query``), by direction (``similar_to`` a feature), or by contrast
    (firing on the ``positive`` texts more than on the ``negative`` ones)."""
    if query is not None:
        return [{"index": m.index, "label": m.label, "score": m.score}
                for m in search_labels(d, query, top)]
    if similar_to is not None:
        return [{"index": m.index, "label": m.label, "score": m.score}
                for m in similar_features(d, similar_to, top)]
    pos = [activations(adapter, d, t)[0] for t in positive]
    neg = [activations(adapter, d, t)[0] for t in negative]
    return [{"index": m.index, "label": m.label, "score": m.score, "positive_mean": m.pos_mean,
             "negative_mean": m.neg_mean} for m in contrast_features(d, pos, neg, top)]
