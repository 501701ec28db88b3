"""Quickstart: the bundled LLaVA-VR through trust_remote_code, AutoModelForImageTextToText and pipeline().

By default it loads the model that ships with this repository, `examples/trained_models/llava-vr-tiny-digit-grid`:
a tiny LLaVA-VR (adaptive-pooling projector + Vision Remember) trained from scratch by the visual-forgetting
experiment to read 4 x 4 grids of digits on 56-px images. It answers "Read the grid." on sample images from the
task's held-out test split and prints each answer next to the expected one, the image-token counts with and without
compression, and the time to first token. It knows that one task only; point it at any other checkpoint and image:

    python examples/quickstart.py
    python examples/quickstart.py --model path/or/hub-id --image my.png --question "What is the total?"
"""

import argparse
import json
import time
from pathlib import Path

from llava_vr_cli import drop_known_import_notices

drop_known_import_notices()  # torchao's notices about its CUDA-only kernels, where the `quant` extra is installed

import torch  # noqa: E402
from PIL import Image  # noqa: E402
from transformers import AutoModelForImageTextToText, AutoProcessor, pipeline  # noqa: E402

HERE = Path(__file__).resolve().parent
BUNDLED_MODEL = HERE / "trained_models" / "llava-vr-tiny-digit-grid"
SAMPLE = HERE / "sample"


def token_counts(model, image):
    """Tiles, image tokens with the checkpoint's projector, and with `mlp` (no compression) on the same layout."""
    layout = model.model.image_layouts(torch.tensor([image.size[::-1]]))[0]
    ratio = model.config.patch_grid_size / model.config.token_grid_size
    height, width = (round(x * ratio) for x in layout.packed_hw)
    full_grid = model.config.patch_grid_size
    uncompressed = full_grid**2 + (height * (width + 1) if layout.num_tiles > 1 else 1)
    return layout.num_tiles, layout.num_tokens, uncompressed


def time_to_first_token(model, inputs) -> float:
    """Median of 5 one-token generations after two warm-ups, in seconds."""
    with torch.inference_mode():
        for _ in range(2):
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
        times = []
        for _ in range(5):
            start = time.perf_counter()
            model.generate(**inputs, max_new_tokens=1, do_sample=False)
            times.append(time.perf_counter() - start)
    return sorted(times)[2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--model",
        default=str(BUNDLED_MODEL),
        help="LLaVA-VR checkpoint folder or Hub id (default: the bundled digit-grid model)",
    )
    parser.add_argument("--image", action="append", help="an image file (repeatable; default: the bundled samples)")
    parser.add_argument("--question", action="append", help="a question (repeatable; default: 'Read the grid.')")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    args = parser.parse_args(argv)

    model = AutoModelForImageTextToText.from_pretrained(args.model, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(args.model, trust_remote_code=True)
    pipe = pipeline("image-text-to-text", model=model, processor=processor)
    if args.image:
        questions = args.question or ["Read the grid."]
        samples = [(path, q, None) for path in args.image for q in questions]
    else:
        bundled = json.loads((SAMPLE / "questions.json").read_text())["samples"]
        samples = [
            (SAMPLE / s["image"], q, s["answer"] if q == s["question"] else None)
            for s in bundled
            for q in (args.question or [s["question"]])
        ]
    print(
        f"{args.model}: {type(model).__name__}, projector {model.config.projector_type}, Vision Remember before "
        f"decoder layers {list(model.config.vision_remember_layers)}"
    )
    correct = 0
    for path, question, expected in samples:
        image = Image.open(path).convert("RGB")
        tiles, compressed, uncompressed = token_counts(model, image)
        # the question first, then the image: the bundled model was trained on that order
        messages = [
            {"role": "user", "content": [{"type": "text", "text": question}, {"type": "image", "image": image}]}
        ]
        inputs = processor.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True, return_tensors="pt"
        )
        ttft = time_to_first_token(model, inputs)
        answer = pipe(
            text=messages,
            return_full_text=False,
            generate_kwargs={"max_new_tokens": args.max_new_tokens, "do_sample": False},
        )[0]["generated_text"]
        answer = answer.strip()
        correct += answer == expected
        print(
            f"\n{Path(path).name}: {image.size[0]}x{image.size[1]} px, {tiles} tile(s) -> {compressed} image tokens "
            f"(without compression: {uncompressed}); time to first token {ttft * 1000:.1f} ms"
        )
        print(f"  Q: {question}\n  answer:   {answer}")
        if expected is not None:
            print(f"  expected: {expected}   {'(correct)' if answer == expected else '(WRONG)'}")
    scored = sum(expected is not None for _, _, expected in samples)
    if scored:
        print(f"\n{correct} of {scored} answers exactly right")


if __name__ == "__main__":
    main()
