"""Training data as people have it: LLaVA's conversation JSON / JSONL read directly (`--llava_data`: multi-turn,
`<image>` anywhere, text-only rows, every bad row reported by file and row before training, images kept as paths),
`--jsonl` lines without an image (text-only samples), `--dataset` rows whose image items do not match their images
refused up front, and evaluation never on the training rows of a single-split dataset."""

import json

import pytest
from PIL import Image

pytest.importorskip("trl")

from llava_vr.data.jsonl_documents import read_jsonl_documents  # noqa: E402
from llava_vr.data.llava_conversations import llava_conversation_dataset  # noqa: E402
from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.sft_data import jsonl_dataset, named_dataset  # noqa: E402
from llava_vr.training.sft_options import parse_args  # noqa: E402

ROWS = [
    {
        "id": "two-turns",
        "image": "0.png",
        "conversations": [
            {"from": "human", "value": "<image>\nWhat colour?"},
            {"from": "gpt", "value": "blue"},
            {"from": "human", "value": "Sure?"},
            {"from": "gpt", "value": "yes"},
        ],
    },
    {"id": "text", "conversations": [{"from": "human", "value": "Say hi"}, {"from": "gpt", "value": "hi"}]},
    {
        "id": "middle",
        "image": "1.png",
        "conversations": [{"from": "human", "value": "Look: <image>\nwhat is it?"}, {"from": "gpt", "value": "a box"}],
    },
    {
        "id": "two-images",
        "image": ["1.png", "2.png"],
        "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "human", "value": "<image>\n<image>\nSame?"},
            {"from": "gpt", "value": "no"},
        ],
    },
]


@pytest.fixture
def llava_files(tmp_path):
    root = tmp_path / "images"
    root.mkdir()
    for index in range(3):
        Image.new("RGB", (64, 48), (60 * index, 100, 200)).save(root / f"{index}.png")
    (tmp_path / "data.json").write_text(json.dumps(ROWS))
    (tmp_path / "data.jsonl").write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    return tmp_path, root


def text(item):
    return {"type": "text", "text": item}


IMAGE = {"type": "image", "text": None}


@pytest.mark.parametrize("name", ["data.json", "data.jsonl"])
def test_llava_rows_become_trl_chats_with_their_turns_markers_and_images(name, llava_files):
    folder, root = llava_files
    dataset = llava_conversation_dataset(str(folder / name), str(root))
    assert len(dataset) == 4
    assert dataset[0]["messages"] == [
        {"role": "user", "content": [IMAGE, text("What colour?")]},
        {"role": "assistant", "content": [text("blue")]},
        {"role": "user", "content": [text("Sure?")]},
        {"role": "assistant", "content": [text("yes")]},
    ]
    assert dataset[1]["messages"][0] == {"role": "user", "content": [text("Say hi")]} and dataset[1]["images"] == []
    assert dataset[2]["messages"][0]["content"] == [text("Look:"), IMAGE, text("what is it?")]
    assert [m["role"] for m in dataset[3]["messages"]] == ["system", "user", "assistant"]
    assert dataset[3]["messages"][1]["content"] == [IMAGE, IMAGE, text("Same?")]
    assert [len(images) for images in dataset["images"]] == [1, 0, 1, 2]
    # stored as paths, decoded only when a row is read: a large file is never held as decoded images
    stored = dataset.data.column("images").to_pylist()
    assert [entry["path"] for entry in stored[3]] == [str(root / "1.png"), str(root / "2.png")]
    assert all(entry["bytes"] is None for row in stored for entry in row)


def test_every_bad_llava_row_is_reported_by_file_row_and_id_before_anything_loads(llava_files, capsys):
    folder, root = llava_files
    bad = [
        *ROWS,
        {
            "id": "gone",
            "image": "9.png",
            "conversations": [{"from": "human", "value": "<image>\nx"}, {"from": "gpt", "value": "y"}],
        },
        {
            "id": "no-marker",
            "image": "0.png",
            "conversations": [{"from": "human", "value": "x"}, {"from": "gpt", "value": "y"}],
        },
        {"id": "no-image", "conversations": [{"from": "human", "value": "<image> x"}, {"from": "gpt", "value": "y"}]},
        {"id": "no-reply", "conversations": [{"from": "human", "value": "x"}]},
    ]
    path = folder / "bad.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in bad) + "not json\n")
    out = folder / "run"
    status = sft_cli.main(["--tiny", "--llava_data", str(path), "--image_root", str(root), "--output_dir", str(out)])
    err = capsys.readouterr().err
    assert status == 2 and not out.exists()
    assert f"error: {path}: 5 of 9 rows cannot be used; fix or remove them (nothing was trained):" in err
    for line in (
        f"{path}:5 (id gone): no image file {root / '9.png'}",
        f"{path}:6 (id no-marker): 0 <image> in the conversation but 1 image(s)",
        f"{path}:7 (id no-image): 1 <image> in the conversation but 0 image(s)",
        f"{path}:8 (id no-reply): no 'gpt' turn to learn from",
        f"{path}:9: invalid JSON",
    ):
        assert f"\n  {line}" in err, err


def test_sft_trains_on_llava_data_mixing_multi_turn_text_only_and_two_image_rows(llava_files, tmp_path):
    folder, root = llava_files
    args = parse_args(
        [
            "--tiny",
            "--llava_data",
            str(folder / "data.json"),
            "--image_root",
            str(root),
            "--max_steps",
            "1",
            "--per_device_train_batch_size",
            "4",
            "--output_dir",
            str(tmp_path / "r"),
        ]
    )
    trainer = sft_cli.run(*args)
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 1 and 0 < losses[0] < 20


def test_jsonl_lines_without_an_image_are_text_only_samples(tmp_path):
    Image.new("RGB", (32, 32)).save(tmp_path / "a.png")
    path = tmp_path / "mixed.jsonl"
    path.write_text(
        json.dumps({"image": "a.png", "question": "Q?", "answer": "1"})
        + "\n"
        + json.dumps({"question": "Capital of France?", "answer": "Paris"})
        + "\n"
    )
    assert read_jsonl_documents(str(path), str(tmp_path)) == [
        (1, str(tmp_path / "a.png"), "Q?", "1"),
        (2, None, "Capital of France?", "Paris"),
    ]
    dataset = jsonl_dataset(str(path), str(tmp_path))
    assert dataset[1]["messages"][0]["content"] == [{"type": "text", "text": "Capital of France?"}]
    assert dataset[1]["images"] == [] and len(dataset[0]["images"]) == 1


def chat(*content):
    return [
        {"role": "user", "content": [*content, {"type": "text", "text": "q"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "a"}]},
    ]


@pytest.fixture
def saved_dataset(tmp_path):
    from datasets import Dataset, List
    from datasets import Image as ImageFeature

    def save(rows, name="saved"):
        image = Image.new("RGB", (16, 16))
        data = {"messages": [r[0] for r in rows], "images": [[image] * r[1] for r in rows]}
        Dataset.from_dict(data).cast_column("images", List(ImageFeature())).save_to_disk(tmp_path / name)
        return tmp_path / name

    return save


def test_dataset_rows_whose_images_have_no_placeholder_are_refused_before_training(saved_dataset, capsys):
    """TRL failed on such a row mid-training (a 55-line traceback); counted from the Arrow columns up front."""
    folder = saved_dataset([(chat({"type": "image"}), 1), (chat(), 1), (chat(), 0), (chat(), 2)])
    status = sft_cli.main(["--tiny", "--dataset", str(folder), "--output_dir", str(folder / "run")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"error: dataset {folder} (train): 2 of 4 rows have image placeholders that do not match" in err
    assert "\n  row 1: 0 {'type': 'image'} item(s) in messages, 1 image(s)" in err
    assert "\n  row 3: 0 {'type': 'image'} item(s) in messages, 2 image(s)" in err
    assert len(named_dataset(str(saved_dataset([(chat({"type": "image"}), 1), (chat(), 0)], "ok")), None, "train")) == 2


def test_evaluation_on_a_dataset_without_splits_is_refused_not_run_on_the_training_rows(saved_dataset, capsys):
    folder = saved_dataset([(chat({"type": "image"}), 1), (chat(), 0)])
    status = sft_cli.main(
        [
            "--tiny",
            "--dataset",
            str(folder),
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "1",
            "--output_dir",
            str(folder / "run"),
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and not (folder / "run").exists()
    assert f"error: dataset {folder} is one split (a saved Dataset), the training rows" in err
    assert "--dataset_eval_split" in err
