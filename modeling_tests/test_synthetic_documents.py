"""The offline document generator is deterministic for a seed and its splits share no image."""

import pytest

from llava_vr.synthetic_documents import KINDS, content_key, generate_samples, synthetic_document_dataset


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
