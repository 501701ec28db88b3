# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Conversion of LLaVA-NeXT / LLaVA-OneVision checkpoints (Transformers, current and llava-hf layouts, and the
LLaVA-NeXT repo's lmms-lab layout) into LLaVA-VR `trust_remote_code` folders: `llava-vr convert` (`convert.main`).

    sources.py    list / stream the weights, detect what the source is      layouts.py  tensor-name maps
    lmms_lab.py   the LLaVA-NeXT-repo layout (tower inferred, <image> added)  plan.py     the LlavaVRConfig values
    weights.py    carried / new / dropped tensors, the model built           artifacts.py tokenizer, processors
    convert.py    orchestration, the output folder                           errors.py   ConversionError
    options.py    the command line                                           resolve.py  folder / Hub cache / download
"""

from .convert import check_output, convert_checkpoint, main
from .errors import HUB_ID, PICKLE_SUFFIXES, ConversionError, one_line
from .lmms_lab import infer_vision_config, parse_pinpoints
from .options import build_parser, parse_args
from .resolve import resolve_source
from .sources import Source, load_source, read_state_dict, stored_tensors
from .weights import WeightReport, plan_weights

__all__ = [
    "ConversionError",
    "HUB_ID",
    "PICKLE_SUFFIXES",
    "Source",
    "WeightReport",
    "build_parser",
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
    "resolve_source",
    "stored_tensors",
]
