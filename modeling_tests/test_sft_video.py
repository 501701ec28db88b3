"""SFT on data with video samples: TRL's `messages` + `videos` columns (next to `images`) train through
`LlavaVRSFTTrainer`'s collator, with assistant-only labels; rows whose video items do not match their videos are
refused before training."""

import copy

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("trl")
from datasets import Dataset, List  # noqa: E402
from datasets import Image as ImageFeature  # noqa: E402
from test_video_llava_vr import video_processor_and_model  # noqa: E402
from trl import SFTConfig  # noqa: E402

from llava_vr.hub.refusals import LlavaVRRefusal  # noqa: E402
from llava_vr.training import LlavaVRSFTTrainer  # noqa: E402
from llava_vr.training.collator import LlavaVRVisionCollator, fill_video_placeholders  # noqa: E402
from llava_vr.training.sft_data import named_dataset  # noqa: E402

FRAMES = 2


def frames(seed, count=FRAMES, size=(30, 40)):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(count)]


def chat(question, answer, *items):
    return [
        {"role": "user", "content": [*items, {"type": "text", "text": question}]},
        {"role": "assistant", "content": [{"type": "text", "text": answer}]},
    ]


VIDEO, IMAGE = {"type": "video"}, {"type": "image"}


def mixed_rows():
    """(messages, images, videos): a video row, an image row, a text-only row, an image + video row."""
    return [
        (chat("What moves?", "A red square.", VIDEO), [], [frames(1)]),
        (chat("Total?", "42", IMAGE), frames(2, 1, (60, 100)), []),
        (chat("Capital of France?", "Paris"), [], []),
        (chat("Same as the picture?", "No.", IMAGE, VIDEO), frames(3, 1), [frames(4)]),
    ]


def to_dataset(rows, with_images=True):
    data = {"messages": [r[0] for r in rows], "videos": [r[2] for r in rows]}
    features = {"videos": List(List(ImageFeature()))}
    if with_images:
        data["images"], features["images"] = [r[1] for r in rows], List(ImageFeature())
    dataset = Dataset.from_dict(data)
    for column, feature in features.items():
        dataset = dataset.cast_column(column, feature)
    return dataset


def sft_config(output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        assistant_only_loss=True,
        max_length=2048,
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    return SFTConfig(**{**values, **overrides})


@pytest.fixture(scope="module")
def processor_and_model():
    processor, model = video_processor_and_model(perturb_vr=False)
    tokenizer = processor.tokenizer
    model.config.text_config.pad_token_id = tokenizer.pad_token_id
    return processor, model


def test_video_rows_labels_cover_only_the_assistant_reply(processor_and_model, tmp_path):
    processor, model = processor_and_model
    dataset = to_dataset(mixed_rows())
    trainer = LlavaVRSFTTrainer(
        model=copy.deepcopy(model), args=sft_config(tmp_path), train_dataset=dataset, processing_class=processor
    )
    assert isinstance(trainer.data_collator, LlavaVRVisionCollator)
    rows = [dataset[i] for i in range(len(dataset))]
    batch = trainer.data_collator(copy.deepcopy(rows))
    tile = model.config.vision_config.image_size
    assert batch["pixel_values_videos"].shape == (2, FRAMES, 3, tile, tile)
    assert batch["pixel_values"].shape[0] == 2  # the two images
    tok = processor.tokenizer
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    video_id, image_id = processor.video_token_id, model.config.image_token_index
    per_video = processor.video_num_tokens(FRAMES)
    for (messages, images, videos), ids, labels, mask in zip(
        mixed_rows(), batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        ids = ids.tolist()
        assert sum(i == video_id for i in ids) == per_video * len(videos)
        assert (sum(i == image_id for i in ids) > 0) == bool(images)
        starts = [i + len(header) for i in range(len(ids) - len(header) + 1) if ids[i : i + len(header)] == header]
        assert len(starts) == 1
        end = ids.index(im_end, starts[0])
        expected = torch.zeros(len(ids), dtype=torch.bool)
        expected[starts[0] : end + 1] = True  # the reply and its <|im_end|>
        assert torch.equal(labels != -100, expected)
        assert torch.equal(labels[expected], torch.tensor(ids)[expected])
        assert tok.decode(ids[starts[0] : end]) == messages[1]["content"][0]["text"]
        assert (labels[mask == 0] == -100).all()
    # truncation that would cut through a video's tokens is refused (by the processor), not passed on to the model
    first_video_token = batch["input_ids"][0].tolist().index(video_id)
    trainer.data_collator.max_length = first_video_token + per_video - 1  # keeps all but the last video token
    cut = rf"`video` token count .* ids=\[{per_video - 1}\] and text=\[{per_video}\].*max_length"
    with pytest.raises(ValueError, match=cut):
        trainer.data_collator(copy.deepcopy(rows[:1]))
    trainer.data_collator.max_length = 2048
    # the video pixels are the processor's own for the same frames
    alone = processor(text="<video>", videos=[rows[0]["videos"][0]], return_tensors="pt")["pixel_values_videos"]
    torch.testing.assert_close(batch["pixel_values_videos"][:1], alone, rtol=0, atol=0)


def test_two_steps_on_video_image_and_text_rows_train_vr_and_projector(processor_and_model, tmp_path):
    processor, base = processor_and_model
    model = copy.deepcopy(base)
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    trainer = LlavaVRSFTTrainer(
        model=model, args=sft_config(tmp_path), train_dataset=to_dataset(mixed_rows()), processing_class=processor
    )
    trainer.train()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(losses) == 2 and all(np.isfinite(losses)), losses
    after = dict(model.named_parameters())
    for part in ("vision_remember", "multi_modal_projector"):
        names = [n for n in before if part in n]
        assert names, part
        assert any(not torch.equal(before[n], after[n].detach()) for n in names), f"{part} did not change"


def test_a_dataset_with_videos_and_no_images_column_trains(processor_and_model, tmp_path):
    processor, base = processor_and_model
    rows = [r for r in mixed_rows() if not r[1]]  # the video row and the text-only row
    dataset = to_dataset(rows, with_images=False)
    model = copy.deepcopy(base)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if "vision_remember" in n}
    trainer = LlavaVRSFTTrainer(
        model=model, args=sft_config(tmp_path, max_steps=1), train_dataset=dataset, processing_class=processor
    )
    assert isinstance(trainer.data_collator, LlavaVRVisionCollator)
    trainer.train()
    loss = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    assert len(loss) == 1 and np.isfinite(loss[0])
    assert any(not torch.equal(before[n], p.detach()) for n, p in model.named_parameters() if n in before)


def test_rows_whose_video_items_do_not_match_their_videos_are_refused_before_training(tmp_path):
    rows = [
        (chat("q", "a", VIDEO), [], [frames(1)]),  # fine
        (chat("q", "a"), [], [frames(2)]),  # a video without an item
        (chat("q", "a", VIDEO, VIDEO), [], [frames(3)]),  # two items, one video
        (chat("q", "a", IMAGE), frames(4, 1), []),  # fine
    ]
    to_dataset(rows).save_to_disk(tmp_path / "bad")
    with pytest.raises(LlavaVRRefusal) as refused:
        named_dataset(str(tmp_path / "bad"), None, "train")
    message = str(refused.value)
    assert "2 of 4 rows have video placeholders that do not match their videos" in message
    assert "\n  row 1: 0 {'type': 'video'} item(s) in messages, 1 video(s)" in message
    assert "\n  row 2: 2 {'type': 'video'} item(s) in messages, 1 video(s)" in message
    assert "row 0" not in message and "row 3" not in message
    to_dataset([rows[0], rows[3]]).save_to_disk(tmp_path / "good")
    assert len(named_dataset(str(tmp_path / "good"), None, "train")) == 2
    # video items without any `videos` column are refused too
    Dataset.from_dict({"messages": [chat("q", "a", VIDEO)], "images": [[]]}).save_to_disk(tmp_path / "no-videos")
    with pytest.raises(LlavaVRRefusal, match=r"row 0: 1 \{'type': 'video'\} item\(s\) in messages, 0 video\(s\)"):
        named_dataset(str(tmp_path / "no-videos"), None, "train")


def test_the_collator_fills_video_items_in_order_and_names_a_mismatch():
    first, second = frames(1), frames(2)
    messages = chat("q", "a", VIDEO, {"type": "text", "text": "and"}, VIDEO)
    filled = fill_video_placeholders(messages, [first, second])
    assert [p.get("video") for p in filled[0]["content"] if p["type"] == "video"] == [first, second]
    assert "video" not in messages[0]["content"][0]  # the row is not modified
    plain = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]  # string contents: like TRL
    assert [p["type"] for p in fill_video_placeholders(plain, [first], num_images=1)[0]["content"]] == [
        "image",
        "video",
        "text",
    ]
    with pytest.raises(ValueError, match=r"2 \{'type': 'video'\} item\(s\) in its messages but 1 video\(s\)"):
        fill_video_placeholders(messages, [first])


def test_the_sft_command_trains_on_a_saved_dataset_with_videos(processor_and_model, tmp_path):
    from safetensors.torch import load_file

    from llava_vr.training import sft_cli

    processor, model = processor_and_model
    model.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    to_dataset(mixed_rows()).save_to_disk(tmp_path / "data")
    argv = ["--model", str(tmp_path / "base"), "--dataset", str(tmp_path / "data")]
    argv += ["--output_dir", str(tmp_path / "run")]
    argv += ["--max_steps", "1", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none"]
    assert sft_cli.main(argv) == 0
    before = load_file(tmp_path / "base" / "model.safetensors")
    after = load_file(tmp_path / "run" / "model.safetensors")
    names = [n for n in before if "vision_remember" in n]
    assert names and any(not torch.equal(before[n], after[n]) for n in names)
