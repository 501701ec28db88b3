# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`LlavaVRVisionCollator`: TRL's vision-language collator that also reads a `videos` column.

TRL 1.16's `DataCollatorForVisionLanguageModeling` fills the `{"type": "image"}` items of each row's `messages` from
its `images` column and tokenizes the batch with the processor's chat template. A row's videos are filled the same
way here: the i-th payload-less `{"type": "video"}` item of the row gets `videos[i]`
(`{"type": "video", "video": ...}`), which `apply_chat_template` hands to the processor as `videos=`; TRL's collator
then does the rest unchanged (`images`, padding, truncation at `max_length`, assistant-only loss masks, labels).

A row's `videos`: a list (empty: no video) of videos, each what `LlavaVRProcessor(videos=...)` takes: a list of
frames (PIL images: a `datasets` column `List(List(Image()))`; frame file paths are opened here), a
`(frames, height, width, 3)` array, or a video file path (GIF / APNG, mp4 / webm with PyAV: `List(Value("string"))`).
A `video` key (one video per row) works like TRL's `image`.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from trl.trainer.sft_trainer import DataCollatorForVisionLanguageModeling

VIDEO_PAYLOAD_KEYS = ("video", "url", "path")  # the keys Transformers' `apply_chat_template` reads a video from


def _video(video):
    """A video given as a list of frame file paths -> its frames as PIL images; anything else as it is."""
    if isinstance(video, (list, tuple)) and video and all(isinstance(frame, (str, os.PathLike)) for frame in video):
        from PIL import Image

        return [Image.open(frame) for frame in video]
    return video


def _parts(content) -> list | str | None:
    """A message's content with the keys Arrow filled with `None` dropped from every item (a `datasets` column
    stores all items with the union of their keys: `{"type": "video", "text": None}`)."""
    if not isinstance(content, list):
        return content
    return [{key: value for key, value in part.items() if value is not None} for part in content]


def fill_video_placeholders(messages: list[dict], videos: list, num_images: int = 0) -> list[dict]:
    """A copy of `messages` whose payload-less `{"type": "video"}` items hold `videos` in order.

    Like TRL's `prepare_multimodal_messages` for images: when no message has a video item and the first user
    message is a plain string, that message becomes `num_images` image items, one video item per video and the text.
    Raises `ValueError` when the video items and `videos` differ in number."""
    messages = [{**message, "content": _parts(message.get("content"))} for message in messages]
    has_items = any(
        isinstance(message["content"], list) and any(part.get("type") == "video" for part in message["content"])
        for message in messages
    )
    if videos and not has_items:
        for i, message in enumerate(messages):
            if message["role"] == "user" and isinstance(message["content"], str):
                items = [{"type": "image"}] * num_images + [{"type": "video"}] * len(videos)
                messages[i] = {**message, "content": [*items, {"type": "text", "text": message["content"]}]}
                break
    slots = [
        (m, p)
        for m, message in enumerate(messages)
        if isinstance(message["content"], list) and message["role"] != "tool"
        for p, part in enumerate(message["content"])
        if part.get("type") == "video" and not any(key in part for key in VIDEO_PAYLOAD_KEYS)
    ]
    if len(slots) != len(videos):
        raise ValueError(
            f"a row has {len(slots)} {{'type': 'video'}} item(s) in its messages but {len(videos)} video(s) in its "
            "`videos`: each video needs exactly one video item"
        )
    for (m, p), video in zip(slots, videos, strict=True):
        content = list(messages[m]["content"])
        content[p] = {**content[p], "video": _video(video)}
        messages[m] = {**messages[m], "content": content}
    return messages


@dataclasses.dataclass
class LlavaVRVisionCollator(DataCollatorForVisionLanguageModeling):
    """TRL's `DataCollatorForVisionLanguageModeling` (same fields) with a `videos` column: rows with images, videos,
    both or neither in one batch. Video rows must be conversational (`messages`); the batch then carries
    `pixel_values_videos` `(num_videos, frames, 3, tile, tile)` next to TRL's outputs (every video of a batch needs
    the same frame count, or a processor `num_frames` that samples them to one)."""

    @classmethod
    def from_trl(cls, collator: DataCollatorForVisionLanguageModeling) -> LlavaVRVisionCollator:
        """The same collator (same processor, `max_length`, loss masks) that also reads `videos`."""
        return cls(**{field.name: getattr(collator, field.name) for field in dataclasses.fields(collator)})

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if any("videos" in example or "video" in example for example in examples):
            examples = [self._with_videos(example) for example in examples]
        return super().torch_call(examples)

    def _with_videos(self, example: dict[str, Any]) -> dict[str, Any]:
        example = dict(example)
        videos = [example.pop("video")] if "video" in example else example.pop("videos", None)
        videos = list(videos or [])
        if "image" not in example:
            example["images"] = list(example.get("images") or [])
        if "messages" not in example:
            if videos:
                raise ValueError(
                    "video rows need conversational `messages` (with {'type': 'video'} items): LLaVA-VR's SFT does "
                    "not read videos in text or prompt-completion rows"
                )
            return example
        num_images = 1 if "image" in example else len(example["images"])
        example["messages"] = fill_video_placeholders(example["messages"], videos, num_images)
        return example


__all__ = ["LlavaVRVisionCollator", "fill_video_placeholders"]
