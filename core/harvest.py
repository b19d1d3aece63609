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
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm

from polysteer.errors import CorruptFileError
from polysteer.fileio import read_json, write_json, write_tensors
from polysteer.fingerprint import ModelFingerprint

FORMAT = "polysteer-activations"
VERSION = 1
MANIFEST = "manifest.json"
DEFAULT_SHARD_TOKENS = 65_536

RowFilter = Callable[[torch.Tensor, Any], torch.Tensor]
"""``row_filter(activation (B, P, C), forward_result) -> rows (N, C)``."""


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
        if (folder / MANIFEST).exists():
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
        manifest = read_json(folder / MANIFEST)
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
        write_json(self.folder / MANIFEST, self.manifest)


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
        raise CorruptFileError(f"{folder / MANIFEST} is not a valid activation manifest ({err}); "
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
    from polysteer.runtime import steer

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


def harvest(adapter: Any, batches: Iterable[Sequence[Any]], sites: Sequence[str],
            folder: str | os.PathLike, *, forward: Callable[[Sequence[Any]], Any],
            row_filter: RowFilter = skip_first_position, shard_tokens: int = DEFAULT_SHARD_TOKENS,
            total_items: int | None = None, stop_early: bool = True, progress: bool = True,
            details: dict | None = None) -> ActivationStore:
    """Run ``forward(batch)`` over ``batches`` and store the activations of ``sites`` in ``folder``.

    ``batches`` yields sequences of inputs (len = items in the batch); ``forward`` runs the model
    on one batch and returns whatever ``row_filter(activation, result)`` needs (e.g. a padding
    mask) to turn the captured ``(B, P, C)`` activation into ``(N, C)`` rows. If ``folder``
    already holds an unfinished store for the same sites and model, the harvest resumes: the
    first ``items_done`` inputs are skipped. With ``stop_early`` the forward pass is cut short
    after the deepest site (``forward``'s result is then ``None``, so a filter needing it must
    get what it needs another way, or pass ``stop_early=False``).
    """
    store = _open_or_create(adapter, sites, folder, shard_tokens, details)
    if store.done:
        return store
    bar = tqdm(total=total_items, initial=store.items_done, desc="harvesting", unit="item",
               disable=not progress)
    with bar:
        for batch, items in _remaining(batches, store.items_done):
            run, result = capture_batch(adapter, sites, forward, batch, stop_early=stop_early)
            for site in sites:
                store.add(site, row_filter(run.captured(site), result))
            store.commit(items)
            bar.update(items)
            bar.set_postfix(tokens=store.n_tokens(sites[0]) + store.buffered(sites[0]))
    store.finish()
    return store


def _open_or_create(adapter: Any, sites: Sequence[str], folder: str | os.PathLike,
                    shard_tokens: int, details: dict | None) -> ActivationStore:
    """Resume the store in ``folder`` if it matches, else start one; a mismatch is an error."""
    folder = Path(folder)
    model = adapter.model_fingerprint
    if not (folder / MANIFEST).exists():
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

