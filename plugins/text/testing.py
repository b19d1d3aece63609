"""Tiny random text models with an offline word-level tokenizer, for fast tests (no download)."""

from __future__ import annotations

from typing import Any

WORDS = ("the a cat dog sat on mat happy sad ship sea pirate formal hello friend food bridge "
         "gold gate red blue day night good bad very not and or to of in is was").split()


def tiny_tokenizer() -> Any:
    """A word-level fast tokenizer over :data:`WORDS` (left padding, pad/unk/bos/eos tokens)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["<pad>", "<unk>", "<s>", "</s>", *WORDS])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>",
                                  bos_token="<s>", eos_token="</s>")
    tok.padding_side = "left"
    return tok


def tiny_model(family: str = "llama", seed: int = 0) -> Any:
    """A random 2-layer, 32-wide causal LM of ``family`` (llama, mistral, qwen2, gpt2, gpt_neox)."""
    import torch
    import transformers as tf

    torch.manual_seed(seed)
    common = {"vocab_size": len(WORDS) + 4, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}
    llama_like = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                  "num_attention_heads": 4, "num_key_value_heads": 2, **common}
    configs = {
        "llama": lambda: tf.LlamaConfig(**llama_like),
        "mistral": lambda: tf.MistralConfig(**llama_like),
        "qwen2": lambda: tf.Qwen2Config(**llama_like),
        "gpt2": lambda: tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, **common),
        "gpt_neox": lambda: tf.GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, **common),
    }
    return tf.AutoModelForCausalLM.from_config(configs[family]()).eval()


def tiny_text_adapter(family: str = "llama", seed: int = 0) -> Any:
    """A :class:`TransformersAdapter` over :func:`tiny_model` and :func:`tiny_tokenizer`."""
    from polysteer.plugins.text.adapter import TransformersAdapter

    return TransformersAdapter(tiny_model(family, seed), tiny_tokenizer(), f"tiny-{family}")
