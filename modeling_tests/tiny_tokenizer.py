"""A tiny byte-level BPE Qwen2 tokenizer trained offline, with the chat special tokens and `<image>` (tests only).

`build_tiny_tokenizer()` trains once per process (a few milliseconds, cached in `_TRAINED`) and then returns a fresh
`Qwen2Tokenizer` (= `Qwen2TokenizerFast` in Transformers 5) each call, so a test may change `padding_side` freely.

Special tokens (ids fixed by the trainer's order): `<|endoftext|>` 0 (pad), `<|im_start|>` 1, `<|im_end|>` 2 (eos),
`<image>` 3 (`tokenizer.image_token` / `tokenizer.image_token_id`, through `extra_special_tokens`).
"""

import json

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import Qwen2Tokenizer
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
VOCAB_SIZE = 400

CORPUS = [
    "system user assistant You are a helpful assistant.",
    "What is the price of the apple? What is the total? Which bar is the tallest? How many rows are there?",
    "What is in row 1, column B? Which digit is at row 2, column 3? Read the receipt, the table and the chart.",
    "Describe the image in detail. A document with numbers, a form, a table, a bar chart and a photo.",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42 99 100 2024 3.50 12.99 $ % #",
    "The total is 42. The answer is yes. The answer is no. There are three cats and two dogs in the picture.",
    "Same? Different? Compare the two images. The first image shows a receipt; the second shows a chart.",
    "Just text, please. Thank you! Hello, world. Good morning. Please answer with a single word or number.",
    "Question: what colour is the car? Answer: red, green, blue, yellow, black, white, orange, purple.",
    "Item Qty Price Total Subtotal Tax Date Name Address Invoice Store Cash Card Change Amount Balance",
]


def _train() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE with Qwen2's pre-tokenizer (its split regex, then bytes) and NFC, as `Qwen2Tokenizer` builds."""
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
        vocab_size=VOCAB_SIZE,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # every byte is a token: any text encodes
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    model = json.loads(tokenizer.to_str())["model"]
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in model["merges"]]
    return model["vocab"], merges


_TRAINED: tuple[dict[str, int], list[tuple[str, str]]] | None = None


def build_tiny_tokenizer(save_dir=None) -> Qwen2Tokenizer:
    """A fresh tiny `Qwen2Tokenizer` (vocabulary ~400), saved to `save_dir` when given.

    eos `<|im_end|>`, pad `<|endoftext|>`, `<|im_start|>` an additional special token, `<image>` the image token:
    `tokenizer.image_token == "<image>"`, `tokenizer.image_token_id == 3`.
    """
    global _TRAINED
    if _TRAINED is None:
        _TRAINED = _train()
    vocab, merges = _TRAINED
    tokenizer = Qwen2Tokenizer(
        vocab=dict(vocab),
        merges=list(merges),
        unk_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        extra_special_tokens={"image_token": "<image>"},
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    if save_dir is not None:
        tokenizer.save_pretrained(save_dir)
    return tokenizer


__all__ = ["SPECIAL_TOKENS", "build_tiny_tokenizer"]
