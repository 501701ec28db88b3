"""FSDP2 worker for `test_fsdp.py`: run with `torchrun --nproc_per_node 2 fsdp_worker.py OUT_DIR` (CPU, gloo).

Shards the tiny LLaVA-VR model with `fully_shard` (each Qwen2 decoder layer, each CLIP encoder layer, each
VisionRemember module, then the root), takes two AdamW steps and writes what it saw to `OUT_DIR/rank{N}.json`:

- step 1, images on both ranks: the sharded loss equals the unsharded model's loss on the same batch and the
  (gathered) gradients equal the unsharded model's gradients averaged over both ranks' batches (VR and the saliency
  hooks work on sharded layers); every VR parameter gets a gradient;
- step 2, rank 0 has images while rank 1's batch is text-only: must not hang (rank 1 runs tower, projector and VR
  with zero contribution), the loss is finite and the text-only rank's loss is unchanged by that pass.
"""

import copy
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.fsdp import fully_shard
from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

from llava_vr import VisionRemember
from llava_vr.saliency_llava_vr import tower_encoder_layers
from llava_vr.testing_utils import image_inputs, left_pad, tiny_model


def sharded_blocks(model):
    vision_layer = type(tower_encoder_layers(model.model.vision_tower)[0])
    blocks = (Qwen2DecoderLayer, vision_layer, VisionRemember)
    return [m for m in model.modules() if isinstance(m, blocks)]


def global_grad_abs_sum(param) -> float:
    grad = param.grad
    if grad is None:
        return -1.0
    if hasattr(grad, "full_tensor"):
        grad = grad.full_tensor()
    return float(grad.abs().sum())


def main(out_dir: Path):
    # the rendezvous waits for the slower rank's imports (minutes on a loaded 2-core machine)
    dist.init_process_group("gloo", timeout=timedelta(seconds=300))
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = tiny_model(perturb_vr=True).train()
    reference = copy.deepcopy(model)  # unsharded, same weights on every rank
    blocks = sharded_blocks(model)
    classes = sorted({type(m).__name__ for m in blocks})
    assert set(classes) == set(model._no_split_modules), (classes, model._no_split_modules)
    for block in blocks:
        fully_shard(block)
    fully_shard(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    result = {"rank": rank, "wrapped_classes": classes, "num_wrapped": len(blocks)}

    # step 1: images on both ranks (different images per rank)
    sizes = [(60, 100), (56, 56)] if rank == 0 else [(120, 40), (30, 170)]
    inputs, _ = image_inputs(reference, sizes, seed=rank)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    loss = model(**inputs, labels=labels).loss
    result["step1_loss"] = float(loss)
    loss.backward()
    vr_params = dict(model.model.language_model.vision_remember.named_parameters())
    result["vr_grad_abs_sums"] = {name: global_grad_abs_sum(p) for name, p in vr_params.items()}
    # reference: the unsharded model's gradient averaged over both ranks' batches (FSDP averages over ranks)
    reference_losses = []
    for other in (0, 1):
        other_sizes = [(60, 100), (56, 56)] if other == 0 else [(120, 40), (30, 170)]
        other_inputs, _ = image_inputs(reference, other_sizes, seed=other)
        other_labels = other_inputs["input_ids"].masked_fill(other_inputs["attention_mask"] == 0, -100)
        reference_loss = reference(**other_inputs, labels=other_labels).loss
        (reference_loss / 2).backward()
        reference_losses.append(float(reference_loss))
    result["step1_reference_loss"] = reference_losses[rank]
    reference_grads = {n: p.grad for n, p in reference.named_parameters() if p.grad is not None}
    max_diff = {}
    for name, param in model.named_parameters():
        if name in reference_grads and param.grad is not None:
            grad = param.grad.full_tensor() if hasattr(param.grad, "full_tensor") else param.grad
            max_diff[name] = float((grad - reference_grads[name]).abs().max())
    result["grads_compared"] = len(max_diff)
    result["max_grad_diff"] = max(max_diff.values())
    result["max_grad_diff_name"] = max(max_diff, key=max_diff.get)
    result["projector_grad_abs_sum"] = global_grad_abs_sum(model.model.multi_modal_projector.linear_1.weight)
    optimizer.step()
    optimizer.zero_grad()

    # step 2: rank 0 has images, rank 1 a text-only batch
    if rank == 0:
        inputs, _ = image_inputs(reference, [(60, 100)], seed=2)
    else:
        inputs = left_pad([torch.tensor([5, 6, 7, 8, 9]), torch.tensor([10, 11, 12])])
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    loss = model(**inputs, labels=labels).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad()
    result["step2_loss"] = float(loss)
    result["step2_text_only"] = rank == 1
    dist.barrier()
    result["finished"] = True
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(os.path.abspath(sys.argv[1])))
