# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""An image too large to decode is the client's error: a 400, not a 500.

vLLM 0.32 turns unreadable images into `ValueError` (HTTP 400) and refuses images above `VLLM_MAX_IMAGE_PIXELS`
(178,956,970 by default) the same way, but PIL's own decompression-bomb check fires first, at exactly that size, with
`DecompressionBombError`, which the server reports as a 500 Internal Server Error. `load_bytes` of vLLM's image
loader is wrapped once to report it like any other unreadable image.
"""

from functools import wraps


def report_decompression_bombs_as_bad_requests() -> None:
    from PIL import Image
    from vllm.multimodal.media.image import ImageMediaIO

    original = ImageMediaIO.load_bytes
    if getattr(original, "_llava_vr_wrapped", False):
        return

    @wraps(original)
    def load_bytes(self, data: bytes):
        try:
            return original(self, data)
        except Image.DecompressionBombError as error:
            raise ValueError(f"Failed to load image: {error}") from error

    load_bytes._llava_vr_wrapped = True
    ImageMediaIO.load_bytes = load_bytes


__all__ = ["report_decompression_bombs_as_bad_requests"]
