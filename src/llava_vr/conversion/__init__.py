# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Conversion of LLaVA-NeXT / LLaVA-OneVision checkpoints (Transformers, current and llava-hf layouts, and the
LLaVA-NeXT repo's lmms-lab layout) into LLaVA-VR `trust_remote_code` folders: `llava-vr convert` (`convert.main`).

    sources.py    `Source`, its weights listed / streamed / read               layouts.py  tensor-name maps
    lmms_lab.py   the LLaVA-NeXT-repo layout (tower inferred, <image> added)  plan.py     the LlavaVRConfig values
    weights.py    carried / new / dropped tensors, the model built           artifacts.py tokenizer, processors
    convert.py    orchestration, the output folder                           options.py  the command line
    resolve.py    folder / Hub cache / download                              detect.py   what the source is

Built on `llava_vr.hub` (refusals: `LlavaVRRefusal`, one line on stderr and exit status 2; Hub ids: `is_hub_id`;
the model card), which imports nothing of this package.
"""

from .convert import check_output, convert_checkpoint, main
from .detect import load_source
from .lmms_lab import infer_vision_config, parse_pinpoints
from .options import build_parser, parse_args
from .resolve import resolve_source
from .sources import Source, read_state_dict, stored_tensors
from .weights import WeightReport, plan_weights

__all__ = [
    "Source",
    "WeightReport",
    "build_parser",
    "check_output",
    "convert_checkpoint",
    "infer_vision_config",
    "load_source",
    "main",
    "parse_args",
    "parse_pinpoints",
    "plan_weights",
    "read_state_dict",
    "resolve_source",
    "stored_tensors",
]
