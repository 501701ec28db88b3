# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Train a small byte-level BPE chat tokenizer offline (tests, from-scratch experiments). Not remote code."""

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

CHAT_SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]


def train_chat_tokenizer(
    corpus: list[str], vocab_size: int = 400, individual_digits: bool = False
) -> PreTrainedTokenizerFast:
    """Byte-level BPE over `corpus` with Qwen2's chat tokens and `<image>`; ids `<|endoftext|>` 0, `<|im_start|>` 1,
    `<|im_end|>` 2, `<image>` 3; eos `<|im_end|>`, pad `<|endoftext|>`. Every byte is a token, so any text encodes.

    `individual_digits`: every digit is a token of its own, never merged with a space or another digit (as Qwen2's
    tokenizer does), so `"3 5 7"` is always `3`, ` `, `5`, ` `, `7`."""
    tokenizer = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if individual_digits
        else byte_level
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=CHAT_SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<image>"],
    )


__all__ = ["CHAT_SPECIAL_TOKENS", "train_chat_tokenizer"]
