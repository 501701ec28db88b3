# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""Fine-tune LLaVA-VR on document question answering with TRL's `SFTTrainer`: the `llava-vr sft` command as a script
(so `accelerate launch ... examples/sft_documents.py ...` works). Options: `python examples/sft_documents.py --help`;
implementation: `llava_vr.training.sft_cli`.

  python examples/sft_documents.py --tiny --output_dir runs/sft-tiny
  accelerate launch --config_file examples/accelerate/fsdp.yaml examples/sft_documents.py \
      --model ckpt/llava-vr-qwen2-0.5b --stage stage2 --bf16 --max_steps -1 --output_dir runs/sft-docs
"""

from llava_vr.training.sft_cli import main

if __name__ == "__main__":
    raise SystemExit(main())
