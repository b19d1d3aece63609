"""Harvest and SAE training over several processes: torchrun and DistributedDataParallel.

polysteer schedules nothing itself: ``torchrun`` starts the processes and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous; this module reads them.

* :func:`init_distributed` joins the process group torchrun describes (``gloo`` on the CPU,
  ``nccl`` on CUDA GPUs); without torchrun it does nothing and everything runs in one process.
* :func:`harvest_sharded` splits a corpus (a list of batches) into one contiguous block of
  batches per rank. Each rank harvests its block into its own resumable store,
  ``FOLDER/ranks/rank-RRRRR-of-WWWWW/``; after a barrier rank 0 writes ``FOLDER/manifest.json``
  (atomically) listing every rank's shards in rank order. The result is one
  :class:`~polysteer.workflows.ActivationStore` whose rows are exactly the rows one process would
  have stored, in the same order: no lost and no duplicated rows. An interrupted run is resumed by
  the same command with the same number of processes; each rank skips what it already stored.
* :func:`~polysteer.workflows.train_sae` trains with DistributedDataParallel when a process group
  is up: every rank reads the same shuffled stream of global batches and trains on its slice of
  each, gradients are averaged, so the run is the single-process run up to floating-point
  summation order. Dead-feature counts and resampling use the whole global batch.
* :func:`split_sites` spreads several sites over the ranks (each rank trains its sites alone).
* :class:`ActivationStream` is the streaming mode: rows come straight from the model (each rank
  runs its own part of the corpus) and are never written to disk.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from polysteer.errors import ConfigError

RANKS_DIR = "ranks"


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world`` (1 without torchrun), its ``local_rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        """True when a process group with more than one process is up."""
        return self.world > 1 and _initialised()

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _initialised() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def dist_info() -> DistInfo:
    """This process's rank and world size (from the process group, else torchrun's variables)."""
    if _initialised():
        import torch.distributed as dist

        return DistInfo(dist.get_rank(), dist.get_world_size(),
                        int(os.environ.get("LOCAL_RANK", "0")))
    env = os.environ
    return DistInfo(int(env.get("RANK", "0")), int(env.get("WORLD_SIZE", "1")),
                    int(env.get("LOCAL_RANK", "0")))


def init_distributed(device: str | torch.device | None = None) -> DistInfo:
    """Join the process group torchrun describes (idempotent); a no-op in a single process.

    The backend is ``nccl`` when ``device`` is a CUDA device, else ``gloo``.
    """
    info = dist_info()
    if info.world <= 1 or _initialised():
        return info
    import torch.distributed as dist

    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; run in one process or "
                          "install a torch build with distributed support")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(info.local_rank % torch.cuda.device_count())
    dist.init_process_group(backend=backend)
    return dist_info()


def barrier() -> None:
    """Wait for every rank (nothing to wait for in one process)."""
    if _initialised():
        import torch.distributed as dist

        dist.barrier()


def all_reduce(tensor: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """``tensor`` reduced over ranks in place (``sum`` or ``max``); unchanged in one process."""
    if _initialised():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
    return tensor


def all_gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``(n, ...)`` tensor (same shape on every rank) concatenated in rank order."""
    if not _initialised():
        return tensor
    import torch.distributed as dist

    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


def shutdown_distributed() -> None:
    """Leave the process group (after the last collective)."""
    if _initialised():
        import torch.distributed as dist

        dist.destroy_process_group()


# -- splitting work ------------------------------------------------------------------------------
def rank_block(n: int, rank: int, world: int) -> range:
    """The contiguous block of ``range(n)`` rank ``rank`` of ``world`` takes (sizes differ by <= 1)."""
    base, extra = divmod(n, world)
    start = rank * base + min(rank, extra)
    return range(start, start + base + (1 if rank < extra else 0))


def split_sites(sites: Sequence[str], info: DistInfo | None = None) -> list[str]:
    """The sites this rank trains when several are trained at once: ``sites[rank::world]``."""
    info = info or dist_info()
    return list(sites)[info.rank::info.world]


def rank_folder(folder: str | os.PathLike, rank: int, world: int) -> Path:
    """Where rank ``rank`` of ``world`` keeps its part of a sharded store."""
    return Path(folder) / RANKS_DIR / f"rank-{rank:05d}-of-{world:05d}"


def harvest_sharded(harvest_fn: Callable[..., Any], batches: Sequence[Sequence[Any]],
                    folder: str | os.PathLike, *, info: DistInfo | None = None,
                    **kwargs: Any) -> Any:
    """Run ``harvest_fn(batches=..., folder=..., total_items=..., **kwargs)`` on this rank's
    block of ``batches`` and, on rank 0 after every rank finished, publish the merged store.

    ``harvest_fn`` is :func:`~polysteer.workflows.harvest` with its model and sites bound. In one
    process it is called on ``folder`` itself (the layout of a single-process store). Returns the
    merged :class:`~polysteer.workflows.ActivationStore` on every rank (the rank's own part when
    ranks run one after another without a process group and rank 0 has not merged yet).
    """
    from polysteer.workflows.harvesting import STORE_MANIFEST, ActivationStore

    info = info or dist_info()
    folder = Path(folder)
    started = sorted(p.name for p in (folder / RANKS_DIR).glob("rank-*")) \
        if (folder / RANKS_DIR).is_dir() else []
    if info.world <= 1:
        if started and not (folder / STORE_MANIFEST).exists():
            raise ConfigError(f"{folder} holds an unfinished harvest of several processes "
                              f"({started[0]}); resume it with torchrun and that many processes, "
                              "or harvest into another folder")
        return harvest_fn(batches=batches, folder=folder,
                          total_items=sum(len(b) for b in batches), **kwargs)
    if (folder / STORE_MANIFEST).exists():
        store = ActivationStore.open(folder)
        if store.done:
            return store
        raise ConfigError(f"{folder} holds an unfinished single-process harvest; resume it with "
                          "one process, or harvest into another folder")
    mine = rank_folder(folder, info.rank, info.world)
    foreign = [n for n in started if not n.endswith(f"-of-{info.world:05d}")]
    if foreign:
        raise ConfigError(f"{folder} holds a harvest started with another number of processes "
                          f"({foreign[0]}); resume it with that many (torchrun --nproc-per-node), "
                          "or harvest into another folder")
    block = list(rank_block(len(batches), info.rank, info.world))
    mine_batches = [batches[i] for i in block]
    details = dict(kwargs.pop("details", None) or {})
    details.update(rank=info.rank, world=info.world,
                   batches=[block[0], block[-1] + 1] if block else [0, 0])
    mine.mkdir(parents=True, exist_ok=True)
    part = harvest_fn(batches=mine_batches, folder=mine,
                      total_items=sum(len(b) for b in mine_batches), details=details, **kwargs)
    barrier()
    if info.is_main:
        merge_rank_stores(folder, info.world)
    barrier()
    if not (folder / STORE_MANIFEST).exists():  # ranks run one by one without a process group
        return part
    return ActivationStore.open(folder)


def merge_rank_stores(folder: str | os.PathLike, world: int) -> Any:
    """Write ``folder/manifest.json`` listing the finished rank stores' shards in rank order."""
    from polysteer.workflows.harvesting import ActivationStore

    folder = Path(folder)
    parts = [ActivationStore.open(rank_folder(folder, r, world)) for r in range(world)]
    unfinished = [p.folder.name for p in parts if not p.done]
    if unfinished:
        raise ConfigError(f"{folder}: rank store(s) {unfinished} are unfinished; run the harvest "
                          "again with the same number of processes to finish them")
    first = parts[0].manifest
    for p in parts[1:]:
        if p.sites != parts[0].sites or p.d_in != parts[0].d_in:
            raise ConfigError(f"{folder}: the rank stores hold different sites or widths; "
                              "harvest into a new folder")
    details = {k: v for k, v in first.get("details", {}).items()
               if k not in ("rank", "batches")}
    details["world"] = world
    manifest = {**first, "details": details, "done": True,
                "items_done": sum(p.items_done for p in parts),
                "shards": [{**s, "file": f"{p.folder.relative_to(folder).as_posix()}/{s['file']}"}
                           for p in parts for s in p.manifest["shards"]]}
    store = ActivationStore(folder, manifest)
    store._write_manifest()  # atomic (write_json replaces the file in one rename)
    return store


# -- streaming: rows straight from the model ------------------------------------------------------
class ActivationStream:
    """Rows of one site produced by running the model, never stored (streaming SAE training).

    ``batches`` is the whole corpus (a list of input batches); each rank runs only its contiguous
    block. ``produce(batch) -> (N, C) rows`` runs the model on one batch (e.g. with
    :func:`~polysteer.workflows.harvesting.render_batch` and a row selector). Rows are shuffled in
    a buffer of ``buffer_rows`` before they are cut into training batches.
    """

    def __init__(self, batches: Sequence[Sequence[Any]], produce: Callable[[Sequence[Any]], torch.Tensor],
                 *, d_in: int, buffer_rows: int = 16_384, info: DistInfo | None = None):
        self.info = info or dist_info()
        self.batches = [batches[i] for i in rank_block(len(batches), self.info.rank, self.info.world)]
        self.produce, self.d_in, self.buffer_rows = produce, int(d_in), int(buffer_rows)
        self.tokens_produced = 0

    def iter_batches(self, batch_size: int, seed: int) -> Iterator[torch.Tensor]:
        """One pass over this rank's corpus as shuffled ``(batch_size, d_in)`` float32 batches."""
        g = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(self.batches), generator=g).tolist()
        buffer = torch.empty(0, self.d_in)
        for i in order:
            with torch.no_grad():
                rows = self.produce(self.batches[i]).detach().float().cpu()
            self.tokens_produced += len(rows)
            buffer = torch.cat([buffer, rows])
            if len(buffer) < self.buffer_rows:
                continue
            buffer = buffer[torch.randperm(len(buffer), generator=g)]
            usable = len(buffer) - len(buffer) % batch_size
            yield from buffer[:usable].split(batch_size)
            buffer = buffer[usable:]
        buffer = buffer[torch.randperm(len(buffer), generator=g)]
        usable = len(buffer) - len(buffer) % batch_size
        yield from buffer[:usable].split(batch_size)
