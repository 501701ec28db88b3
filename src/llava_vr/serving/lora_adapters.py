# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Which parts of LLaVA-VR a LoRA adapter may reach when vLLM serves it, and how to serve an adapter of
`llava-vr sft --lora` without merging its LoRA.

vLLM applies LoRA per request to its own linear layers: in LLaVA-VR's vLLM model those are the language model's
decoder layers (`self_attn.q/k/v/o_proj`, `mlp.gate/up/down_proj`). The vision tower, the projector and Vision
Remember run the package's own modules there (`image_encoder.py`), the embeddings and `lm_head` are not adapted, so
an adapter reaching any of them is refused when vLLM loads it (`unreachable_lora_modules`), never silently served
without those parts.

`llava-vr sft --lora` trains LoRA on the decoder layers and Vision Remember and the projector *fully* (PEFT's
`modules_to_save`): full copies, not deltas, which vLLM cannot swap per request (it refuses `modules_to_save`).
`split_adapter` writes such an adapter as two folders vLLM serves: `base/`, the base checkpoint with the adapter's
full copies in place, and `adapter/`, its LoRA weights alone (`python -m llava_vr.serving.lora_adapters split`).
"""

import argparse
import json
import re
import shutil
import sys
from pathlib import Path

# a LoRA tensor name as PEFT saves it (the `base_model.model.` prefix optional) -> the adapted module's name
_LORA_TENSOR = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\.(?:lora_[AB](?:\.[^.]+)?\.weight|lora_embedding_[AB](?:\.[^.]+)?)$"
)
# modules vLLM's LoRA reaches in LLaVA-VR's vLLM model (names as Transformers saves the model)
REACHABLE_MODULES = re.compile(
    r"^model\.language_model\.layers\.\d+\.(?:self_attn\.(?:q_proj|k_proj|v_proj|o_proj)|mlp\.(?:gate_proj|up_proj|down_proj))$"
)
REACHABLE_DESCRIPTION = (
    "the language model's decoder layers (self_attn.q_proj/k_proj/v_proj/o_proj, mlp.gate_proj/up_proj/down_proj)"
)
_PARTS = (
    ("vision_remember", "Vision Remember"),
    ("vision_tower", "the vision tower"),
    ("multi_modal_projector", "the projector"),
    ("image_newline", "the projector"),
    ("embed_tokens", "the token embeddings"),
    ("lm_head", "lm_head"),
)


def lora_module_name(tensor_name: str) -> str | None:
    """The module a LoRA tensor adapts (`model.language_model.layers.0.mlp.up_proj`), `None` for another tensor."""
    match = _LORA_TENSOR.match(tensor_name)
    return match["module"] if match else None


def model_part(module_name: str) -> str:
    """Which part of LLaVA-VR a module belongs to, in words."""
    parts = module_name.split(".")
    for key, words in _PARTS:
        if key in parts:
            return words
    return "the language model outside its decoder layers' linear layers"


def unreachable_lora_modules(tensor_names) -> dict[str, str]:
    """`{module: part}` for every LoRA-adapted module of `tensor_names` that vLLM cannot adapt in LLaVA-VR."""
    modules = {lora_module_name(name) for name in tensor_names} - {None}
    return {m: model_part(m) for m in sorted(modules) if not REACHABLE_MODULES.match(m)}


def refusal_message(unreachable: dict[str, str], adapter: str = "the adapter") -> str:
    parts = sorted(set(unreachable.values()))
    examples = ", ".join(list(unreachable)[:3]) + (", ..." if len(unreachable) > 3 else "")
    return (
        f"{adapter} has LoRA weights on {', '.join(parts)} ({examples}); in vLLM, LLaVA-VR "
        f"serves LoRA on {REACHABLE_DESCRIPTION} only, so these would be silently ignored. Train the adapter on those "
        "layers (`llava_vr.training.lora_config_for`, what `llava-vr sft --lora` does), or merge it "
        "(`llava-vr sft --merge_adapter ADAPTER --model BASE --output_dir DIR`) and serve the merged model"
    )


def check_lora_tensor_name(tensor_name: str) -> None:
    """Raises `ValueError` if `tensor_name` is a LoRA weight on a module vLLM cannot adapt in LLaVA-VR."""
    unreachable = unreachable_lora_modules([tensor_name])
    if unreachable:
        raise ValueError(refusal_message(unreachable))


def _adapter_tensors(adapter_dir: Path) -> dict:
    from safetensors.torch import load_file

    path = adapter_dir / "adapter_model.safetensors"
    if not path.is_file():
        raise ValueError(f"{adapter_dir} has no adapter_model.safetensors (save it with PEFT's save_pretrained)")
    return load_file(path)


def _weight_files(base_dir: Path) -> list[Path]:
    index = base_dir / "model.safetensors.index.json"
    if index.is_file():
        return sorted({base_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    single = base_dir / "model.safetensors"
    if not single.is_file():
        raise ValueError(f"{base_dir} holds no model.safetensors (a LLaVA-VR checkpoint saved by save_pretrained)")
    return [single]


def split_adapter(adapter_dir, base_dir, output_dir) -> tuple[Path, Path]:
    """Writes a PEFT LoRA adapter of a LLaVA-VR model as `(output_dir/base, output_dir/adapter)` for vLLM.

    `base/`: `base_dir` with each full module copy of the adapter (`modules_to_save`: Vision Remember, projector)
    in place of the original, byte for byte otherwise (config, processor, code files). `adapter/`: the LoRA weights
    alone and the adapter config without `modules_to_save`. PEFT's model (`base_dir` + adapter) and vLLM serving
    `base/` with `adapter/` compute the same function. Raises `ValueError` for LoRA on a module vLLM cannot adapt,
    for a full copy without a counterpart in the base, and for an existing `output_dir` (a refused split leaves no
    `output_dir` behind).
    """
    adapter_dir, base_dir, output_dir = Path(adapter_dir), Path(base_dir), Path(output_dir)
    if output_dir.exists():
        raise ValueError(f"{output_dir} exists; choose a new folder")
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    tensors = _adapter_tensors(adapter_dir)
    unreachable = unreachable_lora_modules(tensors)
    if unreachable:
        raise ValueError(refusal_message(unreachable, str(adapter_dir)))
    lora = {name: t for name, t in tensors.items() if lora_module_name(name) is not None}
    copies = {name.removeprefix("base_model.model."): t for name, t in tensors.items() if name not in lora}
    if not lora:
        raise ValueError(f"{adapter_dir} holds no LoRA weights")

    try:
        return _write_split(base_dir, output_dir, config, lora, copies)
    except BaseException:  # a refusal or an interrupt mid-way: no half-written folder for the next run to refuse
        shutil.rmtree(output_dir, ignore_errors=True)
        raise


def _write_split(base_dir: Path, output_dir: Path, config: dict, lora: dict, copies: dict) -> tuple[Path, Path]:
    from safetensors import safe_open
    from safetensors.torch import save_file

    base_out, adapter_out = output_dir / "base", output_dir / "adapter"
    shutil.copytree(base_dir, base_out, ignore=shutil.ignore_patterns("*.safetensors"))
    replaced = set()
    for path in _weight_files(base_dir):
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata()
            weights = {name: f.get_tensor(name) for name in f.keys()}
        for name in weights.keys() & copies.keys():
            if copies[name].shape != weights[name].shape:
                raise ValueError(
                    f"{name}: the adapter's copy is {tuple(copies[name].shape)}, the base's "
                    f"{tuple(weights[name].shape)}; is {base_dir} the adapter's base model?"
                )
            weights[name] = copies[name].to(weights[name].dtype)
            replaced.add(name)
        save_file(weights, base_out / path.name, metadata=metadata)
    missing = sorted(copies.keys() - replaced)
    if missing:
        raise ValueError(
            f"the adapter's full copies {missing[:3]} have no counterpart in {base_dir}; is it the "
            "adapter's base model?"
        )
    adapter_out.mkdir(parents=True)
    save_file(lora, adapter_out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = {**config, "modules_to_save": None, "base_model_name_or_path": str(base_out)}
    (adapter_out / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
    return base_out, adapter_out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m llava_vr.serving.lora_adapters",
        description="Serve a LLaVA-VR LoRA adapter with vLLM. `check ADAPTER`: can vLLM apply it as it is? "
        "`split ADAPTER BASE OUTPUT`: write OUTPUT/base (BASE with the adapter's fully trained Vision Remember / "
        "projector copies in place) and OUTPUT/adapter (its LoRA weights alone), then serve them with "
        "--model OUTPUT/base --enable-lora --lora-modules NAME=OUTPUT/adapter.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check")
    check.add_argument("adapter")
    split = commands.add_parser("split")
    split.add_argument("adapter")
    split.add_argument("base")
    split.add_argument("output")
    args = parser.parse_args(argv)
    try:
        if args.command == "check":
            adapter = Path(args.adapter)
            unreachable = unreachable_lora_modules(_adapter_tensors(adapter))
            if unreachable:
                raise ValueError(refusal_message(unreachable, args.adapter))
            saved = json.loads((adapter / "adapter_config.json").read_text()).get("modules_to_save")
            if saved:
                raise ValueError(
                    f"{args.adapter} also trains {saved} fully (modules_to_save), which vLLM cannot "
                    "swap per request: `split` it first"
                )
            print(f"{args.adapter}: vLLM can serve it as it is")
        else:
            base, adapter = split_adapter(args.adapter, args.base, args.output)
            print(f"wrote {base} and {adapter}; serve with --model {base} --enable-lora --lora-modules NAME={adapter}")
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "REACHABLE_MODULES",
    "check_lora_tensor_name",
    "lora_module_name",
    "split_adapter",
    "unreachable_lora_modules",
]
