"""Gradient checkpointing, reentrant (TRL's choice for PEFT + ZeRO-3) or not, gives the gradients of the unchecked
model, full fine-tuning and LoRA, with Vision Remember active and the tower trained."""

import pytest
import torch

from llava_vr.testing_utils import image_inputs, tiny_model
from llava_vr.training.lora import lora_config_for

SIZES = [(60, 100), (120, 40)]


def gradients(checkpointing: dict | None, lora: bool, interaction: str) -> dict[str, torch.Tensor]:
    model = tiny_model(perturb_vr=True, vision_remember_interaction=interaction).train()
    inputs, _ = image_inputs(model, SIZES)
    if lora:
        from peft import get_peft_model

        model = get_peft_model(model, lora_config_for(model, r=4, dropout=0.0))
    if checkpointing is not None:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=checkpointing)
        if checkpointing["use_reentrant"]:
            model.enable_input_require_grads()  # as Transformers' Trainer does for reentrant checkpointing
    model(**inputs, labels=inputs["input_ids"]).loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
@pytest.mark.parametrize("use_reentrant", [False, True], ids=["non-reentrant", "reentrant"])
@pytest.mark.parametrize("interaction", ["sela", "deformable"])
def test_checkpointed_gradients_equal_the_unchecked_models(interaction, use_reentrant, lora):
    expected = gradients(None, lora, interaction)
    actual = gradients({"use_reentrant": use_reentrant}, lora, interaction)
    assert actual.keys() == expected.keys()
    assert any("vision_tower" in name for name in expected) != lora  # LoRA freezes the tower
    assert any("vision_remember" in name for name in expected)
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=1e-5, atol=1e-6, msg=name)
