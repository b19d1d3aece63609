"""A tiny pure-torch causal language model with a KV cache, and its adapter.

It is the model every core contract is tested on, the adapter the conformance suite is shown on,
and a worked example of everything an adapter does: a site table, one clock step per forward pass
(prefill, then one decode step per token), and classifier-free guidance rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from polysteer.errors import ConfigError
from polysteer.steering.adapter import ModelAdapter
from polysteer.steering.generation import Generation
from polysteer.steering.layout import BPC
from polysteer.steering.sites import Site, SiteTable
from polysteer.steering.step import RowMap

SITE_KINDS = ("resid_pre", "attn_out", "mlp_out", "resid_post")  # forward order


@dataclass
class ReferenceConfig:
    """Size of the reference model (tiny by default: it runs in milliseconds)."""

    vocab_size: int = 64
    d_model: int = 32
    n_layers: int = 2
    n_heads: int = 4
    max_positions: int = 128
    seed: int = 0


class Attention(nn.Module):
    """Causal self-attention that appends to a per-layer KV cache (a list ``[k, v]``)."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(d, 3 * d)
        self.out = nn.Linear(d, d)

    def forward(self, x: torch.Tensor, cache: list | None) -> torch.Tensor:
        b, p, d = x.shape
        q, k, v = self.qkv(x).view(b, p, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if cache is not None:
            if cache:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            cache[:] = [k, v]
        total = k.shape[2]
        # query i (absolute position total - p + i) sees keys <= its position
        mask = torch.ones(p, total, dtype=torch.bool, device=x.device).tril(total - p)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(b, p, d))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))``, then ``+ mlp(ln(.))``."""

    def __init__(self, d: int, heads: int):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = Attention(d, heads)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def forward(self, x: torch.Tensor, cache: list | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln1(x), cache)
        return x + self.mlp(self.ln2(x))


class ReferenceLM(nn.Module):
    """Token + position embeddings, ``n_layers`` blocks, a final norm and an unembedding."""

    def __init__(self, config: ReferenceConfig | None = None):
        super().__init__()
        self.config = c = config or ReferenceConfig()
        generator = torch.random.fork_rng()
        with generator:
            torch.manual_seed(c.seed)
            self.embed = nn.Embedding(c.vocab_size, c.d_model)
            self.pos = nn.Embedding(c.max_positions, c.d_model)
            self.blocks = nn.ModuleList(Block(c.d_model, c.n_heads) for _ in range(c.n_layers))
            self.ln_f = nn.LayerNorm(c.d_model)
            self.unembed = nn.Linear(c.d_model, c.vocab_size, bias=False)
        self.eval()

    def forward(self, ids: torch.Tensor, cache: list[list] | None = None, offset: int = 0
                ) -> torch.Tensor:
        """Logits for ``ids`` ``(B, P)`` at absolute positions ``offset..offset+P-1``."""
        positions = torch.arange(offset, offset + ids.shape[1], device=ids.device)
        x = self.embed(ids) + self.pos(positions)
        for i, block in enumerate(self.blocks):
            x = block(x, None if cache is None else cache[i])
        return self.unembed(self.ln_f(x))


class ReferenceAdapter(ModelAdapter):
    """Adapter for :class:`ReferenceLM`: greedy generation, KV cache, optional guidance.

    ``inputs`` is a ``(B, P)`` tensor of token ids (or a list of equal-length id lists). Sites are
    ``blocks.N.resid_pre``, ``blocks.N.resid_post``, ``blocks.N.attn_out``, ``blocks.N.mlp_out``.
    """

    modality = "text"
    null_token = 0

    def __init__(self, model: ReferenceLM | None = None, name: str = "reference"):
        super().__init__(model or ReferenceLM(), name)

    def site_table(self) -> SiteTable:
        """``blocks.N.KIND`` for every block, KIND in :data:`SITE_KINDS` (forward order)."""
        d = self.model.config.d_model

        def row(block: str, kind: str) -> Site:
            if kind == "resid_pre":  # the block's input: Block.forward(x, cache)
                return Site(block, BPC(), d, hook="input", arg_name="x")
            return Site({"attn_out": f"{block}.attn", "mlp_out": f"{block}.mlp"}.get(kind, block), BPC(), d)

        return SiteTable(((f"blocks.{i}.{kind}", row(f"blocks.{i}", kind))
                          for i in range(len(self.model.blocks)) for kind in SITE_KINDS), owner=self.name)

    @torch.no_grad()
    def run_generation(self, inputs: Any, max_new_tokens: int = 8, use_cache: bool = True,
                       guidance_scale: float | None = None) -> Generation:
        """Greedy generation; outputs are ``(B, P + max_new_tokens)`` ids (prompt included).

        With ``guidance_scale`` the batch is doubled to ``[uncond; cond]`` rows (the unconditional
        prompt is all ``null_token``) and logits are ``u + g * (c - u)``. The record's
        ``extras["vocab_size"]`` is the model's vocabulary size (the demo measure reads it).
        """
        ids = torch.as_tensor(inputs, dtype=torch.long).to(self.model.embed.weight.device)
        samples, prompt = ids.shape
        if prompt + max_new_tokens > self.model.config.max_positions:
            raise ValueError(f"prompt + max_new_tokens exceeds {self.model.config.max_positions}")
        rows = RowMap.plain(samples)
        batch = ids
        if guidance_scale is not None:
            rows = RowMap.cfg(samples)
            batch = torch.cat([torch.full_like(ids, self.null_token), ids])
        self.begin_generation(max_new_tokens)
        cache = [[] for _ in self.model.blocks] if use_cache else None
        out = ids
        for step in range(max_new_tokens):
            if use_cache and step > 0:
                feed, offset = batch[:, -1:], batch.shape[1] - 1
            else:
                feed, offset = batch, 0
            self.advance_step(phase="prefill" if step == 0 else "decode", offset=offset,
                              new=prompt if step == 0 else 1, prompt_length=prompt, rows=rows)
            logits = self.model(feed, cache, offset)[:, -1]
            if guidance_scale is not None:
                uncond, cond = logits.chunk(2)
                logits = uncond + guidance_scale * (cond - uncond)
            token = logits.argmax(-1, keepdim=True)
            out = torch.cat([out, token], dim=1)
            batch = torch.cat([batch, token.repeat(batch.shape[0] // samples, 1)], dim=1)
        return Generation(outputs=out, modality=self.modality, model=self.name, prompt_length=prompt,
                          extras={"vocab_size": self.model.config.vocab_size})

    def prepare_inputs(self, spec: Any) -> torch.Tensor:
        """``None`` -> two deterministic random prompts; a list of id lists -> a tensor."""
        vocab = self.model.config.vocab_size
        if spec is None:
            return reference_prompts(vocab=vocab)
        rows = spec if isinstance(spec, list | tuple) else None
        if not rows or not all(isinstance(r, list | tuple) and r and len(r) == len(rows[0])
                               and all(isinstance(t, int) and not isinstance(t, bool)
                                       and 0 <= t < vocab for t in r) for r in rows):
            raise ConfigError(f"inputs: expected equal-length lists of token ids in [0, {vocab}) "
                              f"for the reference model, got {spec!r}")
        return torch.as_tensor(spec, dtype=torch.long)

    def logits(self, inputs: Any) -> torch.Tensor:
        """One plain forward pass (a single step): logits ``(B, P, vocab)``."""
        ids = torch.as_tensor(inputs, dtype=torch.long).to(self.model.embed.weight.device)
        self.begin_generation(1)
        self.advance_step(phase="single", new=ids.shape[1], prompt_length=ids.shape[1],
                          rows=RowMap.plain(ids.shape[0]))
        with torch.no_grad():
            return self.model(ids)


def reference_prompts(samples: int = 2, length: int = 6, vocab: int = 64, seed: int = 0
                      ) -> torch.Tensor:
    """Deterministic random prompts for the reference model (never the null token 0)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1, vocab, (samples, length), generator=g)

