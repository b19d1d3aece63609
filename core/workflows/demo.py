"""The demos: the main demo (``polysteer demo``: :func:`run_main_demo`, ``create`` on the embedded
text, image and voice models) and the plumbing demo on the reference model (``polysteer
demo-reference``: build a concept, steer with it, react with a rule).

The reference model has random weights, so its "concept" is synthetic: *high tokens* (ids in the
upper half of the vocabulary) against low ones, read off the model's unembedding. The demo shows
the moving parts (a concept tied to its model and site, a style with a schedule, an intensity sweep
with measures, a plot and a report) in seconds, without any download.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from polysteer.features.concepts import direction_set, median_norm
from polysteer.features.dictionary import DirectionSet
from polysteer.models.reference import ReferenceAdapter
from polysteer.steering.generation import Generation
from polysteer.steering.runtime import steer
from polysteer.steering.style import Style

DEMO_SITE = "blocks.1.resid_post"


def contrast_prompts(vocab: int = 64, samples: int = 16, length: int = 8, seed: int = 1
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts of high token ids (upper half of the vocabulary) and of low ones."""
    g = torch.Generator().manual_seed(seed)
    half = vocab // 2
    high = torch.randint(half, vocab, (samples, length), generator=g)
    low = torch.randint(1, half, (samples, length), generator=g)
    return high, low


def build_demo_dictionary(adapter: ReferenceAdapter, site: str = DEMO_SITE) -> DirectionSet:
    """The "high tokens" concept at ``site``, read off the unembedding.

    A random model has no concepts to find by contrasting inputs, so the direction is the
    difference between the mean unembedding rows of high and low ids (the logit-lens reading of
    "say a high token"), scaled through the final norm's gain. The site norm is measured on
    contrastive prompts, as for any concept.
    """
    model = adapter.model
    half = model.config.vocab_size // 2
    unembed = model.unembed.weight.detach()
    direction = (unembed[half:].mean(0) - unembed[1:half].mean(0)) * model.ln_f.weight.detach()
    with steer(adapter, None, capture=[site]) as run:
        adapter.logits(torch.cat(contrast_prompts(model.config.vocab_size)))
    return direction_set([direction], ["high tokens"], site=site,
                         site_norm=median_norm(run.captured(site)),
                         model=adapter.model_fingerprint, method="unembedding-contrast",
                         details={"positive": "ids >= vocab/2", "negative": "0 < ids < vocab/2"})


def high_token_fraction(generation: Generation, baseline: Generation | None = None) -> float:
    """Fraction of generated ids in the upper half of the vocabulary (the demo concept).

    Reads the vocabulary size from ``generation.extras["vocab_size"]`` (the reference adapter sets
    it).
    """
    vocab = generation.extras.get("vocab_size")
    if vocab is None:
        raise ValueError("high_token_fraction needs extras['vocab_size'] in the generation record "
                         "(the reference adapter sets it)")
    return (generation.generated >= int(vocab) // 2).float().mean().item()


def run_demo(output_dir: str | Path = "runs") -> None:
    """Print what steering does to the reference model and write an experiment report."""
    from polysteer.config import compose
    from polysteer.workflows.experiment import run_experiment

    adapter = ReferenceAdapter()
    dictionary = build_demo_dictionary(adapter)
    style = Style.from_dict({"name": "high", "components": [
        {"dictionary": "x", "feature": "high tokens", "weight": 1.0}]})
    style.components[0].dictionary = dictionary
    prompts = contrast_prompts(adapter.model.config.vocab_size, samples=2, seed=7)[1]
    print("polysteer demo on the reference model (random weights, synthetic concept "
          "'high tokens')")
    print(f"site {DEMO_SITE}, site norm {dictionary.info.site_norm:.2f}\n")
    for intensity in (0.0, 0.5, 1.0, 2.0):
        out = adapter.generate(prompts, style=style, intensity=intensity, max_new_tokens=8)
        frac = high_token_fraction(out, out)
        tokens = out.generated[0].tolist()
        print(f"intensity {intensity:>3}: {tokens}  high-token fraction {frac:.2f}")
    folder = run_experiment(compose(["experiment=reference-demo"]), output_dir=Path(output_dir))
    print(f"\nexperiment report: {folder / 'report.html'}")


DEMO_PROMPT = "a walk to the market on a sunny morning"
"""The main demo's story prompt."""


def run_main_demo(output_dir: str | Path = "runs", *, prompt: str = DEMO_PROMPT,
                  style: str | Path | Style | None = None, intensity: float = 1.0, seed: int = 0,
                  config: object | None = None, progress: bool = True) -> object:
    """The main demo: :func:`~polysteer.workflows.create.create` on the embedded models (SmolLM2,
    avatars, joe) in a new folder under ``output_dir``, the shipped cross-modal style by default.
    Returns the :class:`~polysteer.workflows.create.Creation` (its ``report`` is the HTML page)."""
    from polysteer.workflows.create import DEFAULT_STYLE, CreateConfig, create
    from polysteer.workflows.experiment import in_run_folder

    if config is None:
        config = CreateConfig()
    from polysteer.steering.style import load_style

    style = style if isinstance(style, Style) else load_style(style or DEFAULT_STYLE)
    name = style.name
    print(f"polysteer demo: one style ({name} x {intensity:g}) on a story (text), a portrait of its "
          f"narrator (image) and its narration (voice), each beside its unsteered twin; seed {seed}")
    print(f"prompt: {prompt!r}\n")
    # written into a temporary folder, published when finished: a failed demo leaves no folder
    folder, creation = in_run_folder(output_dir, f"create-{name}", lambda tmp: create(
        prompt, style, intensity, out=tmp, seed=seed, config=config,  # type: ignore[arg-type]
        progress=progress))
    return dataclasses.replace(creation, folder=folder)
