"""An offline tiny byte-level BPE tokenizer with Qwen2's chat special tokens and `<image>`, for tests."""

from functools import lru_cache

from llava_vr.tokenizer_training import train_chat_tokenizer

CORPUS = [
    "user assistant system What is the price of apple? What is the total? Which bar is the tallest?",
    "What is in row 1, column B? Digit at row 2, column 3? receipt table chart value",
    "The quick brown fox jumps over the lazy dog. 0 1 2 3 4 5 6 7 8 9 10 42 99 100",
    "Describe the image. A document with numbers, a form, a table and a chart.",
]


@lru_cache(maxsize=1)
def _serialized(vocab_size: int) -> str:
    return train_chat_tokenizer(CORPUS * 4, vocab_size).backend_tokenizer.to_str()


def build_tiny_tokenizer(vocab_size: int = 400):
    """A fresh fast tokenizer (ids: `<|endoftext|>` 0, `<|im_start|>` 1, `<|im_end|>` 2, `<image>` 3)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_serialized(vocab_size)),
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<image>"],
    )
