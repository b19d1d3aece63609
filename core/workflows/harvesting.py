"""Harvest activations to disk: sharded fp16 safetensors, a JSON manifest, resumable.

An :class:`ActivationStore` is a folder::

    manifest.json              sites, d_in, dtype, shards with token counts, model, done, items_done
    shard-00000.safetensors    one tensor per site, (rows, d_in) fp16
    shard-00001.safetensors    ...

Rows are buffered in memory and become durable on :meth:`ActivationStore.commit`, which says how
many input items (texts, images, clips) they came from. A shard is written (atomically) once a
site's buffer holds ``shard_tokens`` rows, and only then is the manifest rewritten (atomically) with
the new shard and item count. An interruption therefore loses at most the uncommitted buffer, and
``items_done`` tells the caller exactly which inputs to skip: no duplicated and no lost rows.

:func:`harvest` drives a model over batches of inputs with :func:`polysteer.steer` capturing the
sites; it stops each forward pass right after the deepest requested site. Everything here sees
``(N, C)`` rows only, so it serves every modality.

The modality parts come from plugins as two registered, typed pieces (hooks
``polysteer_register_renderers`` and ``polysteer_register_row_selectors``):

* a :class:`Renderer` runs one batch of inputs (texts, avatar conditions, images, sentences)
  through the model and records in a :class:`Rendered` what the rows need (an attention mask,
  the generated images, phoneme durations);
* a :data:`RowSelector` turns a captured activation into :class:`Rows`: the ``(N, C)`` rows to
  keep (no padding or sinks, pooled per image, per phoneme...), which example each row came from,
  per-row values, and the norms a site-norm estimate reads.

:func:`harvest` streams the rows into an :class:`ActivationStore`; :func:`collect` keeps them in
memory (a :class:`Harvested`) for concept building and labelling. Measured attributes (hook
``polysteer_register_attributes``) add per-row values computed from what was rendered.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from polysteer.errors import CorruptFileError
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.io.fileio import read_json, write_json, write_tensors

FORMAT = "polysteer-activations"
VERSION = 1
STORE_MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 65_536

RowFilter = Callable[[torch.Tensor, Any], torch.Tensor]
"""``row_filter(activation (B, P, C), forward_result) -> rows (N, C)``."""


# -- the modality parts: renderers and row selectors ----------------------------------------------
@dataclass
class Rendered:
    """One batch of inputs as a renderer ran it: what the model made and what row selection needs.

    The harvest creates it with ``inputs`` and hands it to :meth:`Renderer.render`, which fills in
    what it knows *before* running the model (e.g. ``mask``), so that it is there even when the
    pass is cut short after the deepest captured site.
    """

    inputs: Sequence[Any]
    """The batch, as the data source yielded it."""
    adapter: Any = None
    """The model adapter that ran it (attributes read e.g. its sample rate)."""
    outputs: Any = None
    """What the model generated (images, waveforms); ``None`` when the pass was cut short."""
    mask: torch.Tensor | None = None
    """``(B, P)`` bool: the positions that are real input (text tokens), when some are padding."""
    info: dict[str, Any] = field(default_factory=dict)
    """Anything else a modality's selectors or attributes read (durations, frames, lengths)."""


@runtime_checkable
class Renderer(Protocol):
    """Runs a batch of inputs through a model (the capture is installed around :meth:`render`).

    ``stop_early``: the harvest may cut the pass short after the deepest captured site (only for
    renderers whose row selection needs nothing from the model's outputs). A renderer may run the
    model several times per batch (e.g. once per denoising step): the captured activations of
    those passes are stacked, ``(passes, B, P, C)``.
    """

    stop_early: bool

    def render(self, adapter: Any, rendered: Rendered) -> None:
        """Run ``rendered.inputs`` through ``adapter``'s model, filling in ``rendered``."""


@dataclass
class Rows:
    """The rows a selector kept from one captured activation of a batch."""

    rows: torch.Tensor
    """``(N, C)`` activations."""
    example: torch.Tensor
    """``(N,)`` long: which input of the batch each row came from."""
    values: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-row values (``(N,)`` each), e.g. a measure of the frame a row became."""
    norms: torch.Tensor | None = None
    """Activation norms a site's typical norm is estimated from (default: the rows' norms)."""

    def site_norms(self) -> torch.Tensor:
        """The norms a site-norm estimate reads."""
        return self.norms if self.norms is not None else self.rows.float().norm(dim=-1)


RowSelector = Callable[[torch.Tensor, Rendered], Rows]
"""``select(activation, rendered) -> Rows``; the activation is ``(B, P, C)``, or
``(steps, B, P, C)`` for a multi-step generation or a renderer running several passes."""

Attribute = Callable[[Rendered, Rows], torch.Tensor]
"""``attribute(rendered, rows) -> (N,)``: a measured value per kept row (per image, per phoneme)."""


def _every_row(acts: torch.Tensor) -> torch.Tensor:
    """``(B,)`` example index of every position of a ``(B, P, C)`` or ``(S, B, P, C)`` activation."""
    b, p = acts.shape[-3], acts.shape[-2]
    example = torch.arange(b).repeat_interleave(p)
    return example.repeat(acts.shape[0]) if acts.ndim == 4 else example


def all_positions() -> RowSelector:
    """Selector ``all``: every position of every example (and step), flattened."""
    def select(acts: torch.Tensor, _rendered: Rendered) -> Rows:
        return Rows(acts.reshape(-1, acts.shape[-1]), _every_row(acts))
    return select


def skip_first() -> RowSelector:
    """Selector ``skip-first``: every position but the first of each example (an attention sink in
    most language models), the default row filter of :func:`harvest`."""
    def select(acts: torch.Tensor, _rendered: Rendered) -> Rows:
        kept = acts[..., 1:, :] if acts.shape[-2] > 1 else acts
        return Rows(kept.reshape(-1, acts.shape[-1]), _every_row(kept))
    return select


def _registry(attribute: str, plugins: Any = None) -> Any:
    from polysteer.plugin.manager import current_plugin_manager

    return (plugins or current_plugin_manager()).registry(attribute)


def renderer(name: str, plugins: Any = None, **options: Any) -> Renderer:
    """The registered renderer ``name`` built with ``options`` (e.g. ``renderer("text", max_tokens=64)``)."""
    return _registry("renderers", plugins).get(name)(**options)


def row_selector(name: str, plugins: Any = None, **options: Any) -> RowSelector:
    """The registered row selector ``name`` built with ``options``."""
    return _registry("row_selectors", plugins).get(name)(**options)


def attribute(name: str, plugins: Any = None, **options: Any) -> Attribute:
    """The registered measured attribute ``name`` built with ``options``."""
    return _registry("attributes", plugins).get(name)(**options)


class ActivationStore:
    """Activations of one or more sites of a model, streamed to disk in shards.

    Create with :meth:`create`, reopen with :meth:`open` (e.g. to resume an interrupted harvest:
    skip the first :attr:`items_done` inputs). Read with :meth:`iter_batches`.
    """

    def __init__(self, folder: Path, manifest: dict):
        self.folder = folder
        self.manifest = manifest
        self._buffers: dict[str, list[torch.Tensor]] = {s: [] for s in manifest["sites"]}
        self._buffered: dict[str, int] = dict.fromkeys(manifest["sites"], 0)
        self._pending_items = 0

    # -- creating and opening -----------------------------------------------------------------
    @staticmethod
    def create(folder: str | os.PathLike, sites: Sequence[str], d_in: int, *,
               shard_tokens: int = DEFAULT_SHARD_TOKENS, model: ModelFingerprint | None = None,
               details: dict | None = None) -> ActivationStore:
        """Start an empty store in ``folder``; an existing store there is an error (use :meth:`open`)."""
        folder = Path(folder)
        if (folder / STORE_MANIFEST).exists():
            raise FileExistsError(f"{folder} already holds an activation store: open it with "
                                  "ActivationStore.open (to resume) or choose another folder")
        if not sites or len(set(sites)) != len(sites):
            raise ValueError(f"sites must be distinct and non-empty, got {list(sites)}")
        if d_in <= 0 or shard_tokens <= 0:
            raise ValueError(f"d_in and shard_tokens must be positive, got {d_in}, {shard_tokens}")
        manifest = {"format": FORMAT, "version": VERSION, "sites": list(sites), "d_in": int(d_in),
                    "dtype": "float16", "shard_tokens": int(shard_tokens),
                    "model": model.to_json() if model else None, "done": False, "items_done": 0,
                    "shards": [], "details": dict(details or {})}
        store = ActivationStore(folder, manifest)
        store._write_manifest()
        return store

    @staticmethod
    def open(folder: str | os.PathLike) -> ActivationStore:
        """Open an existing store; a damaged manifest or shard list is a :class:`CorruptFileError`."""
        folder = Path(folder)
        manifest = read_json(folder / STORE_MANIFEST)
        _validate_manifest(manifest, folder)
        return ActivationStore(folder, manifest)

    # -- properties -----------------------------------------------------------------------------
    @property
    def sites(self) -> list[str]:
        return list(self.manifest["sites"])

    @property
    def d_in(self) -> int:
        return int(self.manifest["d_in"])

    @property
    def done(self) -> bool:
        """True once :meth:`finish` ran: the corpus was harvested completely."""
        return bool(self.manifest["done"])

    @property
    def items_done(self) -> int:
        """Input items whose rows are on disk; a resumed harvest skips this many inputs."""
        return int(self.manifest["items_done"])

    @property
    def model(self) -> ModelFingerprint | None:
        data = self.manifest["model"]
        return ModelFingerprint.from_json(data) if data else None

    def n_tokens(self, site: str) -> int:
        """Rows of ``site`` on disk (committed and flushed)."""
        self._check_site(site)
        return sum(int(s["tokens"][site]) for s in self.manifest["shards"])

    def buffered(self, site: str) -> int:
        """Rows of ``site`` added but not yet written to a shard."""
        self._check_site(site)
        return self._buffered[site]

    # -- writing --------------------------------------------------------------------------------
    def add(self, site: str, rows: torch.Tensor) -> None:
        """Buffer ``(N, d_in)`` rows of ``site``; they reach disk after :meth:`commit`."""
        self._check_site(site)
        if self.done:
            raise ValueError(f"{self.folder}: the store is finished; create a new one to add rows")
        if rows.ndim != 2 or rows.shape[1] != self.d_in:
            raise ValueError(f"rows for {site!r} must be (N, {self.d_in}), got {tuple(rows.shape)}")
        if len(rows):
            self._buffers[site].append(rows.detach().to("cpu", torch.float16))
            self._buffered[site] += len(rows)

    def commit(self, items: int = 1) -> None:
        """Mark the rows added so far as coming from ``items`` more inputs; flush a full buffer.

        Call it between inputs, never in the middle of one, so that a shard never holds part of
        an input's rows (that is what makes resuming exact).
        """
        self._pending_items += int(items)
        if max(self._buffered.values()) >= self.manifest["shard_tokens"]:
            self.flush()

    def flush(self) -> None:
        """Write the committed buffer as one shard, then record it (and the items) in the manifest."""
        if not any(self._buffered.values()):
            if self._pending_items:
                self.manifest["items_done"] += self._pending_items
                self._pending_items = 0
                self._write_manifest()
            return
        name = f"shard-{len(self.manifest['shards']):05d}.safetensors"
        tensors = {s: (torch.cat(b) if b else torch.empty(0, self.d_in, dtype=torch.float16))
                   for s, b in self._buffers.items()}
        # the shard first: a crash before the manifest update leaves an unlisted file that the
        # next flush overwrites, and items_done still points at the inputs to redo
        write_tensors(self.folder / name, tensors)
        self.manifest["shards"].append({"file": name, "tokens": dict(self._buffered)})
        self.manifest["items_done"] += self._pending_items
        self._write_manifest()
        self._buffers = {s: [] for s in self.sites}
        self._buffered = dict.fromkeys(self.sites, 0)
        self._pending_items = 0

    def finish(self) -> None:
        """Flush what is left and mark the harvest complete."""
        self.flush()
        self.manifest["done"] = True
        self._write_manifest()

    # -- reading --------------------------------------------------------------------------------
    def iter_batches(self, site: str, batch_size: int, shuffle_seed: int | None = None, *,
                     dtype: torch.dtype = torch.float32, drop_last: bool = False
                     ) -> Iterator[torch.Tensor]:
        """Yield ``(batch_size, d_in)`` batches of ``site``, reading one shard at a time.

        With ``shuffle_seed`` the shard order and the rows within each shard (together with the
        previous shard's leftover) are shuffled deterministically; memory stays about one shard.
        """
        self._check_site(site)
        shards = list(self.manifest["shards"])
        g = torch.Generator().manual_seed(shuffle_seed) if shuffle_seed is not None else None
        if g is not None:
            shards = [shards[i] for i in torch.randperm(len(shards), generator=g).tolist()]
        leftover = torch.empty(0, self.d_in, dtype=dtype)
        for shard in shards:
            rows = torch.cat([leftover, self._read_shard(shard, site).to(dtype)])
            if g is not None:
                rows = rows[torch.randperm(len(rows), generator=g)]
            usable = len(rows) - len(rows) % batch_size
            yield from rows[:usable].split(batch_size)
            leftover = rows[usable:]
        if len(leftover) and not drop_last:
            yield leftover

    def read_all(self, site: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Every row of ``site`` in one tensor (for small stores and tests)."""
        parts = [self._read_shard(s, site).to(dtype) for s in self.manifest["shards"]]
        return torch.cat(parts) if parts else torch.empty(0, self.d_in, dtype=dtype)

    def _read_shard(self, shard: dict, site: str) -> torch.Tensor:
        path = self.folder / shard["file"]
        if not path.exists():
            raise CorruptFileError(f"{self.folder}: the manifest lists {shard['file']} but it is "
                                   "missing; harvest again into a new folder")
        try:
            with safe_open(str(path), framework="pt") as f:
                rows = f.get_tensor(site)
        except (SafetensorError, OSError, ValueError, KeyError) as err:
            raise CorruptFileError(f"{path} is not a readable activation shard ({err}); the file is "
                                   "damaged: harvest again into a new folder") from err
        expected = (int(shard["tokens"][site]), self.d_in)
        if tuple(rows.shape) != expected:
            raise CorruptFileError(f"{path}: {site!r} has shape {tuple(rows.shape)} but the "
                                   f"manifest says {expected}; harvest again into a new folder")
        return rows

    # -- internals ------------------------------------------------------------------------------
    def _check_site(self, site: str) -> None:
        if site not in self._buffered:
            raise KeyError(f"site {site!r} is not in this store (sites: {self.sites})")

    def _write_manifest(self) -> None:
        write_json(self.folder / STORE_MANIFEST, self.manifest)


def _validate_manifest(manifest: Any, folder: Path) -> None:
    """Raise :class:`CorruptFileError` unless ``manifest`` has the shape :meth:`create` writes."""
    try:
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise ValueError("not a polysteer activation manifest")
        sites = manifest["sites"]
        if not isinstance(sites, list) or not sites or int(manifest["d_in"]) <= 0:
            raise ValueError("bad sites or d_in")
        int(manifest["items_done"]), int(manifest["shard_tokens"]), bool(manifest["done"])
        for shard in manifest["shards"]:
            if not isinstance(shard["file"], str) or set(shard["tokens"]) != set(sites):
                raise ValueError(f"bad shard entry {shard}")
            if any(int(n) < 0 for n in shard["tokens"].values()):
                raise ValueError(f"negative token count in {shard}")
    except (KeyError, TypeError, ValueError) as err:
        raise CorruptFileError(f"{folder / STORE_MANIFEST} is not a valid activation manifest ({err}); "
                               "harvest again into a new folder") from err


# -- the driver ----------------------------------------------------------------------------------
class _StopForward(Exception):
    """Raised after the deepest requested site captured: the rest of the model is not needed."""


def skip_first_position(acts: torch.Tensor, _result: Any = None) -> torch.Tensor:
    """Default row filter: drop position 0 (an attention sink in most LMs), flatten to ``(N, C)``."""
    if acts.ndim == 3 and acts.shape[1] > 1:
        acts = acts[:, 1:]
    return acts.reshape(-1, acts.shape[-1])


def _stop_after(adapter: Any, sites: Sequence[str]) -> Any:
    """Install a hook that raises :class:`_StopForward` once the deepest site has been seen.

    It is installed after the steering context's own hooks, so on the same module it runs after
    the capture. Returns the hook handle (remove it when done).
    """
    order = {s: i for i, s in enumerate(adapter.sites())}
    deepest = max(sites, key=lambda s: order.get(s, -1))
    binding = adapter.bind(deepest)

    def stop(*_args: Any, **_kwargs: Any) -> None:
        raise _StopForward

    if binding.hook == "output":
        return binding.module.register_forward_hook(stop)
    return binding.module.register_forward_pre_hook(stop)


def _remaining(batches: Iterable[Sequence[Any]], skip: int) -> Iterator[tuple[Sequence[Any], int]]:
    """Batches with the first ``skip`` items left out (a straddling batch is sliced)."""
    for batch in batches:
        n = len(batch)
        if skip >= n:
            skip -= n
            continue
        yield (batch[skip:] if skip else batch), n - skip
        skip = 0


def capture_batch(adapter: Any, sites: Sequence[str], forward: Callable[[Sequence[Any]], Any],
                  batch: Sequence[Any], *, stop_early: bool = True) -> tuple[Any, Any]:
    """``(steering context, forward's result)`` after running ``forward(batch)`` capturing ``sites``.

    Read activations with ``context.captured(site)``. With ``stop_early`` the pass is cut short
    after the deepest site and the result is ``None``.
    """
    from polysteer.steering.runtime import steer

    result = None
    with steer(adapter, None, capture=sites) as run:
        handle = _stop_after(adapter, sites) if stop_early else None
        try:
            result = forward(batch)
        except _StopForward:
            pass
        finally:
            if handle is not None:
                handle.remove()
    return run, result


class _ForwardRenderer:
    """A plain ``forward(batch)`` callable as a :class:`Renderer` (its result becomes ``outputs``)."""

    def __init__(self, forward: Callable[[Sequence[Any]], Any], stop_early: bool):
        self.forward, self.stop_early = forward, stop_early

    def render(self, adapter: Any, rendered: Rendered) -> None:
        rendered.outputs = self.forward(rendered.inputs)


def render_batch(adapter: Any, sites: Sequence[str], render: Renderer, batch: Sequence[Any], *,
                 stop_early: bool | None = None) -> tuple[dict[str, torch.Tensor], Rendered]:
    """``({site: activation}, rendered)`` after ``render`` ran ``batch`` capturing ``sites``.

    A renderer that ran the model several times (one generation each) gets its passes stacked,
    ``(passes, B, P, C)``. ``stop_early`` defaults to the renderer's own ``stop_early``.
    """
    rendered = Rendered(batch, adapter)
    stop = render.stop_early if stop_early is None else stop_early
    run, _ = capture_batch(adapter, sites, lambda _b: render.render(adapter, rendered), batch,
                           stop_early=stop)
    passes = len(run.clock.generations)
    if passes == 0:
        raise ValueError(f"renderer {type(render).__name__} ran no forward pass of the model on a "
                         f"batch of {len(batch)}: nothing was captured")
    acts = {s: run.captured(s) if passes == 1 else
            torch.stack([run.captured(s, g) for g in range(passes)]) for s in sites}
    return acts, rendered


@dataclass
class Harvested:
    """Rows of every site kept in memory (:func:`collect`), with where each row came from."""

    sites: list[str]
    items: int
    """How many inputs were read."""
    rows: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per site, the kept ``(N, C)`` rows (float32, CPU), in input order."""
    example: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per site, ``(N,)``: the index (in the data source's order) of the input each row came from."""
    values: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    """Per site, per name, ``(N,)`` values: the selector's and the measured attributes'."""
    norms: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per site, the activation norms its typical norm is estimated from."""
    outputs: list[Any] = field(default_factory=list)
    """Per batch, what the renderer generated (``None`` for passes cut short)."""

    def _split(self, site: str, tensor: torch.Tensor) -> list[torch.Tensor]:
        order = torch.argsort(self.example[site], stable=True)
        counts = torch.bincount(self.example[site], minlength=self.items).tolist()
        return list(tensor[order].split(counts))

    def per_example(self, site: str) -> list[torch.Tensor]:
        """Per input, its ``(rows, C)`` rows at ``site`` (empty where none were kept)."""
        return self._split(site, self.rows[site])

    def per_example_values(self, site: str, name: str) -> list[torch.Tensor]:
        """Per input, its rows' values ``name`` at ``site``."""
        return self._split(site, self.values[site][name])

    def example_means(self, site: str) -> torch.Tensor:
        """``(items, C)``: the mean row of each input (inputs without rows are an error)."""
        parts = self.per_example(site)
        if any(len(p) == 0 for p in parts):
            raise ValueError(f"some inputs kept no rows at {site!r}; their mean is undefined")
        return torch.stack([p.mean(0) for p in parts])

    def site_norm(self, site: str) -> float:
        """Median of the harvested activation norms at ``site``: its typical norm."""
        value = self.norms[site].float().median().item()
        if not value > 0 or value == float("inf"):
            raise ValueError(f"activations at {site!r} have no finite non-zero norm; check the inputs")
        return value


def collect(adapter: Any, batches: Iterable[Sequence[Any]], sites: Sequence[str], *,
            renderer: Renderer, rows: RowSelector, attributes: Mapping[str, Attribute] | None = None,
            stop_early: bool | None = None, total_items: int | None = None, progress: bool = False,
            desc: str = "harvesting") -> Harvested:
    """Run ``renderer`` over ``batches`` capturing ``sites``; keep the selected rows in memory.

    Each batch's captured activation goes through ``rows``; every ``attributes`` entry adds a
    measured value per kept row. Row ``example`` indices count inputs across batches, so
    :meth:`Harvested.per_example` gives each input's rows in the data source's order.
    """
    attributes = dict(attributes or {})
    out = Harvested(list(sites), 0)
    parts: dict[str, dict[str, list[torch.Tensor]]] = {
        s: {"rows": [], "example": [], "norms": []} for s in sites}
    values: dict[str, dict[str, list[torch.Tensor]]] = {s: {} for s in sites}
    bar = tqdm(total=total_items, desc=desc, unit="item", disable=not progress, leave=False)
    with bar, torch.no_grad():
        for batch in batches:
            acts, rendered = render_batch(adapter, sites, renderer, batch, stop_early=stop_early)
            for site in sites:
                kept = rows(acts[site].detach().float().cpu(), rendered)
                measured = {**kept.values, **{n: a(rendered, kept) for n, a in attributes.items()}}
                parts[site]["rows"].append(kept.rows)
                parts[site]["example"].append(kept.example.long() + out.items)
                parts[site]["norms"].append(kept.site_norms().reshape(-1))
                for name, value in measured.items():
                    values[site].setdefault(name, []).append(value.reshape(-1).float().cpu())
            out.outputs.append(rendered.outputs)
            out.items += len(batch)
            bar.update(len(batch))
    for site in sites:
        out.rows[site], out.example[site], out.norms[site] = (
            torch.cat(parts[site][k]) for k in ("rows", "example", "norms"))
        out.values[site] = {n: torch.cat(v) for n, v in values[site].items()}
    return out


def harvest(adapter: Any, batches: Iterable[Sequence[Any]], sites: Sequence[str],
            folder: str | os.PathLike, *, forward: Callable[[Sequence[Any]], Any] | None = None,
            row_filter: RowFilter = skip_first_position, renderer: Renderer | None = None,
            rows: RowSelector | None = None, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            total_items: int | None = None, stop_early: bool = True, progress: bool = True,
            details: dict | None = None) -> ActivationStore:
    """Run the model over ``batches`` and store the activations of ``sites`` in ``folder``.

    The model is run either by a registered-style ``renderer`` with a ``rows`` selector (see
    :func:`collect`), or by a plain ``forward(batch)`` whose result ``row_filter(activation,
    result)`` reads to turn the captured ``(B, P, C)`` activation into ``(N, C)`` rows.
    ``batches`` yields sequences of inputs (len = items in the batch). If ``folder`` already holds
    an unfinished store for the same sites and model, the harvest resumes: the first
    ``items_done`` inputs are skipped. With ``stop_early`` the forward pass is cut short after the
    deepest site (``forward``'s result is then ``None``, so a filter needing it must get what it
    needs another way, or pass ``stop_early=False``; a renderer records what its rows need before
    running the model).
    """
    if (renderer is None) == (forward is None):
        raise ValueError("harvest needs either renderer= (with rows=) or forward=, not both")
    if renderer is None:
        renderer = _ForwardRenderer(forward, stop_early)  # type: ignore[arg-type]
        rows = _filter_rows(row_filter)
    elif rows is None:
        raise ValueError("harvest with a renderer needs rows= (a row selector)")
    else:
        stop_early = stop_early and renderer.stop_early
    store = _open_or_create(adapter, sites, folder, shard_tokens, details)
    if store.done:
        return store
    bar = tqdm(total=total_items, initial=store.items_done, desc="harvesting", unit="item",
               disable=not progress)
    with bar:
        for batch, items in _remaining(batches, store.items_done):
            acts, rendered = render_batch(adapter, sites, renderer, batch, stop_early=stop_early)
            for site in sites:
                store.add(site, rows(acts[site], rendered).rows)
            store.commit(items)
            bar.update(items)
            bar.set_postfix(tokens=store.n_tokens(sites[0]) + store.buffered(sites[0]))
    store.finish()
    return store


def _filter_rows(row_filter: RowFilter) -> RowSelector:
    """A plain ``row_filter(activation, forward_result)`` as a selector (no example indices)."""
    def select(acts: torch.Tensor, rendered: Rendered) -> Rows:
        kept = row_filter(acts, rendered.outputs)
        return Rows(kept, torch.zeros(len(kept), dtype=torch.long))
    return select


def _open_or_create(adapter: Any, sites: Sequence[str], folder: str | os.PathLike,
                    shard_tokens: int, details: dict | None) -> ActivationStore:
    """Resume the store in ``folder`` if it matches, else start one; a mismatch is an error."""
    folder = Path(folder)
    model = adapter.model_fingerprint
    if not (folder / STORE_MANIFEST).exists():
        d_in = {adapter.bind(s).channels for s in sites}
        if len(d_in) != 1:
            raise ValueError(f"sites {list(sites)} have different widths {sorted(d_in)}: harvest "
                             "them into separate stores")
        return ActivationStore.create(folder, sites, d_in.pop(), shard_tokens=shard_tokens,
                                      model=model, details=details)
    store = ActivationStore.open(folder)
    same_model = store.model is None or store.model.matches(model)
    if store.sites != list(sites) or not same_model:
        raise ValueError(f"{folder} holds a harvest of {store.sites} on "
                         f"{store.model.short() if store.model else 'another model'}; it cannot be "
                         f"resumed for {list(sites)} on {model.short()}: choose another folder")
    return store

