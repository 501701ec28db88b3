# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Conversion of LLaVA-NeXT / LLaVA-OneVision checkpoints (Transformers, current and llava-hf layouts, and the
LLaVA-NeXT repo's lmms-lab layout) into LLaVA-VR `trust_remote_code` folders: `llava-vr convert` (`convert.main`).

    sources.py    resolve / list / stream the weights / detect a source     layouts.py  tensor-name maps
    lmms_lab.py   the LLaVA-NeXT-repo layout (tower inferred, <image> added)  plan.py     the LlavaVRConfig values
    weights.py    carried / new / dropped tensors, the model built           artifacts.py tokenizer, processors
    convert.py    orchestration and the command line                         errors.py   ConversionError
"""

from .convert import check_output, convert_checkpoint, main, parse_args
from .errors import HUB_ID, PICKLE_SUFFIXES, ConversionError, one_line
from .lmms_lab import infer_vision_config, parse_pinpoints
from .sources import Source, load_source, read_state_dict, stored_tensors
from .weights import WeightReport, plan_weights

__all__ = [
    "ConversionError",
    "HUB_ID",
    "PICKLE_SUFFIXES",
    "Source",
    "WeightReport",
    "check_output",
    "convert_checkpoint",
    "infer_vision_config",
    "load_source",
    "main",
    "one_line",
    "parse_args",
    "parse_pinpoints",
    "plan_weights",
    "read_state_dict",
    "stored_tensors",
]
