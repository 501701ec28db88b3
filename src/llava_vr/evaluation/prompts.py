# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Chat prompts of lmms-eval requests for LLaVA-VR (torch-free: both back ends use it).

Where the images go: a task that writes `<image>` placeholders into its prompt keeps them where it put them (lmms-eval's
convention, what its LLaVA models do), so a task built for a model trained with the question first (the project's
digit-grid task) gives it that layout. A prompt without placeholders gets its images before the text
(`image_placement="first"`, LLaVA's layout and lmms-eval's for chat models; the real benchmarks' prompts have none) or
after it (`"last"`).
"""

from __future__ import annotations

IMAGE_PLACEHOLDER = "<image>"
PLACEMENTS = ("first", "last")


def user_content(context: str, num_images: int, image_placement: str = "first", sample: str = "") -> list[dict]:
    """The user turn's content items (`{"type": "text"}` / `{"type": "image"}`) for `context` and `num_images`."""
    if image_placement not in PLACEMENTS:
        raise ValueError(f"image_placement={image_placement!r}: expected one of {PLACEMENTS}")
    placeholders = context.count(IMAGE_PLACEHOLDER)
    if placeholders == 0:
        text = [{"type": "text", "text": context}] if context else []
        images = [{"type": "image"}] * num_images
        return images + text if image_placement == "first" else text + images
    if placeholders != num_images:
        raise ValueError(
            f"{sample or 'a sample'}: its prompt has {placeholders} {IMAGE_PLACEHOLDER} placeholders for "
            f"{num_images} images"
        )
    content = []
    for index, piece in enumerate(context.split(IMAGE_PLACEHOLDER)):
        if index:
            content.append({"type": "image"})
            piece = piece.removeprefix("\n")  # the chat template writes `<image>` + newline itself
        if piece:
            content.append({"type": "text", "text": piece})
    return content


def chat_prompt(processor, context: str, num_images: int, image_placement: str = "first", sample: str = "") -> str:
    """The rendered prompt (chat template, generation prompt added) of one request."""
    content = user_content(context, num_images, image_placement, sample)
    messages = [{"role": "user", "content": content}]
    return processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def flat_visuals(visuals, sample: str = "") -> list:
    """A request's visuals (`doc_to_visual`'s list, possibly nested, or `None`) as a flat list of images; videos
    (paths) and audio are refused with the sample named."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    flat = []
    for item in visuals:
        if isinstance(item, (list, tuple)):
            flat.extend(flat_visuals(item, sample))
        elif isinstance(item, (str, dict)):
            raise ValueError(f"{sample or 'a sample'}: LLaVA-VR evaluates images only, got {type(item).__name__}")
        else:
            flat.append(item.convert("RGB") if hasattr(item, "convert") else item)
    return flat


def cut_at_stops(text: str, until) -> str:
    """`text` up to the first of the `until` strings (lmms-eval's stop sequences)."""
    for stop in [until] if isinstance(until, str) else list(until or []):
        if stop:
            text = text.split(stop)[0]
    return text


__all__ = ["IMAGE_PLACEHOLDER", "PLACEMENTS", "chat_prompt", "cut_at_stops", "flat_visuals", "user_content"]
