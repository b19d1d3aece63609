"""Which features fire on each token of a text: deterministic read-outs through a dictionary."""

from __future__ import annotations

from typing import Any

import torch

from polysteer import FeatureDictionary, resolve_dictionary, steer


def inspect_text(adapter: Any, dictionary: FeatureDictionary | str, text: str, top: int = 3
                 ) -> list[dict[str, Any]]:
    """Per token: ``{"token", "features": [(label, value), ...]}``, strongest first.

    Values are read-outs in units of each feature's typical scale (1.0 = fires as usual). The
    dictionary is checked against the model (fingerprint, site) first.
    """
    d = resolve_dictionary(dictionary)
    site = d.info.site
    d.check_compatible(adapter.model_fingerprint, site, adapter.bind(site).channels)
    with steer(adapter, None, capture=[site]) as run:
        _, mask = adapter.forward([text])
    acts = run.captured(site)[0][mask[0].bool()].float()
    with torch.no_grad():
        values = d.to(acts.device).encode(acts) / d.scales.to(acts.device).clamp_min(1e-8)
    ids = adapter.encode([text], chat=False)["input_ids"][0][mask[0].bool()]
    tokens = adapter.tokenizer.convert_ids_to_tokens(ids.tolist())
    k = min(top, d.d_features)
    strongest = values.abs().topk(k, dim=-1).indices
    return [{"token": tok, "features": [(d.labels[i], values[p, i].item()) for i in strongest[p].tolist()]}
            for p, tok in enumerate(tokens)]
