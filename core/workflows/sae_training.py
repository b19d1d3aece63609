"""Train sparse autoencoders on harvested activations (TopK, JumpReLU, ReLU + L1).

Training happens on *normalised* activations (scaled by one constant ``c`` so their mean squared
norm is 1): hyperparameters such as the learning rate, the L1/L0 coefficients and the JumpReLU
bandwidth then mean the same thing on every model and layer. At the end ``c`` is folded into the
weights (``b_enc``, ``threshold`` and ``b_dec`` divided by ``c``; features come out in raw units
and decoder rows stay unit norm), so the saved SAE takes raw activations.

During training decoder rows are kept at unit norm (the gradient along each row is removed
before the step, then rows are renormalised), features that have not fired for ``dead_after``
tokens are counted as dead and periodically resampled from the inputs the SAE reconstructs worst.
Each feature's ``feature_scale`` is its mean non-zero activation, so a runtime read-out divided
by its scale is about 1 when the feature fires typically.

:func:`loss_recovered` splices an SAE into a model at its site and compares the model's loss
with the clean and the zero-ablated activation.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch

from polysteer.features.dictionary import SAE_ACTIVATIONS, DictionaryInfo, SparseAutoencoder
from polysteer.features.fingerprint import ModelFingerprint
from polysteer.workflows.distributed import (
    ActivationStream,
    DistInfo,
    all_gather_rows,
    all_reduce,
    dist_info,
)
from polysteer.workflows.harvesting import ActivationStore

Source = ActivationStore | torch.Tensor | ActivationStream


@dataclass
class TrainConfig:
    """Hyperparameters of one SAE training run (deterministic given ``seed``).

    ``steps`` wins over ``tokens`` (steps = tokens / batch_size). ``l1_coeff`` is the ReLU
    sparsity penalty, ``l0_coeff`` and ``bandwidth`` (of the straight-through estimator) and
    ``threshold_init`` are JumpReLU's; all are in normalised units. ``dead_after`` is in tokens;
    resampling stops after ``resample_until`` of the steps so the last ones can settle.
    """

    d_features: int
    k: int = 32
    activation: str = "topk"
    lr: float = 1e-3
    batch_size: int = 1024
    steps: int | None = None
    tokens: int = 2_000_000
    l1_coeff: float = 0.1
    l0_coeff: float = 0.01
    bandwidth: float = 0.05
    threshold_init: float = 0.05
    seed: int = 0
    dead_after: int = 100_000
    resample: bool = True
    resample_until: float = 0.8
    log_every: int = 50
    eval_tokens: int = 65_536
    device: str = "cpu"
    """Where the SAE trains: ``cpu``, ``cuda``, ``mps`` or ``auto`` (under torchrun ``cuda`` is the
    process's own GPU). Data-parallel runs need ``batch_size`` divisible by the process count."""

    def __post_init__(self) -> None:
        if self.activation not in SAE_ACTIVATIONS:
            raise ValueError(f"activation {self.activation!r} is not one of {SAE_ACTIVATIONS}")
        if self.d_features <= 0 or self.batch_size <= 0 or self.lr <= 0:
            raise ValueError("d_features, batch_size and lr must be positive")

    @property
    def total_steps(self) -> int:
        return int(self.steps) if self.steps is not None else max(1, -(-self.tokens // self.batch_size))


# -- JumpReLU: Heaviside steps with a straight-through estimator for the threshold ---------------
def _kernel(pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
    """Rectangle kernel ``K((pre - threshold) / bandwidth) / bandwidth``: the pseudo-derivative."""
    return ((pre - threshold).abs() < bandwidth / 2).to(pre.dtype) / bandwidth


class _Step(torch.autograd.Function):
    """``H(pre - threshold)``; d/d threshold = -kernel (no gradient to ``pre``)."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return (pre > threshold).to(pre.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        pre, threshold = ctx.saved_tensors
        g_t = -(grad * _kernel(pre, threshold, ctx.bandwidth)).reshape(-1, pre.shape[-1]).sum(0)
        return None, g_t, None


class _JumpReLU(torch.autograd.Function):
    """``pre * H(pre - threshold)``; exact gradient to ``pre``, STE gradient to the threshold."""

    @staticmethod
    def forward(ctx: Any, pre: torch.Tensor, threshold: torch.Tensor, bandwidth: float) -> torch.Tensor:
        ctx.save_for_backward(pre, threshold)
        ctx.bandwidth = bandwidth
        return pre * (pre > threshold)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        pre, threshold = ctx.saved_tensors
        g_pre = grad * (pre > threshold)
        k = _kernel(pre, threshold, ctx.bandwidth)
        g_t = -(grad * threshold * k).reshape(-1, pre.shape[-1]).sum(0)
        return g_pre, g_t, None


# -- data ----------------------------------------------------------------------------------------
def _stream(source: Source, site: str | None, batch_size: int, seed: int,
            info: DistInfo | None = None) -> Iterator[torch.Tensor]:
    """Endless shuffled float32 batches (a new deterministic order each epoch).

    With ``info`` (several processes) each batch is this rank's slice of the global batch: every
    rank reads the same global stream of a store or tensor; an :class:`ActivationStream` gives
    each rank its own rows (``batch_size // world`` per batch).
    """
    if info is not None and info.world > 1:
        if batch_size % info.world:
            raise ValueError(f"batch_size {batch_size} must be divisible by the number of "
                             f"processes ({info.world}) for data-parallel training")
        local = batch_size // info.world
        if isinstance(source, ActivationStream):
            yield from _stream(source, site, local, seed + 100_003 * info.rank)
            return
        lo = info.rank * local
        for batch in _stream(source, site, batch_size, seed):
            yield batch[lo:lo + local]
        return
    epoch = 0
    while True:
        if isinstance(source, ActivationStream):
            batches: Iterable[torch.Tensor] = source.iter_batches(batch_size, seed + epoch)
        elif isinstance(source, ActivationStore):
            if site is None:
                raise ValueError(f"name the site to train on (the store has {source.sites})")
            batches = source.iter_batches(site, batch_size, seed + epoch, drop_last=True)
        else:
            g = torch.Generator().manual_seed(seed + epoch)
            rows = source[torch.randperm(len(source), generator=g)].float()
            batches = rows[:len(rows) - len(rows) % batch_size].split(batch_size)
        count = 0
        for batch in batches:
            count += 1
            yield batch
        if count == 0:
            raise ValueError(f"fewer rows than one batch ({batch_size}): harvest more or use a "
                             "smaller batch_size")
        epoch += 1


def _normalisation(stream: Iterator[torch.Tensor], batches: int = 8, reduce: bool = False
                   ) -> tuple[float, torch.Tensor]:
    """``c`` with ``E ||c x||^2 = 1`` and the mean of ``c x`` (the decoder bias's start), over
    the first ``batches`` batches of every rank."""
    sample = torch.cat([next(stream) for _ in range(batches)]).double()
    totals = torch.cat([sample.pow(2).sum().reshape(1), sample.sum(0),
                        torch.tensor([float(len(sample))], dtype=torch.float64)])
    if reduce:
        all_reduce(totals)
    n = float(totals[-1])
    c = 1.0 / math.sqrt(float(totals[0]) / n or 1.0)
    return c, (totals[1:-1] / n * c).float()


# -- the model under training --------------------------------------------------------------------
@dataclass
class _Out:
    recon: torch.Tensor
    f: torch.Tensor
    l0: torch.Tensor
    penalty: torch.Tensor


def _forward(sae: SparseAutoencoder, x: torch.Tensor, cfg: TrainConfig) -> _Out:
    """Reconstruction, features, L0 and the sparsity penalty (zero for TopK)."""
    pre = sae.pre_activation(x)
    zero = x.new_zeros(())
    if cfg.activation == "topk":
        f = sae.encode(x)
        penalty = zero
    elif cfg.activation == "relu":
        f = torch.relu(pre)
        penalty = cfg.l1_coeff * (f * sae.W_dec.norm(dim=1)).sum(-1).mean()
    else:
        f = _JumpReLU.apply(pre, sae.threshold, cfg.bandwidth)
        penalty = cfg.l0_coeff * _Step.apply(pre, sae.threshold, cfg.bandwidth).sum(-1).mean()
    l0 = (f > 0).float().sum(-1).mean()
    return _Out(sae.decode(f), f, l0, penalty)


def _fve(x: torch.Tensor, recon: torch.Tensor) -> float:
    """Fraction of variance explained: ``1 - ||x - x'||^2 / ||x - mean(x)||^2``."""
    total = (x - x.mean(0)).pow(2).sum()
    return float(1 - (x - recon).pow(2).sum() / total) if total > 0 else float("nan")


@torch.no_grad()
def _constrain_decoder(sae: SparseAutoencoder, grads: bool) -> None:
    """Remove the gradient along each decoder row (before a step) or renormalise rows (after)."""
    w = sae.W_dec
    if grads:
        if w.grad is not None:
            w.grad -= (w.grad * w).sum(1, keepdim=True) * w
    else:
        w /= w.norm(dim=1, keepdim=True).clamp_min(1e-8)


@torch.no_grad()
def _resample(sae: SparseAutoencoder, opt: torch.optim.Adam, dead: torch.Tensor, x: torch.Tensor,
              recon: torch.Tensor, cfg: TrainConfig, g: torch.Generator) -> int:
    """Point dead features at inputs sampled by squared loss; reset their optimiser state."""
    idx = dead.nonzero().flatten()
    if not len(idx):
        return 0
    loss = (x - recon).pow(2).sum(-1)
    picks = torch.multinomial(loss.pow(2).cpu() + 1e-12, len(idx), replacement=len(idx) > len(x),
                              generator=g).to(x.device)
    residual = x[picks] - recon[picks]
    unit = residual / residual.norm(dim=1, keepdim=True).clamp_min(1e-8)
    alive = ~dead
    enc_norm = sae.W_enc[:, alive].norm(dim=0).mean() if alive.any() else torch.tensor(1.0)
    # TopK features compete on magnitude, so a new one needs a full-size encoder to be picked;
    # ReLU/JumpReLU features start small (Anthropic's 0.2) so they do not disturb the rest
    factor = 1.0 if cfg.activation == "topk" else 0.2
    sae.W_dec[idx] = unit
    sae.W_enc[:, idx] = (unit * enc_norm * factor).T
    sae.b_enc[idx] = 0.0
    if cfg.activation == "jumprelu":
        sae.threshold[idx] = cfg.threshold_init
    for p, sl in ((sae.W_dec, (idx,)), (sae.W_enc, (slice(None), idx)), (sae.b_enc, (idx,)),
                  (sae.threshold, (idx,))):
        state = opt.state.get(p, {})
        for key in ("exp_avg", "exp_avg_sq"):
            if key in state:
                state[key][sl] = 0.0
    return len(idx)


@torch.no_grad()
def fold_normalisation(sae: SparseAutoencoder, c: float) -> None:
    """Make an SAE trained on ``c * x`` take raw ``x``: features come out divided by ``c``.

    ``encode_raw(x) = encode_norm(c x) / c`` and ``decode_raw(f / c) = decode_norm(f) / c``;
    decoder rows stay unit norm, TopK choices and JumpReLU gates are unchanged.
    """
    sae.b_enc /= c
    sae.threshold /= c
    sae.b_dec /= c


# -- training ------------------------------------------------------------------------------------
def train_sae(source: Source, config: TrainConfig, *, site: str | None = None,
              model: ModelFingerprint | None = None, progress: bool = True,
              details: dict | None = None, parallel: bool | None = None
              ) -> tuple[SparseAutoencoder, dict[str, Any]]:
    """Train an SAE on ``source`` (an :class:`ActivationStore` and its ``site``, or ``(N, C)`` rows).

    Returns ``(sae, metrics)``; the SAE takes raw activations, has ``feature_scale`` set, and its
    ``info.details`` holds the config and metrics. ``model`` defaults to the store's model.

    Under torchrun the ranks train one SAE together with DistributedDataParallel (``parallel``
    ``None`` or ``True``); ``parallel=False`` trains in this process alone (several sites spread
    over ranks, see :func:`~polysteer.workflows.distributed.split_sites`). A
    :class:`~polysteer.workflows.distributed.ActivationStream` source trains from the model's
    activations without storing them.
    """
    if isinstance(source, ActivationStore):
        model = model or source.model
    with torch.random.fork_rng():
        torch.manual_seed(config.seed)
        sae, c, train_metrics = _train(source, site, config, progress, parallel)
    fold_normalisation(sae, c)
    if isinstance(source, ActivationStream):  # evaluate on rows the model makes now
        rows, n = [], 0
        for batch in source.iter_batches(min(config.batch_size, config.eval_tokens), config.seed + 7919):
            rows.append(batch)
            n += len(batch)
            if n >= config.eval_tokens:
                break
        if not rows:
            raise ValueError("the activation stream made fewer rows than one evaluation batch")
        source = torch.cat(rows)
    final = evaluate(sae, source, site, config)
    with torch.no_grad():
        sae.feature_scale.copy_(final.pop("feature_scale"))
    metrics = {**train_metrics, **final, "normalisation_scale": c}
    sae.info = DictionaryInfo(
        model=model, site=site or "activations", site_norm=final["site_norm"],
        method=f"sae-{config.activation}",
        details={**(details or {}), "config": asdict(config),
                 "metrics": {k: v for k, v in metrics.items() if k != "history"}})
    return sae, metrics


def _train(source: Source, site: str | None, cfg: TrainConfig, progress: bool,
           parallel: bool | None = None) -> tuple[SparseAutoencoder, float, dict[str, Any]]:
    """The training loop proper, on normalised activations; returns the unfolded SAE and ``c``.

    Under torchrun (a process group is up) the SAE is wrapped in DistributedDataParallel and each
    rank trains on its slice of every global batch.
    """
    from tqdm.auto import tqdm

    from polysteer.models.device import resolve_device

    dist = dist_info()
    parallel = dist.active and parallel is not False
    if not parallel:
        dist = DistInfo()
    device = resolve_device(cfg.device)
    stream = _stream(source, site, cfg.batch_size, cfg.seed, dist if parallel else None)
    c, mean = _normalisation(stream, reduce=parallel)
    d_in = mean.shape[0]
    info = DictionaryInfo(model=None, site=site or "activations", site_norm=1.0)
    sae = SparseAutoencoder(d_in, cfg.d_features, info, cfg.activation,
                            cfg.k if cfg.activation == "topk" else None)
    with torch.no_grad():
        sae.b_dec.copy_(mean)
        sae.threshold.fill_(cfg.threshold_init if cfg.activation == "jumprelu" else 0.0)
    sae.to(device)
    objective: torch.nn.Module = _Objective(sae, cfg)
    if parallel:
        from torch.nn.parallel import DistributedDataParallel

        objective = DistributedDataParallel(
            objective, device_ids=[device.index] if device.type == "cuda" else None)
    params = [p for p in sae.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    since_fired = torch.zeros(cfg.d_features, dtype=torch.long, device=device)
    resample_every = max(1, cfg.dead_after // cfg.batch_size)
    history: list[dict[str, float]] = []
    window: list[tuple[float, float]] = []
    resampled, start = 0, time.perf_counter()
    steps = cfg.total_steps
    bar = tqdm(range(steps), desc=f"training {cfg.activation} SAE", unit="step",
               disable=not progress or not dist.is_main)
    for step in bar:
        x = next(stream).to(device) * c
        loss, out = objective(x)
        opt.zero_grad(set_to_none=True)
        loss.backward()  # DDP averages the gradients over ranks here
        _constrain_decoder(sae, grads=True)
        opt.step()
        _constrain_decoder(sae, grads=False)
        with torch.no_grad():
            if cfg.activation == "jumprelu":
                sae.threshold.clamp_(min=1e-6)
            fired = (out.f > 0).any(0)
            if parallel:
                fired = all_reduce(fired.to(torch.int32), "max").bool()
            since_fired = torch.where(fired, 0, since_fired + len(x) * dist.world)
            window.append((_fve(x, out.recon), float(out.l0)))
            if cfg.resample and step and step % resample_every == 0 and step < cfg.resample_until * steps:
                dead = since_fired >= cfg.dead_after
                if parallel:  # every rank resamples identically from the global batch
                    n = _resample(sae, opt, dead, all_gather_rows(x),
                                  all_gather_rows(out.recon.detach()), cfg, g)
                else:
                    n = _resample(sae, opt, dead, x, out.recon.detach(), cfg, g)
                since_fired[dead] = 0
                resampled += n
        if (step + 1) % cfg.log_every == 0 or step + 1 == steps:
            row = _log_row(step + 1, window, since_fired, cfg)
            history.append(row)
            window.clear()
            bar.set_postfix(fve=f"{row['fve']:.3f}", l0=f"{row['l0']:.1f}", dead=f"{row['dead']:.2f}")
    seconds = time.perf_counter() - start
    tokens = steps * cfg.batch_size
    sae.to("cpu")
    return sae, c, {"steps": steps, "tokens": tokens, "seconds": seconds,
                    "tokens_per_second": tokens / seconds if seconds else math.inf,
                    "dead_fraction": history[-1]["dead"], "resampled": resampled,
                    "history": history}


class _Objective(torch.nn.Module):
    """The training loss as a module (what DistributedDataParallel wraps): ``x -> (loss, out)``."""

    def __init__(self, sae: SparseAutoencoder, cfg: TrainConfig):
        super().__init__()
        self.sae, self.cfg = sae, cfg

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, _Out]:
        out = _forward(self.sae, x, self.cfg)
        mse = (out.recon - x).pow(2).sum(-1).mean()
        return mse + out.penalty, out


def _log_row(step: int, window: list[tuple[float, float]], since_fired: torch.Tensor,
             cfg: TrainConfig) -> dict[str, float]:
    """Mean FVE and L0 over the window, and the dead fraction now."""
    return {"step": step, "fve": sum(w[0] for w in window) / len(window),
            "l0": sum(w[1] for w in window) / len(window),
            "dead": float((since_fired >= cfg.dead_after).float().mean())}


def _rows(source: Source, site: str | None) -> int:
    return source.n_tokens(site) if isinstance(source, ActivationStore) and site else len(source)


@torch.no_grad()
def evaluate(sae: SparseAutoencoder, source: Source, site: str | None = None,
             config: TrainConfig | None = None) -> dict[str, Any]:
    """FVE, L0, MSE, never-fired fraction, site norm and each feature's mean firing value.

    Reads up to ``config.eval_tokens`` raw rows (at most one pass) in a fixed shuffled order with
    another seed than training.
    """
    cfg = config or TrainConfig(d_features=sae.d_features)
    limit = min(cfg.eval_tokens, _rows(source, site))
    stream = _stream(source, site, max(1, min(cfg.batch_size, limit)), cfg.seed + 7919)
    err = sq = l0 = 0.0
    n = 0
    sum_x = torch.zeros(sae.d_in)
    count = torch.zeros(sae.d_features)
    value = torch.zeros(sae.d_features)
    norms = []
    while n < limit:
        x = next(stream)
        f = sae.encode(x)
        err += float((x - sae.decode(f)).pow(2).sum())
        sq += float(x.pow(2).sum())
        sum_x += x.sum(0)
        count += (f > 0).sum(0)
        value += f.sum(0)
        l0 += float((f > 0).sum())
        norms.append(x.norm(dim=-1))
        n += len(x)
    variance = sq - float(sum_x.pow(2).sum()) / max(n, 1)  # sum of squared deviations from the mean
    scale = torch.where(count > 0, value / count.clamp_min(1), torch.nan)
    # a feature that never fired gets a typical scale, so a read-out of it is still comparable
    fallback = float(scale.nanmedian()) if (count > 0).any() else 1.0
    return {"fve": 1 - err / variance if variance > 0 else float("nan"), "l0": l0 / max(n, 1),
            "mse": err / max(n, 1), "eval_dead_fraction": float((count == 0).float().mean()),
            "site_norm": float(torch.cat(norms).median()) if norms else 1.0, "eval_tokens": n,
            "feature_scale": torch.nan_to_num(scale, nan=fallback)}


# -- the model's loss with the SAE spliced in ----------------------------------------------------
@contextmanager
def splice(adapter: Any, site: str, fn: Callable[[torch.Tensor], torch.Tensor],
           skip_first: bool = True) -> Iterator[None]:
    """Replace the activation at ``site`` by ``fn(x)`` (``x`` is ``(B, P, C)``) inside a block.

    Uses the adapter's site binding and layout like the steering runtime does. With
    ``skip_first`` position 0 keeps its activation: it is an attention sink the SAE never saw.
    """
    binding = adapter.bind(site)

    def replace(native: Any) -> Any:
        x = binding.layout.read(native)
        y = fn(x).to(x.dtype)
        if skip_first and x.shape[1] > 1:
            y = torch.cat([x[:, :1], y[:, 1:]], dim=1)
        return binding.layout.write(native, y)

    if binding.hook == "output":
        handle = binding.module.register_forward_hook(lambda _m, _a, out: replace(out))
    else:
        def pre(_module: Any, args: tuple, kwargs: dict) -> tuple:
            if len(args) > binding.arg_index:
                i = binding.arg_index
                return (*args[:i], replace(args[i]), *args[i + 1:]), kwargs
            return args, {**kwargs, binding.arg_name: replace(kwargs[binding.arg_name])}
        handle = binding.module.register_forward_pre_hook(pre, with_kwargs=True)
    try:
        yield
    finally:
        handle.remove()


@torch.no_grad()
def loss_recovered(adapter: Any, sae: SparseAutoencoder, site: str, inputs: Iterable[Any],
                   loss_fn: Callable[[Any], torch.Tensor], skip_first: bool = True
                   ) -> dict[str, float]:
    """Model loss clean, with ``site`` zero-ablated and with the SAE's reconstruction spliced in.

    ``loss_fn(batch)`` runs the model on one batch of ``inputs`` and returns a scalar loss (e.g.
    next-token cross-entropy). ``loss_recovered = (zero - spliced) / (zero - clean)``: 1 means the
    SAE loses nothing, 0 means it is as bad as deleting the activation.
    """
    totals = {"clean": 0.0, "zero": 0.0, "spliced": 0.0}
    batches = 0
    for batch in inputs:
        totals["clean"] += float(loss_fn(batch))
        with splice(adapter, site, torch.zeros_like, skip_first):
            totals["zero"] += float(loss_fn(batch))
        with splice(adapter, site, lambda x: sae.decode(sae.encode(x)), skip_first):
            totals["spliced"] += float(loss_fn(batch))
        batches += 1
    if not batches:
        raise ValueError("loss_recovered needs at least one batch of inputs")
    mean = {k: v / batches for k, v in totals.items()}
    gap = mean["zero"] - mean["clean"]
    mean["loss_recovered"] = (mean["zero"] - mean["spliced"]) / gap if gap else float("nan")
    return mean
