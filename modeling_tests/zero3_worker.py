"""DeepSpeed ZeRO-3 worker for `test_fsdp.py`: `DS_ACCELERATOR=cpu torchrun --nproc_per_node 2 zero3_worker.py OUT`
(CPU, gloo).

The tiny LLaVA-VR model (default configuration, every VR parameter perturbed) under `deepspeed.initialize` with ZeRO
stage 3 (parameters, gradients and optimizer states partitioned over both ranks) and a torch AdamW; two steps, what
each rank saw written to `OUT/rank{N}.json`:

- step 1, rank 0 draws images while rank 1 draws a text-only batch: no rank waits forever (the text-only rank runs
  tower, projector and VR on a blank image, so both take part in the same parameter gathers); each rank's loss equals
  the unsharded model's on its batch, and the full gradients (`safe_get_full_grad`) equal the unsharded model's
  averaged over both batches (the blank pass contributes exactly nothing);
- step 2, images on both ranks: finite losses, and the step-1 update moved VR.
"""

import copy
import json
import os
import sys
from datetime import timedelta
from pathlib import Path

import deepspeed
import torch
from deepspeed.utils import safe_get_full_fp32_param, safe_get_full_grad

from llava_vr.testing_utils import image_inputs, left_pad, tiny_model

ZERO3 = {
    "train_micro_batch_size_per_gpu": 1,
    "gradient_accumulation_steps": 1,
    "zero_optimization": {"stage": 3, "stage3_param_persistence_threshold": 0},  # every parameter partitioned
    "steps_per_print": 1_000_000,
}


def batch(reference, rank, step):
    """Step 1: images on rank 0, text only on rank 1; step 2: images on both."""
    if step == 1 and rank == 1:
        inputs = left_pad([torch.tensor([5, 6, 7, 8, 9]), torch.tensor([10, 11, 12])])
    else:
        sizes = [(60, 100), (56, 56)] if rank == 0 else [(120, 40)]
        inputs, _ = image_inputs(reference, sizes, seed=10 * step + rank)
    labels = inputs["input_ids"].masked_fill(inputs["attention_mask"] == 0, -100)
    return inputs, labels


def main(out_dir: Path):
    # the rendezvous waits for the slower rank's imports (minutes on a loaded 2-core machine)
    deepspeed.init_distributed(dist_backend="gloo", timeout=timedelta(seconds=300))
    rank = torch.distributed.get_rank()
    torch.manual_seed(0)
    model = tiny_model(perturb_vr=True).train()
    reference = copy.deepcopy(model)  # unsharded, same weights on every rank
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=ZERO3)
    names = [name for name, _ in reference.named_parameters()]
    partitioned = [name for name, p in engine.module.named_parameters() if getattr(p, "ds_numel", 0) > p.numel()]
    result = {"rank": rank, "partitioned": len(partitioned), "parameters": len(names)}

    inputs, labels = batch(reference, rank, step=1)
    loss = engine(**inputs, labels=labels).loss
    engine.backward(loss)
    result["step1_loss"] = loss.item()
    result["step1_text_only"] = "pixel_values" not in inputs
    full_grads = {name: safe_get_full_grad(p) for name, p in engine.module.named_parameters()}
    reference_losses = []
    for other in (0, 1):  # the unsharded model's gradient averaged over both ranks' batches
        other_inputs, other_labels = batch(reference, other, step=1)
        reference_loss = reference(**other_inputs, labels=other_labels).loss
        (reference_loss / 2).backward()
        reference_losses.append(float(reference_loss))
    result["step1_reference_loss"] = reference_losses[rank]
    diffs = {}
    for name, param in reference.named_parameters():
        # ZeRO keeps a zero gradient where the unsharded model has none (a parameter no loss reaches)
        grad, expected = full_grads.get(name), param.grad
        grad = torch.zeros_like(param) if grad is None else grad.float()
        diffs[name] = float((grad - (torch.zeros_like(param) if expected is None else expected)).abs().max())
    result["grads_compared"] = len(diffs)
    result["max_grad_diff"] = max(diffs.values())
    result["max_grad_diff_name"] = max(diffs, key=diffs.get)
    vr_names = [name for name in names if ".vision_remember." in name]
    result["vr_grad_abs_sums"] = {
        name: float(full_grads[name].abs().sum()) if full_grads[name] is not None else -1.0 for name in vr_names
    }
    vr_before = {name: reference.get_parameter(name).detach().clone() for name in vr_names}
    engine.step()

    inputs, labels = batch(reference, rank, step=2)
    loss = engine(**inputs, labels=labels).loss
    engine.backward(loss)
    engine.step()
    result["step2_loss"] = float(loss)
    params = dict(engine.module.named_parameters())
    result["vr_moved"] = sum(
        not torch.equal(safe_get_full_fp32_param(params[name]), before) for name, before in vr_before.items()
    )
    result["vr_parameters"] = len(vr_names)
    torch.distributed.barrier()
    result["finished"] = True
    (out_dir / f"rank{rank}.json").write_text(json.dumps(result, indent=1))
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(os.path.abspath(sys.argv[1])))
