# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""One prefill of the whole model, timed (with its parts) or instrumented (FLOPs, op and call counts, peak memory).

`probe_prefill` reports when each part of a forward starts and stops: forward hooks on the modules, and
`unittest.mock.patch.object` wrappers (restored on exit) on the three calls that are not modules.
"""

import time
from collections.abc import Callable, Collection
from contextlib import ExitStack, contextmanager
from unittest import mock

import torch

from llava_vr.vision_remember_llava_vr import VisionRememberInputs

from .dispatch import OpCounter
from .flops import flop_counter, module_flops
from .machine import synchronize
from .memory import PeakMemory
from .model_results import component_flops
from .timing import Marks, around_forward

TIMED_PARTS = ("vision", "tower", "projector", "vr_build", "vr", "lm")
COUNTED_PARTS = ("tower", "saliency", "vr_build", "vr", "absorbed", "plain")
FORMULATION_PARTS = ("absorbed", "plain")  # the cross-attention's `attend_<formulation>` calls


def _wrapped(function: Callable, part: str, start: Callable, stop: Callable) -> Callable:
    def call(*args, **kwargs):
        start(part, part)
        out = function(*args, **kwargs)
        stop(part, part)
        return out

    return call


@contextmanager
def probe_prefill(model, start: Callable, stop: Callable, parts: Collection[str] = TIMED_PARTS):
    """Inside the block, each forward of `model` calls `start(part, key)` / `stop(part, key)` around its `parts`:
    `tower`, `projector`, `lm` (the decoder, VR included), `vr` (each VR module; key = the module), `vision`
    (`get_image_features`: tower, saliency, projector, packing), `vr_build` (`VisionRememberInputs.build`),
    `saliency` (`SaliencyRecorder.pop`) and `absorbed` / `plain` (each VR cross-attention's `attend_absorbed` /
    `attend_plain`: the formulation it ran). The key of the others is the part's name."""
    inner = model.model
    modules = [("tower", inner.vision_tower), ("projector", inner.multi_modal_projector), ("lm", inner.language_model)]
    modules += [("vr", module) for module in inner.language_model.vision_remember.values()]
    recorder = inner._saliency_recorder
    with ExitStack() as stack:
        for part, module in modules:
            if part in parts:
                stack.enter_context(
                    around_forward(module, lambda m, part=part: start(part, m), lambda m, part=part: stop(part, m))
                )
        if "vision" in parts:
            features = _wrapped(inner.get_image_features, "vision", start, stop)
            stack.enter_context(mock.patch.object(inner, "get_image_features", features))
        if "vr_build" in parts:
            build = staticmethod(_wrapped(VisionRememberInputs.build, "vr_build", start, stop))
            stack.enter_context(mock.patch.object(VisionRememberInputs, "build", build))
        if "saliency" in parts and recorder is not None:
            stack.enter_context(mock.patch.object(recorder, "pop", _wrapped(recorder.pop, "saliency", start, stop)))
        for part in (p for p in FORMULATION_PARTS if p in parts):
            for module in inner.language_model.vision_remember.values():
                attend = getattr(module.cross_attention, f"attend_{part}")
                stack.enter_context(
                    mock.patch.object(module.cross_attention, f"attend_{part}", _wrapped(attend, part, start, stop))
                )
        yield


@contextmanager
def count_calls(model):
    """Counts per prefill (the yielded dict): tower forwards, saliency computations, VR-input builds, VR calls, and
    VR cross-attentions run in the absorbed / plain formulation."""
    counts = dict.fromkeys(COUNTED_PARTS, 0)

    def stop(part, key):
        counts[part] += 1

    with probe_prefill(model, lambda part, key: None, stop, COUNTED_PARTS):
        yield counts


def prefill(model, inputs):
    """The prompt's forward with a KV cache, logits of the last position only, and the greedy next token."""
    out = model(**inputs, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].argmax(-1), out.past_key_values


def decode(model, token, cache, steps: int):
    for _ in range(steps):
        out = model(input_ids=token[:, None], past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1)
        cache = out.past_key_values
    return token


def instrumented_run(model, inputs, device, do_flops: bool) -> dict:
    """The first prefill of a case (also its warm-up): FLOPs, per-prefill call counts and peak memory."""
    result = {}
    with torch.inference_mode():
        with PeakMemory(device) as memory, count_calls(model) as calls:
            if do_flops:
                with flop_counter() as counter, OpCounter() as ops:
                    prefill(model, inputs)
            else:
                with OpCounter() as ops:
                    prefill(model, inputs)
    result["aten_ops"] = ops.compute
    result["aten_ops_with_views"] = ops.total
    result["peak_extra_mib"] = memory.extra_mib
    result["peak_total_mib"] = memory.total_mib
    result["calls_per_prefill"] = dict(calls)
    if do_flops:
        result["flops"] = component_flops(module_flops(counter))
    return result


def timed_run(model, inputs, device, decode_tokens: int) -> dict:
    """One timed prefill (with its parts' spans) and, on its cache, `decode_tokens` timed decode steps:
    `{"ttft_s", "decode_s", "spans": {part: ms}}`."""
    marks = Marks(device)
    with torch.inference_mode():
        with probe_prefill(model, lambda part, key: marks.start(key), lambda part, key: marks.stop(key, part)):
            synchronize(device)
            start = time.perf_counter()
            token, cache = prefill(model, inputs)
            synchronize(device)
            ttft = time.perf_counter() - start
        decode_s = None
        if decode_tokens:
            synchronize(device)
            start = time.perf_counter()
            decode(model, token, cache, decode_tokens)
            synchronize(device)
            decode_s = time.perf_counter() - start
    return {"ttft_s": ttft, "decode_s": decode_s, "spans": marks.totals_ms()}


__all__ = ["COUNTED_PARTS", "FORMULATION_PARTS", "TIMED_PARTS", "count_calls", "decode", "instrumented_run",
           "prefill", "probe_prefill", "timed_run"]
