"""An offline tiny byte-level BPE tokenizer with Qwen2's chat special tokens and `<image>`, for tests."""

from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>"]
CORPUS = [
    "user assistant system What is the price of apple? What is the total? Which bar is the tallest?",
    "What is in row 1, column B? Digit at row 2, column 3? receipt table chart value",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42 99 100",
    "Describe the image. A document with numbers, a form, a table and a chart.",
]


@lru_cache(maxsize=1)
def _trained(vocab_size: int) -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 4, trainer=trainer)
    return tokenizer


def build_tiny_tokenizer(vocab_size: int = 400) -> PreTrainedTokenizerFast:
    """Returns a fresh fast tokenizer (ids: `<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2, `<image>` 3)."""
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_trained(vocab_size).to_str()),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<image>"],
    )
