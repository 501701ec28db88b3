"""The offline document generator is deterministic for a seed and its splits share no image."""

import pytest

from llava_vr.data.synthetic_documents import KINDS, content_key, generate_samples, synthetic_document_dataset


def test_same_seed_gives_identical_samples_and_other_seed_differs():
    first, again, other = (generate_samples(8, seed=s) for s in (3, 3, 4))
    assert [content_key(s.image) for s in first] == [content_key(s.image) for s in again]
    assert [(s.question, s.answer) for s in first] == [(s.question, s.answer) for s in again]
    assert [content_key(s.image) for s in first] != [content_key(s.image) for s in other]


def test_train_and_test_splits_share_no_image():
    train = {content_key(s.image) for s in generate_samples(200, seed=0, split="train", kinds=("digit_grid",))}
    test = {content_key(s.image) for s in generate_samples(50, seed=0, split="test", kinds=("digit_grid",))}
    assert not train & test


def test_dataset_rows_are_trl_vision_chats_covering_every_kind():
    dataset = synthetic_document_dataset(len(KINDS) * 2, seed=1, size=112)
    row = dataset[0]
    assert [m["role"] for m in row["messages"]] == ["user", "assistant"]
    assert row["messages"][0]["content"][0]["type"] == "image" and len(row["images"]) == 1
    assert row["images"][0].size == (112, 112)
    kinds = {s.kind for s in generate_samples(len(KINDS), seed=1)}
    assert kinds == set(KINDS)


def test_unknown_split_or_kind_is_refused():
    with pytest.raises(ValueError, match="split"):
        generate_samples(1, split="dev")
    with pytest.raises(ValueError, match="kinds"):
        generate_samples(1, kinds=("poster",))


def test_digit_grid_answer_formats_name_the_same_digits():
    kwargs = dict(kinds=("digit_grid",), size=56, grid=4)
    spaced, compact, labelled = (
        generate_samples(3, seed=5, split="test", question=q, **kwargs)[2]
        for q in ("all", "all_compact", "all_labelled")
    )
    assert content_key(spaced.image) == content_key(compact.image) == content_key(labelled.image)
    assert compact.answer == spaced.answer.replace(" ", "") and len(compact.answer) == 16
    assert labelled.answer == "".join(
        f"{letter}{digit}" for letter, digit in zip("abcdefghijklmnop", compact.answer, strict=False)
    )
    with pytest.raises(ValueError, match="at most a 5x5 grid"):
        generate_samples(1, kinds=("digit_grid",), size=84, grid=6, question="all_labelled")


def test_chat_tokenizer_never_merges_a_digit():
    from llava_vr.data.tokenizers import train_chat_tokenizer

    corpus = ["Read row 12. 12 34 56 a1b2"] * 20
    split = train_chat_tokenizer(corpus, vocab_size=300)
    tokens = split.tokenize("12 34 a1b2")
    assert [t for t in tokens if any(c.isdigit() for c in t)] == list("123412")
    assert split.decode(split("12 34 a1b2")["input_ids"]) == "12 34 a1b2"
