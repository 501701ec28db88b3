# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Train a small byte-level BPE Qwen2 chat tokenizer offline (tests, from-scratch experiments). Not remote code."""

import json
from functools import lru_cache

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def train_chat_tokenizer(corpus: list[str], vocab_size: int = 400) -> Qwen2Tokenizer:
    """A fresh `Qwen2Tokenizer` trained by byte-level BPE on `corpus`, built the way Qwen2's own is.

    Qwen2's pre-tokenizer (its split regex, then bytes) and NFC: every byte is a token, so any text encodes, and every
    digit is a token of its own, never merged with a space or another digit (`"3 5"` is `3`, ` `, `5`).
    Special ids: `<|endoftext|>` 0 (pad), `<|im_start|>` 1, `<|im_end|>` 2 (eos), `<image>` 3
    (`tokenizer.image_token` / `tokenizer.image_token_id`).
    """
    vocab, merges = _train_bpe(tuple(corpus), vocab_size)
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    return tokenizer


@lru_cache(maxsize=8)
def _train_bpe(corpus: tuple[str, ...], vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Vocabulary and merges of a byte-level BPE with Qwen2's pre-tokenizer over `corpus` (cached per corpus)."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=CHAT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
    return model["vocab"], merges


__all__ = ["CHAT_SPECIAL_TOKENS", "train_chat_tokenizer"]
