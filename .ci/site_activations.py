"""Record SmolLM2's activations at two sites, for the cross-version check of .ci/lower-bounds.

    python .ci/site_activations.py MODEL OUT.safetensors

MODEL is ``smollm2`` (the embedded model, converted into $POLYSTEER_HOME by this environment's
transformers if needed) or a converted folder. Greedy generation of a few tokens from fixed prompts
is captured at the two sites (prefill and decode positions) and saved with the generated ids, a
mask of the real (not left-padding) positions and the library versions, so two environments'
files can be compared (tests/test_lower_bounds.py).
"""

from __future__ import annotations

import json
import sys
from importlib import metadata

from safetensors.torch import save_file

import polysteer as ps

SITES = ("blocks.8.resid_post", "blocks.20.mlp_out")
PROMPTS = ["The capital of France is", "Write one sentence about rivers.",
           "def add(a, b):\n    return"]


def main(model: str, out: str) -> None:
    adapter = ps.load_model({"kind": "transformers", "name": model})
    with ps.steer(adapter, None, capture=list(SITES)) as run:
        generation = adapter.generate(PROMPTS, max_new_tokens=6, chat=False, do_sample=False)
    tensors = {site: run.captured(site).float().contiguous() for site in SITES}
    ids = generation.outputs.long()
    tensors["ids"] = ids.contiguous()
    # Left padding is meaningless at any version: only positions from each row's first real
    # token on are compared.
    positions = tensors[SITES[0]].shape[1]
    real = (ids[:, :positions] != adapter.tokenizer.pad_token_id).long().cumsum(dim=1) > 0
    tensors["real"] = real.contiguous()
    versions = {p: metadata.version(p) for p in ("torch", "transformers", "tokenizers", "numpy")}
    save_file(tensors, out, metadata={"versions": json.dumps(versions)})
    print(json.dumps(versions))


if __name__ == "__main__":
    main(*sys.argv[1:3])
