"""Concept evaluation for text: a judge that shares nothing with the steering direction, coherence
measures, and the text calibration judge (``polysteer calibrate`` on a text model).

* :class:`TextJudge`: a multinomial naive Bayes over word counts, fitted on a concept's *held-out
  judge examples* (``configs/judges/NAME.yaml``, ``text.positive`` / ``text.negative``: written for
  the judge, never used to build a direction). No model, no activations: only the judge's words.
  A ``length`` judge (``text.length: {max_words: N}``) reads the concept off the answer instead: a
  row expresses it when the model ended its answer within the token budget in at most N words.
* :func:`continuation_perplexities`: each row's generated tokens given its prompt, under the
  *unsteered* model; :func:`text_perplexities`: teacher-forced perplexity of human-written texts (the
  concept's own judge examples are the reference, so French output is compared with French text);
* :func:`repetition_rate`: the fraction of a text's word 3-grams that repeat an earlier one.

A row is **incoherent** when its perplexity exceeds the median perplexity of human-written text on
the concept (ratio > :data:`PPL_RATIO`), when it repeats itself (repetition > :data:`REPETITION`) or
when it is empty. The calibration's coherence value is the fraction of incoherent rows; its bound is
the unsteered fraction + :data:`EXTRA_BROKEN` (at most one row in five more than unsteered).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import torch

from polysteer import Generation
from polysteer.io import configs_dir, load_yaml

PPL_RATIO = 1.0
"""Most perplexity a coherent row may have, relative to human-written text on the concept."""
REPETITION = 0.25
"""Most repeated word 3-grams a coherent row may have."""
EXTRA_BROKEN = 0.2
"""Calibration bound: the unsteered incoherent fraction plus this."""
NEW_TOKENS = 24
"""Tokens generated per prompt when the judge spec does not say."""

_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?|!")


def words(text: str) -> list[str]:
    """Lower-case words (any script, apostrophes kept inside a word) and exclamation marks."""
    return _WORD.findall(text.lower())


class TextJudge:
    """A multinomial naive Bayes over word counts, fitted on held-out judge examples.

    ``probability(text)`` is P(concept | text) with equal priors and add-one smoothing; a text with
    no word the judge has seen scores 0.5 (no evidence).
    """

    def __init__(self, positive: Sequence[str], negative: Sequence[str]):
        if not positive or not negative:
            raise ValueError("a text judge needs positive and negative judge examples")
        self.counts = [self._count(negative), self._count(positive)]
        self.vocab = set(self.counts[0]) | set(self.counts[1])
        self.totals = [sum(c.values()) for c in self.counts]

    @staticmethod
    def _count(texts: Sequence[str]) -> dict[str, int]:
        counts: dict[str, int] = {}
        for text in texts:
            for w in words(text):
                counts[w] = counts.get(w, 0) + 1
        return counts

    def log_odds(self, text: str) -> float:
        """log P(text | concept) - log P(text | not concept), over the words the judge knows."""
        total = 0.0
        size = len(self.vocab)
        for w in words(text):
            if w in self.vocab:
                total += math.log((self.counts[1].get(w, 0) + 1) / (self.totals[1] + size))
                total -= math.log((self.counts[0].get(w, 0) + 1) / (self.totals[0] + size))
        return total

    def probability(self, text: str) -> float:
        """P(concept | text) in [0, 1]."""
        odds = max(min(self.log_odds(text), 60.0), -60.0)
        return 1.0 / (1.0 + math.exp(-odds))


def repetition_rate(text: str, n: int = 3) -> float:
    """The fraction of the word ``n``-grams of ``text`` that already occurred earlier in it."""
    tokens = words(text)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    seen: set[tuple[str, ...]] = set()
    repeated = 0
    for g in grams:
        repeated += g in seen
        seen.add(g)
    return repeated / len(grams)


def _device(adapter: Any) -> torch.device:
    return next(adapter.model.parameters()).device


@torch.no_grad()
def continuation_perplexities(adapter: Any, generation: Generation) -> list[float]:
    """Per row: perplexity of the generated tokens given the prompt under ``adapter``'s model
    (call it outside any steering context: the unsteered model); ``nan`` for a row with no token."""
    pad = adapter.tokenizer.pad_token_id
    eos = getattr(adapter.tokenizer, "eos_token_id", None)
    out = []
    for row, length in zip(generation.outputs, generation.row_lengths().tolist(), strict=True):
        ids = row[:int(length)]
        start = 0
        if pad is not None:
            while start < generation.prompt_length and int(ids[start]) == pad:
                start += 1
        ids = ids[start:]
        prompt = generation.prompt_length - start
        if eos is not None and len(ids) > prompt and int(ids[-1]) == eos:
            ids = ids[:-1]  # the end token is not text
        if ids.shape[0] - prompt < 1 or prompt < 1:
            out.append(float("nan"))
            continue
        ids = ids[None].to(_device(adapter))
        logits = adapter.model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[0, prompt - 1:-1], dim=-1)
        out.append(math.exp(float(-logp.gather(-1, ids[0, prompt:, None]).mean())))
    return out


@torch.no_grad()
def text_perplexities(adapter: Any, texts: Sequence[str]) -> list[float]:
    """Teacher-forced perplexity of each text (no chat template) under ``adapter``'s model."""
    out = []
    for text in texts:
        ids = adapter.tokenizer(text, return_tensors="pt")["input_ids"].to(_device(adapter))
        if ids.shape[1] < 2:
            out.append(float("nan"))
            continue
        logits = adapter.model(input_ids=ids).logits.float()
        logp = torch.log_softmax(logits[0, :-1], dim=-1)
        out.append(math.exp(float(-logp.gather(-1, ids[0, 1:, None]).mean())))
    return out


def _median(values: Sequence[float]) -> float:
    finite = sorted(v for v in values if math.isfinite(v))
    if not finite:
        return float("nan")
    mid = len(finite) // 2
    return finite[mid] if len(finite) % 2 else 0.5 * (finite[mid - 1] + finite[mid])


def evaluation_prompts(split: str = "calibrate") -> list[str]:
    """Held-out prompts from ``configs/evaluation/prompts.yaml`` (``calibrate`` or ``evaluate``)."""
    data = load_yaml(configs_dir() / "evaluation" / "prompts.yaml", "prompt set")
    return list(data[split])


class TextCalibrationJudge:
    """Generates from held-out prompts and measures the concept (:class:`TextJudge` or a length
    judge) and coherence (incoherent-row fraction, see the module docs) of the output.

    ``instruction`` (a string or ``None``) is appended to every prompt: the evaluation's
    prompt-only and prompt+steering conditions; calibration leaves it off.
    """

    score_name = "judge P(concept)"
    coherence_name = "incoherent fraction"
    grid = (0.5, 1.0, 1.5, 2.0, 3.0)

    def __init__(self, adapter: Any, spec: dict[str, Any], *, prompts: Sequence[str] | None = None,
                 instruction: str | None = None, new_tokens: int | None = None):
        text = spec["text"]
        self.name = str(spec.get("name", "concept"))
        self.positive = list(text.get("positive", []))
        self.negative = list(text.get("negative", []))
        self.judge = TextJudge(self.positive, self.negative)
        self.length = text.get("length")
        if self.length:
            self.score_name = "answered within the length"
        self.prompts = list(prompts) if prompts is not None else list(
            text.get("prompts") or evaluation_prompts("calibrate"))
        self.instruction = instruction
        self.new_tokens = int(new_tokens or text.get("new_tokens", NEW_TOKENS))
        self.reference = _median(text_perplexities(adapter, self.positive))

    @classmethod
    def from_spec(cls, adapter: Any, spec: dict[str, Any]) -> TextCalibrationJudge:
        """The registered factory: a judge for ``spec`` on ``adapter``."""
        return cls(adapter, spec)

    def inputs(self) -> list[str]:
        """The prompts as generated (with the instruction when one is set)."""
        if not self.instruction:
            return list(self.prompts)
        return [f"{p} {self.instruction}" for p in self.prompts]

    def generate(self, adapter: Any) -> Generation:
        """Greedy generation of :attr:`new_tokens` tokens from every prompt, one batch."""
        return adapter.generate(self.inputs(), max_new_tokens=self.new_tokens)

    def expressed(self, generation: Generation, texts: list[str]) -> list[float]:
        """Per row, the concept score in [0, 1]."""
        if not self.length:
            return [self.judge.probability(t) for t in texts]
        limit = int(self.length.get("max_words", 25))
        lengths = generation.row_lengths().tolist()
        full = generation.prompt_length + self.new_tokens
        return [float(int(n) < full and 0 < len(t.split()) <= limit)
                for n, t in zip(lengths, texts, strict=True)]

    def measure(self, adapter: Any, generation: Generation, baseline: Generation | None) -> dict[str, Any]:
        """Score, coherence and their parts for one generation (see the module docs)."""
        texts = list(generation.texts) if generation.texts is not None else adapter.texts(generation)
        scores = self.expressed(generation, texts)
        ppl = continuation_perplexities(adapter, generation)
        ratios = [p / self.reference if math.isfinite(p) and self.reference > 0 else math.inf
                  for p in ppl]
        reps = [repetition_rate(t) for t in texts]
        broken = [(not t.strip()) or r > PPL_RATIO or rep > REPETITION
                  for t, r, rep in zip(texts, ratios, reps, strict=True)]
        return {"score": sum(scores) / len(scores),
                "expressed": sum(s > 0.5 for s in scores) / len(scores),
                "coherence": sum(broken) / len(broken),
                "perplexity": _median(ppl), "perplexity_ratio": _median(ratios),
                "repetition": sum(reps) / len(reps), "reference_perplexity": self.reference,
                "texts": texts}

    def bound(self, baseline: dict[str, Any]) -> float:
        """The unsteered incoherent fraction + :data:`EXTRA_BROKEN`."""
        return float(baseline["coherence"]) + EXTRA_BROKEN

    def describe(self) -> dict[str, Any]:
        """What the judge is, for the calibration record."""
        return {"kind": "text", "spec": self.name, "judge": "length" if self.length else "naive Bayes",
                "judge_examples": len(self.positive) + len(self.negative), "prompts": self.prompts,
                "new_tokens": self.new_tokens, "reference_perplexity": round(self.reference, 3),
                "incoherent_row": f"perplexity > {PPL_RATIO} x human text on the concept, repeated "
                                  f"3-grams > {REPETITION}, or empty",
                "bound": f"unsteered incoherent fraction + {EXTRA_BROKEN}"}
