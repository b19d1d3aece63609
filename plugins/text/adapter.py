"""The text adapter: any transformers causal LM, steered token by token through ``generate``.

The step clock comes from a forward pre-hook on the model, installed while a generation runs (it
also fills the record's step history): the first forward pass is the prefill (step 0, every prompt
position new), then one decode step per token, whether or not a KV cache is used. Under a cache a
site sees the prompt once and then one token per step; the clock says so (``offset``, ``new``), so
position masks and captures stay right, and every decode step is steered.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from polysteer import Generation, ModelAdapter, RowMap, SiteTable
from polysteer.io import atomic_path
from polysteer.plugins.text.models import load_causal_lm
from polysteer.plugins.text.sites import site_table
from polysteer.steering import CoherenceSignal, token_lengths

Prompt = str | list[dict[str, str]]
"""A plain text, or a chat: a list of ``{"role": ..., "content": ...}`` messages."""


class TransformersAdapter(ModelAdapter):
    """Adapter for a transformers causal LM and its tokenizer.

    ``generate(prompts, max_new_tokens=..., **kwargs)`` takes one prompt or a list (plain texts or
    chats); chat templates are applied when the tokenizer has one (``chat=False`` turns that off).
    It returns a :class:`~polysteer.Generation`: ``outputs`` are token ids
    ``(batch, prompt + new)`` (left-padded prompt first), ``texts`` the decoded new part of each
    row, ``lengths`` each row's tokens up to its end-of-sequence token, ``extras["padding"]``
    ``(rows,)`` each row's leading pad tokens (its prompt starts there).
    """

    modality = "text"
    default_coherence_signal = "entropy"

    def __init__(self, model: Any, tokenizer: Any, name: str):
        super().__init__(model, name)
        self.tokenizer = tokenizer

    @classmethod
    def load(cls, name_or_path: str, dtype: str = "float32", device: str = "cpu"
             ) -> TransformersAdapter:
        """Load an embedded model name, a local folder or a hub id."""
        model, tokenizer = load_causal_lm(name_or_path, dtype=dtype, device=device)
        return cls(model, tokenizer, Path(str(name_or_path)).name)

    # -- sites ----------------------------------------------------------------------------------
    def site_table(self) -> SiteTable:
        """``blocks.N.{resid_pre,attn_out,mlp_out,resid_post}``, per architecture (see
        :mod:`polysteer.plugins.text.sites`)."""
        return site_table(self.model, self.name)

    def coherence_signals(self) -> dict[str, CoherenceSignal]:
        """``entropy``: the entropy (nats) of the steered next-token distribution, read at the LM
        head on each forward pass (no second pass: the logits are the ones generation uses)."""
        head = self.model.get_output_embeddings()
        if head is None:
            return {}
        return {"entropy": CoherenceSignal("entropy", head, _next_token_entropy,
                                           "entropy of the next-token distribution (nats)")}

    # -- inputs ---------------------------------------------------------------------------------
    def encode(self, prompts: Prompt | list[Prompt], chat: bool | None = None,
               max_tokens: int | None = None, padding_side: str = "left") -> dict[str, torch.Tensor]:
        """Tokenize one prompt or a batch, applying the chat template if any.

        Batches are left-padded for generation; ``padding_side="right"`` suits teacher-forced
        losses. ``max_tokens`` truncates each text.
        """
        batch = [prompts] if isinstance(prompts, str) or _is_chat(prompts) else list(prompts)
        use_template = bool(getattr(self.tokenizer, "chat_template", None)) if chat is None else chat
        texts = [self._render(p, use_template) for p in batch]
        device = next(self.model.parameters()).device
        encoded = self.tokenizer(texts, return_tensors="pt", padding=True,
                                 add_special_tokens=not use_template, padding_side=padding_side,
                                 truncation=max_tokens is not None, max_length=max_tokens)
        return {k: encoded[k].to(device) for k in ("input_ids", "attention_mask")}

    def _render(self, prompt: Prompt, use_template: bool) -> str:
        if not use_template:
            if not isinstance(prompt, str):
                raise ValueError("a chat prompt needs a tokenizer with a chat template")
            return prompt
        messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                  tokenize=False)

    def prepare_inputs(self, spec: Any) -> Any:
        if spec is None:
            return ["Tell me about your day.", "Write a short note to a friend."]
        return spec

    # -- generation -----------------------------------------------------------------------------
    @torch.no_grad()
    def run_generation(self, inputs: Any, max_new_tokens: int = 32, chat: bool | None = None,
                       **kwargs: Any) -> Generation:
        """``model.generate`` with the step clock attached; greedy unless ``do_sample=True``."""
        encoded = inputs if isinstance(inputs, dict) else self.encode(inputs, chat)
        ids = encoded["input_ids"]
        samples, prompt = ids.shape
        beams = int(kwargs.get("num_beams", 1))
        rows = RowMap.beams(samples, beams) if beams > 1 else RowMap.plain(samples)
        kwargs.setdefault("do_sample", False)
        kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        leading = _left_padding(encoded.get("attention_mask"), samples)
        handle = None
        if self.attached_clocks:
            self.begin_generation(max_new_tokens)
            padding = _step_padding(leading, rows)
            handle = self.model.register_forward_pre_hook(
                self.scoped(self._clock_hook(prompt, rows, padding)), with_kwargs=True)
        try:
            out = self.model.generate(**encoded, max_new_tokens=max_new_tokens,
                                      min_new_tokens=kwargs.pop("min_new_tokens", 0), **kwargs)
        finally:
            if handle is not None:
                handle.remove()
        if not isinstance(out, torch.Tensor):  # return_dict_in_generate=True
            out = out.sequences
        eos = getattr(self.model.generation_config, "eos_token_id", None)
        return Generation(outputs=out, modality=self.modality, model=self.name, prompt_length=prompt,
                          lengths=token_lengths(out, prompt, eos), texts=self._decode(out[:, prompt:]),
                          extras={"padding": leading.repeat_interleave(out.shape[0] // samples)})

    def _clock_hook(self, prompt: int, rows: RowMap, padding: torch.Tensor | None):
        calls = [0]

        def hook(_module, args, kwargs):
            ids = kwargs.get("input_ids", args[0] if args else None)
            positions = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
            first = calls[0] == 0
            offset = prompt + calls[0] - positions if not first else 0
            self.advance_step(phase="prefill" if first else "decode", offset=max(offset, 0),
                              new=positions if first else 1, prompt_length=prompt, rows=rows,
                              padding=padding)
            calls[0] += 1
        return hook

    @torch.no_grad()
    def forward(self, prompts: Prompt | list[Prompt] | dict[str, torch.Tensor],
                chat: bool | None = False) -> tuple[torch.Tensor, torch.Tensor]:
        """One forward pass (a single step): ``(logits, attention_mask)``; no template by default.

        ``prompts`` may also be the output of :meth:`encode`.
        """
        encoded = prompts if isinstance(prompts, dict) else self.encode(prompts, chat)
        ids = encoded["input_ids"]
        self.begin_generation(1)
        rows = RowMap.plain(ids.shape[0])
        self.advance_step(phase="single", new=ids.shape[1], prompt_length=ids.shape[1], rows=rows,
                          padding=_step_padding(_left_padding(encoded.get("attention_mask"), len(ids)), rows))
        return self.model(**encoded).logits, encoded["attention_mask"]

    def replay(self, generation: Generation) -> torch.Tensor:
        """Next-token logits ``(rows, positions, vocabulary)`` of ``generation``'s token ids (its
        prompt and what was generated, left padding masked) in one teacher-forced pass."""
        ids = generation.outputs.to(next(self.model.parameters()).device)
        padding = torch.as_tensor(generation.extras.get("padding", torch.zeros(len(ids))),
                                  device=ids.device)
        mask = (torch.arange(ids.shape[1], device=ids.device)[None] >= padding[:, None]).long()
        logits, _ = self.forward({"input_ids": ids, "attention_mask": mask})
        return logits

    # -- outputs --------------------------------------------------------------------------------
    def _decode(self, new: torch.Tensor) -> list[str]:
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]

    def texts(self, generation: Generation) -> list[str]:
        """The generated part of each row, decoded (``generation.texts``)."""
        if not isinstance(generation, Generation):
            raise TypeError(f"texts() takes the Generation that generate() returned, got "
                            f"{type(generation).__name__}; for bare token ids use tokenizer.batch_decode")
        if generation.texts is not None:
            return list(generation.texts)
        return self._decode(generation.generated)

    def describe_outputs(self, generation: Generation) -> list[str]:
        return self.texts(generation)

    def save_outputs(self, generation: Generation, stem: Path) -> list[Path]:
        path = stem.with_name(stem.name + ".txt")
        with atomic_path(path) as tmp:
            tmp.write_text("\n\n---\n\n".join(self.texts(generation)) + "\n")
        return [path]


def _next_token_entropy(args: tuple, logits: Any, step: Any) -> torch.Tensor:
    """``(rows,)`` entropy of the last position's next-token distribution."""
    last = (logits[0] if isinstance(logits, tuple) else logits)[:, -1].float()
    logp = torch.log_softmax(last, dim=-1)
    return -(logp.exp() * logp).sum(dim=-1)


def _is_chat(prompt: Any) -> bool:
    return isinstance(prompt, list) and bool(prompt) and isinstance(prompt[0], dict)


def _left_padding(attention_mask: torch.Tensor | None, samples: int) -> torch.Tensor:
    """``(samples,)`` leading pad positions of each prompt (zeros without a mask), on the CPU."""
    if attention_mask is None:
        return torch.zeros(samples, dtype=torch.long)
    return (attention_mask.cumsum(dim=1) == 0).sum(dim=1).long().cpu()


def _step_padding(leading: torch.Tensor, rows: RowMap) -> torch.Tensor | None:
    """The step clock's padding: per batch row (rows repeated for beams), None if no row has any."""
    return leading[rows.sample] if bool(leading.any()) else None
