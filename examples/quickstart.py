"""Quickstart: a LLaVA-VR checkpoint through trust_remote_code, AutoModelForImageTextToText and pipeline().

With `--model`, it loads that checkpoint (folder or Hub id). Without it, no trained LLaVA-VR ships with this
repository yet, so it first BUILDS A TINY RANDOM-WEIGHT LLaVA-VR (CLIP-336 tile geometry, adaptive-pooling projector,
Vision Remember before decoder layers 1 and 4), saves it with its processor as a self-contained trust_remote_code
folder and loads it back exactly like a published checkpoint. Its answers are then noise: the demo shows the
mechanics (AnyRes tiling, 576 -> 144 tokens per tile, Vision Remember at prefill, time to first token), not accuracy.

    python examples/quickstart.py
    python examples/quickstart.py --model path/or/hub-id --image my.png --question "What is the total?"
"""

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline

SAMPLE = Path(__file__).resolve().parent / "sample"


def build_random_checkpoint(folder: Path) -> Path:
    """Saves a tiny random LLaVA-VR + processor (trained tokenizer, Transformers' LLaVA-NeXT image processor)."""
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    from llava_vr import LlavaVRConfig, LlavaVRForConditionalGeneration, LlavaVRProcessor
    from llava_vr.tokenizer_training import train_chat_tokenizer

    tokenizer = train_chat_tokenizer(["What is the price of apple? What is the total? receipt 0 1 2 3 4 5 6 7 8 9"] * 8)
    pinpoints = [[336 * h, 336 * w] for h in (1, 2) for w in (1, 2)]
    config = LlavaVRConfig(
        vision_config=dict(model_type="clip_vision_model", hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                           num_attention_heads=4, image_size=336, patch_size=14),
        text_config=dict(model_type="qwen2", hidden_size=128, intermediate_size=256, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, vocab_size=len(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
        image_grid_pinpoints=pinpoints,
        vision_remember_feature_layers=[2, 3, 4],
    )
    torch.manual_seed(0)
    model = LlavaVRForConditionalGeneration(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    image_processor = LlavaNextImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336}, image_grid_pinpoints=pinpoints
    )
    processor = LlavaVRProcessor.from_model_config(config, image_processor, tokenizer)
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    return folder


def token_counts(model, image):
    """Image tokens with the checkpoint's projector, and with `mlp` (no compression) on the same layout."""
    layout = model.model.image_layouts(torch.tensor([image.size[::-1]]))[0]
    ratio = model.config.patch_grid_size / model.config.token_grid_size
    height, width = (round(x * ratio) for x in layout.packed_hw)
    full_grid = model.config.patch_grid_size
    uncompressed = full_grid**2 + (height * (width + 1) if layout.num_tiles > 1 else 1)
    return layout.num_tiles, layout.num_tokens, uncompressed


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="LLaVA-VR checkpoint folder or Hub id (default: a tiny random one)")
    parser.add_argument("--image", help="an image file (default: the bundled sample receipt)")
    parser.add_argument("--question", action="append", help="a question (repeatable)")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as scratch:
        model_path = args.model or str(build_random_checkpoint(Path(scratch) / "llava-vr-random-tiny"))
        if not args.model:
            print(f"NOTE: no --model given: built a tiny LLaVA-VR with RANDOM weights at {model_path}; answers are noise")
        model = AutoModelForImageTextToText.from_pretrained(model_path, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(model_path, trust_remote_code=True)
        pipe = pipeline("image-text-to-text", model=model, processor=processor)

        sample = json.loads((SAMPLE / "questions.json").read_text())
        image = Image.open(args.image or SAMPLE / sample["image"]).convert("RGB")
        questions = [(q, None) for q in args.question] if args.question else (
            [(q["question"], q["answer"]) for q in sample["questions"]] if not args.image else [("Describe it.", None)]
        )
        tiles, compressed, uncompressed = token_counts(model, image)
        print(f"{type(model).__name__} from {type(model).__module__.split('.')[0]}: projector "
              f"{model.config.projector_type}, Vision Remember before decoder layers {model.config.vision_remember_layers}")
        print(f"image {image.size[0]}x{image.size[1]} px -> {tiles} tiles -> {compressed} image tokens "
              f"(without compression: {uncompressed})")
        for question, expected in questions:
            messages = [{"role": "user", "content": [{"type": "image", "image": image},
                                                     {"type": "text", "text": question}]}]
            inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                                   return_dict=True, return_tensors="pt")
            with torch.inference_mode():
                model.generate(**inputs, max_new_tokens=1, do_sample=False)  # warm-up
                start = time.perf_counter()
                model.generate(**inputs, max_new_tokens=1, do_sample=False)
                ttft = time.perf_counter() - start
            answer = pipe(text=messages, return_full_text=False,
                          generate_kwargs={"max_new_tokens": args.max_new_tokens, "do_sample": False})[0]["generated_text"]
            print(f"Q: {question}\n   answer: {answer!r}   expected: {expected!r}   time to first token: "
                  f"{ttft * 1000:.1f} ms")


if __name__ == "__main__":
    main()
