"""Feature dictionaries for text models: harvest token activations from corpora, train an SAE.

The pieces:

* :func:`harvest_texts`: texts -> :class:`~polysteer.workflows.ActivationStore` (resumable), through
  the core harvest with the text plugin's renderer ``text`` (:func:`dictionary_renderer`: plain
  texts, no chat template, right padding, truncated to ``max_tokens``) and row selector
  ``text-tokens``, which drops padding, each text's first token and attention sinks (tokens
  above ``OUTLIER_FACTOR`` x the batch's median norm, the rule concepts use too). The renderer
  records the mask before the forward pass, so the selector works when the driver cuts the pass
  short after the site.
* :class:`DictionaryConfig` and :func:`train_from_config`: the config-driven pipeline behind
  ``polysteer dictionary harvest|train CONFIG [key=value ...]``: harvest (or resume), train,
  evaluate FVE / L0 / dead fraction and loss recovered (next-token cross-entropy on held-out
  texts: clean, zero-ablated, spliced), save the SAE with its metrics.
"""

from __future__ import annotations

import dataclasses
import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import ConfigError
from polysteer.io import finite, load_yaml, parse_yaml
from polysteer.plugins.text.harvest import OUTLIER_FACTOR, TextRenderer, keep_mask, text_tokens
from polysteer.workflows import TrainConfig

DEFAULT_MAX_TOKENS = 128


# -- harvesting ----------------------------------------------------------------------------------
def filter_rows(acts: torch.Tensor, attention_mask: torch.Tensor,
                outlier_factor: float = OUTLIER_FACTOR) -> torch.Tensor:
    """The kept ``(N, C)`` rows of a captured ``(B, P, C)`` activation (see :func:`keep_mask`)."""
    return acts[keep_mask(acts, attention_mask, outlier_factor)]


def dictionary_renderer(max_tokens: int = DEFAULT_MAX_TOKENS) -> TextRenderer:
    """Renderer ``text`` as dictionaries read texts: plain, right-padded, truncated to ``max_tokens``."""
    return TextRenderer(max_tokens, padding_side="right")


def text_batches(texts: Sequence[str], batch_size: int, seed: int = 0, sort_window: int = 16
                 ) -> list[list[str]]:
    """Deterministic batches: texts shuffled, then sorted by length within windows of
    ``sort_window`` batches (less padding, corpora still mixed across the store)."""
    order = list(texts)
    random.Random(seed).shuffle(order)
    window = batch_size * sort_window
    out: list[list[str]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=len)
        out += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return out


def harvest_texts(adapter: Any, texts: Sequence[str], sites: Sequence[str], folder: str | os.PathLike,
                  *, max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 16,
                  shard_tokens: int = 65_536, seed: int = 0, progress: bool = True,
                  details: dict | None = None):
    """Harvest ``sites`` over ``texts`` into an :class:`ActivationStore` in ``folder``.

    Resumes an unfinished store in ``folder`` (same texts, order and settings give the same rows);
    the forward pass stops after the deepest site. Under torchrun each rank harvests its block of
    the batches and rank 0 publishes one store (:func:`~polysteer.workflows.harvest_sharded`).
    """
    from polysteer.workflows import dist_info, harvest, harvest_sharded

    batches = text_batches(texts, batch_size, seed)
    info = {"max_tokens": max_tokens, "texts": len(texts), "seed": seed, **(details or {})}

    def run(**kw: Any) -> Any:
        return harvest(adapter, kw.pop("batches"), list(sites), kw.pop("folder"),
                       renderer=dictionary_renderer(max_tokens), rows=text_tokens(),
                       shard_tokens=shard_tokens, **kw)

    return harvest_sharded(run, batches, folder, details=info,
                           progress=progress and dist_info().is_main)


def text_stream(adapter: Any, texts: Sequence[str], site: str, *, max_tokens: int = DEFAULT_MAX_TOKENS,
                batch_size: int = 16, seed: int = 0, buffer_rows: int = 16_384):
    """Streaming mode: an :class:`~polysteer.workflows.ActivationStream` of ``site`` over ``texts``
    (the same batches and rows a harvest would store; each rank runs its block of them)."""
    from polysteer.workflows import ActivationStream, render_batch

    render, select = dictionary_renderer(max_tokens), text_tokens()

    def produce(batch: Sequence[str]) -> torch.Tensor:
        acts, rendered = render_batch(adapter, [site], render, batch)
        return select(acts[site], rendered).rows

    return ActivationStream(text_batches(texts, batch_size, seed), produce,
                            d_in=adapter.bind(site).channels, buffer_rows=buffer_rows)


# -- loss recovered ------------------------------------------------------------------------------
def next_token_loss(adapter: Any, max_tokens: int = DEFAULT_MAX_TOKENS):
    """``loss_fn(texts)``: mean next-token cross-entropy over real tokens (right padding, so
    position 0 is every text's first token: what :func:`~polysteer.workflows.splice` skips)."""
    def loss_fn(texts: Sequence[str]) -> torch.Tensor:
        encoded = adapter.encode(list(texts), chat=False, max_tokens=max_tokens, padding_side="right")
        ids, mask = encoded["input_ids"], encoded["attention_mask"].bool()
        logits = adapter.model(**encoded).logits.float()
        target = ids[:, 1:].masked_fill(~(mask[:, 1:] & mask[:, :-1]), -100)
        return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                                 target.reshape(-1), ignore_index=-100)
    return loss_fn


def text_loss_recovered(adapter: Any, sae: Any, site: str, texts: Sequence[str],
                        max_tokens: int = DEFAULT_MAX_TOKENS, batch_size: int = 8) -> dict[str, float]:
    """Clean / zero-ablated / spliced next-token loss on ``texts`` and the loss recovered."""
    from polysteer.workflows import loss_recovered

    batches = [list(texts[i:i + batch_size]) for i in range(0, len(texts), batch_size)]
    with torch.no_grad():
        return loss_recovered(adapter, sae, site, batches, next_token_loss(adapter, max_tokens))


# -- the config ----------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """Which texts: registry names or local files, up to ``max_texts`` each; ``eval_texts`` of each
    corpus are held out (never harvested) for loss recovered."""

    datasets: list[str] = field(default_factory=lambda: ["rotten-tomatoes", "bbc-news",
                                                         "moviedialog", "sms-spam"])
    max_texts: int = 2000
    min_chars: int = 20
    eval_texts: int = 16
    seed: int = 0


@dataclass
class HarvestConfig:
    """Where and how to harvest; ``folder`` defaults to $POLYSTEER_HOME/activations/NAME."""

    folder: str | None = None
    max_tokens: int = DEFAULT_MAX_TOKENS
    batch_size: int = 16
    shard_tokens: int = 65_536
    stream: bool = False
    """Streaming mode: train straight from the model's activations, store nothing."""
    buffer_rows: int = 16_384
    """Streaming mode: rows shuffled together before they are cut into training batches."""


@dataclass
class DictionaryConfig:
    """A whole ``polysteer dictionary`` run; see ``plugins/text/shipped/dictionary/smollm2-res-sae.yaml``."""

    name: str
    site: str
    train: TrainConfig
    model: str = "smollm2"
    data: DataConfig = field(default_factory=DataConfig)
    harvest: HarvestConfig = field(default_factory=HarvestConfig)
    output: str | None = None
    save_dtype: str = "float16"
    description: str = ""
    sites: list[str] | None = None
    """Several sites at once (``site`` is then the first): harvested into one store, one SAE per
    site saved in ``OUTPUT/SITE``; under torchrun the sites are spread over the ranks."""

    def all_sites(self) -> list[str]:
        """The sites this config trains (``sites`` when given, else ``[site]``)."""
        return list(self.sites) if self.sites else [self.site]

    def store_folder(self) -> Path:
        from polysteer.io import home

        if self.harvest.folder:
            return Path(self.harvest.folder).expanduser()
        model = Path(self.model).name
        return home() / "activations" / f"{model}-{self.name}-{self.site}"

    def output_folder(self) -> Path:
        from polysteer.io import home

        return Path(self.output).expanduser() if self.output else home() / "dictionaries" / self.name


SECTIONS = {"data": DataConfig, "harvest": HarvestConfig, "train": TrainConfig}
TOP_KEYS = ("name", "site", "model", "data", "harvest", "train", "output", "save_dtype", "description",
            "sites")


def _names(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _set_override(data: dict, item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key=value (e.g. train.steps=200)")
    key, raw = item.split("=", 1)
    value = parse_yaml(raw, f"override {item!r}") if raw else None
    parts = key.strip().split(".")
    node = data
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[parts[-1]] = value


def parse_config(data: Any, overrides: Sequence[str] = (), where: str = "config") -> DictionaryConfig:
    """Validate a config mapping (plus ``key=value`` overrides, dotted for sections)."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    data = {k: (dict(v) if isinstance(v, dict) else v) for k, v in data.items()}
    for item in overrides:
        _set_override(data, item)
    unknown = sorted(set(data) - set(TOP_KEYS))
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {unknown}; allowed: {list(TOP_KEYS)}")
    if data.get("site") is None and data.get("sites"):
        data["site"] = data["sites"][0] if isinstance(data["sites"], list) else data["sites"]
    for key in ("name", "site", "train"):
        if data.get(key) is None:
            raise ConfigError(f"{where}: {key}: missing (required)")
    sections: dict[str, Any] = {}
    for key, cls in SECTIONS.items():
        node = data.get(key) or {}
        if not isinstance(node, dict):
            raise ConfigError(f"{where}: {key}: expected a mapping of {_names(cls)}")
        bad = sorted(set(node) - set(_names(cls)))
        if bad:
            raise ConfigError(f"{where}: {key}: unknown key(s) {bad}; allowed: {_names(cls)}")
        _check_field_types(cls, node, f"{where}: {key}")
        try:
            sections[key] = cls(**node)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"{where}: {key}: {err}") from err
    if isinstance(sections["data"].datasets, str):
        sections["data"].datasets = [sections["data"].datasets]
    if data.get("save_dtype", "float16") not in ("float16", "float32"):
        raise ConfigError(f"{where}: save_dtype: {data['save_dtype']!r} is not float16 or float32")
    rest = {k: v for k, v in data.items() if k not in SECTIONS}
    _check_field_types(DictionaryConfig, rest, where)
    if isinstance(rest.get("sites"), str):
        rest["sites"] = [rest["sites"]]
    return DictionaryConfig(**rest, **sections)


def _check_field_types(cls: type, node: dict[str, Any], where: str) -> None:
    """Each value has its field's declared type (a quoted ``'200'`` for an int is refused here,
    naming the key path); numbers are finite and integers non-negative."""
    for f in dataclasses.fields(cls):
        if f.name not in node or f.name in SECTIONS:
            continue
        value, path = node[f.name], f"{where}.{f.name}"
        declared = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        kinds = {part.strip().split("[")[0] for part in declared.split("|")}
        if value is None and "None" in kinds:
            continue
        if "bool" in kinds and isinstance(value, bool):
            continue
        if "int" in kinds and isinstance(value, int) and not isinstance(value, bool):
            finite(value, path, low=0, high=2 ** 62, integer=True)
        elif "float" in kinds and isinstance(value, int | float) and not isinstance(value, bool):
            finite(value, path)
        elif "str" in kinds and isinstance(value, str):
            continue
        elif "list" in kinds and (isinstance(value, str) or isinstance(value, list) and all(
                isinstance(v, str) for v in value)):  # one name stands for a list of one
            continue
        else:
            raise ConfigError(f"{path}: expected {' or '.join(sorted(kinds))}, got {value!r}")


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> DictionaryConfig:
    """Read a dictionary config YAML (a path, or a name under configs/dictionary/)."""
    from polysteer.io import configs_dir

    p = Path(path)
    if not p.exists():
        named = configs_dir() / "dictionary" / f"{path}.yaml"
        if not named.exists():
            raise ConfigError(f"dictionary config {str(path)!r} not found (not a file, not "
                              f"{named})")
        p = named
    data = load_yaml(p, "dictionary config")  # regular UTF-8 file, alias/depth limits
    return parse_config(data, overrides, str(p))


# -- the pipeline --------------------------------------------------------------------------------
def load_texts(cfg: DataConfig, progress: bool = True) -> tuple[list[str], list[str]]:
    """(train texts, held-out texts) from every dataset in ``cfg``, deterministic."""
    from polysteer.data import load_dataset

    train, held = [], []
    for name in cfg.datasets:
        texts = [t for t in load_dataset(name, progress=progress).texts
                 if len(t.strip()) >= cfg.min_chars]
        random.Random(f"{cfg.seed}:{name}").shuffle(texts)
        held += texts[:cfg.eval_texts]
        train += texts[cfg.eval_texts:cfg.eval_texts + cfg.max_texts]
    if not train:
        raise ConfigError(f"no training texts in {cfg.datasets} (min_chars={cfg.min_chars})")
    return train, held


def _say(message: str, progress: bool) -> None:
    if progress:
        print(message, flush=True)


def harvest_from_config(cfg: DictionaryConfig, adapter: Any, progress: bool = True):
    """Harvest (or resume, or reuse a finished) store for ``cfg``; returns the store.

    Under torchrun every rank calls it and gets the same merged store back."""
    from polysteer.workflows import dist_info

    texts, _ = load_texts(cfg.data, progress)
    folder = cfg.store_folder()
    details = {"max_tokens": cfg.harvest.max_tokens, "texts": len(texts), "seed": cfg.data.seed,
               "datasets": list(cfg.data.datasets), "name": cfg.name}
    _check_store_matches(folder, details)
    info = dist_info()
    ranks = f" on {info.world} processes" if info.world > 1 else ""
    _say(f"harvesting {', '.join(cfg.all_sites())} over {len(texts)} texts into {folder}{ranks}",
         progress and info.is_main)
    return harvest_texts(adapter, texts, cfg.all_sites(), folder, max_tokens=cfg.harvest.max_tokens,
                         batch_size=cfg.harvest.batch_size, shard_tokens=cfg.harvest.shard_tokens,
                         seed=cfg.data.seed, progress=progress, details=details)


def _check_store_matches(folder: Path, details: dict) -> None:
    """An existing store in ``folder`` must come from the same texts and settings (else resuming
    or reusing it would mix corpora): a clear error naming what differs."""
    from polysteer.workflows import STORE_MANIFEST, ActivationStore

    if not (folder / STORE_MANIFEST).exists():
        return
    stored = ActivationStore.open(folder).manifest.get("details", {})
    differ = {k: (stored.get(k), v) for k, v in details.items() if stored.get(k) != v}
    if differ:
        what = ", ".join(f"{k}: {a!r} there, {b!r} now" for k, (a, b) in differ.items())
        raise ConfigError(f"{folder} holds a harvest of other data ({what}): set harvest.folder to "
                          "another folder or delete it")


def train_from_config(cfg: DictionaryConfig, adapter: Any, progress: bool = True,
                      output: str | os.PathLike | None = None):
    """Harvest if needed, train, measure loss recovered, save; returns ``(sae, metrics, folder)``
    of the first site this process trained (see :func:`train_sites_from_config`)."""
    trained = train_sites_from_config(cfg, adapter, progress, output)
    if not trained:
        raise ConfigError(f"this process (rank of {len(cfg.all_sites())} site(s)) trained no site")
    _, sae, metrics, folder = trained[0]
    return sae, metrics, folder


def train_sites_from_config(cfg: DictionaryConfig, adapter: Any, progress: bool = True,
                            output: str | os.PathLike | None = None
                            ) -> list[tuple[str, Any, dict[str, Any], Path | None]]:
    """Train every site of ``cfg``; returns ``[(site, sae, metrics, saved folder)]`` of this process.

    One site: under torchrun all ranks train it together (DistributedDataParallel) and rank 0
    measures and saves (the other ranks get folder ``None``). Several sites: one store holds them
    all and each rank trains its share (:func:`~polysteer.workflows.split_sites`), saved in
    ``OUTPUT/SITE``. With ``harvest.stream`` nothing is stored: rows come from the model.
    """
    from polysteer.workflows import barrier, dist_info, split_sites, train_sae

    info = dist_info()
    sites = cfg.all_sites()
    _, held = load_texts(cfg.data, progress=False)
    if cfg.harvest.stream:
        if len(sites) > 1:
            raise ConfigError("harvest.stream trains one site at a time; list one site or set "
                              "harvest.stream=false")
        texts, _ = load_texts(cfg.data, progress and info.is_main)
        source: Any = text_stream(adapter, texts, cfg.site, max_tokens=cfg.harvest.max_tokens,
                                  batch_size=cfg.harvest.batch_size, seed=cfg.data.seed,
                                  buffer_rows=cfg.harvest.buffer_rows)
        tokens: Any = "streamed"
    else:
        source = harvest_from_config(cfg, adapter, progress)
        tokens = {s: source.n_tokens(s) for s in sites}
    mine = sites if len(sites) == 1 else split_sites(sites, info)
    base = Path(output) if output else cfg.output_folder()
    results = []
    for site in mine:
        _say(f"training {site} on {tokens if isinstance(tokens, str) else tokens[site]} tokens"
             + (f" ({info.world} processes)" if info.world > 1 and len(sites) == 1 else ""),
             progress and (info.is_main or len(sites) > 1))
        sae, metrics = train_sae(source, cfg.train, site=site, model=adapter.model_fingerprint,
                                 progress=progress and (info.is_main or len(sites) > 1),
                                 parallel=None if len(sites) == 1 else False,
                                 details={"name": cfg.name, "description": cfg.description,
                                          "data": dataclasses.asdict(cfg.data),
                                          "harvest": {**dataclasses.asdict(cfg.harvest),
                                                      "tokens": tokens if isinstance(tokens, str)
                                                      else tokens[site]},
                                          "processes": info.world})
        folder: Path | None = None
        if len(sites) > 1 or info.is_main:
            if held:
                lr = text_loss_recovered(adapter, sae, site, held, cfg.harvest.max_tokens)
                metrics.update({f"loss_{k}" if k != "loss_recovered" else k: v
                                for k, v in lr.items()})
                sae.info.details["metrics"].update({k: metrics[k] for k in
                                                    ("loss_clean", "loss_zero", "loss_spliced",
                                                     "loss_recovered")})
            folder = base if len(sites) == 1 else base / site
            sae.save(folder, dtype=getattr(torch, cfg.save_dtype))
        results.append((site, sae, metrics, folder))
    barrier()
    return results


REPORTED = ("fve", "l0", "dead_fraction", "eval_dead_fraction", "loss_clean", "loss_zero",
            "loss_spliced", "loss_recovered", "tokens", "tokens_per_second", "seconds")


def summary(metrics: dict[str, Any]) -> Iterator[str]:
    """``key: value`` lines of the metrics worth printing."""
    for key in REPORTED:
        if key in metrics:
            value = metrics[key]
            yield f"{key:>20}: {value:.4f}" if isinstance(value, float) else f"{key:>20}: {value}"
