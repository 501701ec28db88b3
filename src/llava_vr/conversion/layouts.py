# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Tensor-name layouts of the recognised sources, and their renaming to LLaVA-VR's names.

* `transformers`: the current Transformers layout (`model.language_model.*`, `model.vision_tower.*`, `lm_head.*`);
* `llava-hf`: the llava-hf Hub layout (`language_model.model.*`, `language_model.lm_head.*`,
  `vision_tower[.vision_model].*`, `multi_modal_projector.*`, `image_newline`);
* `lmms-lab`: the LLaVA-NeXT repo (`model.layers.*`, `model.mm_projector.0/2`,
  `model.vision_tower.vision_tower.vision_model.*`).
"""

from __future__ import annotations

import re

from ..hub.refusals import LlavaVRRefusal

# (pattern, replacement); replacement None drops the tensor. First match wins; unmatched keys are refused.
DROP_ALWAYS = [(r"\.position_ids$", None), (r"rotary_emb\.inv_freq$", None)]
KEY_MAPS = {
    "transformers": DROP_ALWAYS
    + [
        (r"^model\.vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^(model\.(vision_tower|multi_modal_projector|language_model)\.)", r"\1"),
        (r"^model\.image_newline$", "model.image_newline"),
        (r"^lm_head\.", "lm_head."),
    ],
    "llava-hf": DROP_ALWAYS
    + [
        (r"^language_model\.lm_head\.", "lm_head."),
        (r"^language_model\.model\.", "model.language_model."),
        (r"^vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^vision_tower\.", "model.vision_tower."),
        (r"^multi_modal_projector\.", "model.multi_modal_projector."),
        (r"^image_newline$", "model.image_newline"),
    ],
    "lmms-lab": DROP_ALWAYS
    + [
        (r"^model\.vision_tower\.vision_tower\.vision_model\.head\.", None),  # SigLIP's pooling head: unused
        (r"^model\.vision_tower\.vision_tower\.vision_model\.", "model.vision_tower."),
        (r"^model\.mm_projector\.0\.", "model.multi_modal_projector.linear_1."),
        (r"^model\.mm_projector\.2\.", "model.multi_modal_projector.linear_2."),
        (r"^model\.image_newline$", "model.image_newline"),
        (r"^model\.(embed_tokens|layers|norm)\.", r"model.language_model.\1."),
        (r"^lm_head\.", "lm_head."),
    ],
}


def rename_key(key: str, layout: str) -> str | None:
    """A source tensor name -> its LLaVA-VR name, or None when the tensor is dropped; refuses unknown names."""
    for pattern, replacement in KEY_MAPS[layout]:
        if re.search(pattern, key):
            return None if replacement is None else re.sub(pattern, replacement, key, count=1)
    raise LlavaVRRefusal(f"unrecognised tensor {key!r} in a {layout}-layout checkpoint")


def renamed_shapes(shapes: dict[str, tuple], layout: str) -> dict[str, tuple]:
    """`{source name: shape}` -> `{LLaVA-VR name: shape}` without the dropped tensors."""
    return {name: shape for key, shape in shapes.items() if (name := rename_key(key, layout))}
