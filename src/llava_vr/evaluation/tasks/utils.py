# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""lmms-eval task functions of LLaVA-VR's local benchmarks (`llava_vr_documents_*`, `llava_vr_digit_grid`), copied
beside their YAML files and data by `python -m llava_vr.evaluation.task_builder OUT` (or `llava-vr eval tasks OUT`).

Scored with the real benchmarks' own metrics, from lmms-eval's implementations: ANLS (DocVQA / InfoVQA,
`lmms_eval.api.metrics.anls`), relaxed accuracy (ChartQA, `tasks/chartqa/utils.py::relaxed_correctness`), VQA
accuracy (TextVQA, `tasks/textvqa/utils.py::textvqa_process_results`, which it reports as `exact_match`; here
`vqa_accuracy`, with the one reference answer as all ten annotators' answer) and exact match (the stripped answer equals
the reference, the visual-forgetting experiment's score). The digit-grid task adds the experiment's per-digit accuracy.
"""

from pathlib import Path

from PIL import Image

IMAGE_PLACEHOLDER = "<image>"
HERE = Path(__file__).resolve().parent


def doc_to_visual(doc):
    """The sample's image (RGB); `ValueError` naming the sample when the file is missing or cannot be decoded, a
    truncated file included (lmms-eval sets PIL's `ImageFile.LOAD_TRUNCATED_IMAGES = True` when imported, which would
    score a cut image as whole: PIL's default is kept while this one decodes)."""
    from llava_vr.data.jsonl_documents import truncated_images_refused

    path = HERE / doc["image"]
    try:
        with truncated_images_refused(), Image.open(path) as image:
            return [image.convert("RGB")]
    except (OSError, ValueError) as error:
        raise ValueError(
            f"sample {doc['id']!r} of {doc.get('task', 'the task')}: its image {path} cannot be read "
            f"({type(error).__name__}: {error})"
        ) from error


def doc_to_text(doc, lmms_eval_specific_kwargs=None):
    """The question; `question_first` samples put the image placeholder after it (the visual-forgetting experiment's
    layout), the others leave the image's place to the model (LLaVA's layout: image first)."""
    kwargs = lmms_eval_specific_kwargs or {}
    text = f"{kwargs.get('pre_prompt', '')}{doc['question']}{kwargs.get('post_prompt', '')}"
    return text + IMAGE_PLACEHOLDER if doc.get("question_first") else text


def doc_to_target(doc):
    return doc["answer"]


def _scores(doc, prediction: str) -> dict:
    from lmms_eval.api.metrics import anls
    from lmms_eval.tasks.chartqa.utils import relaxed_correctness
    from lmms_eval.tasks.textvqa.utils import textvqa_process_results

    answer = doc["answer"]
    vqa = textvqa_process_results({"answers": [answer] * 10, "question_id": doc["id"]}, [prediction])
    return {
        "exact_match": float(prediction == answer),
        "anls": anls([answer], [prediction])["anls"],
        "relaxed_accuracy": float(relaxed_correctness(prediction, answer)),
        "vqa_accuracy": float(vqa["exact_match"]),
    }


def process_results(doc, results):
    return _scores(doc, results[0].strip())


def digit_grid_process_results(doc, results):
    """The document metrics plus the experiment's per-digit accuracy (digits in order, letters dropped)."""
    prediction = results[0].strip()
    scores = _scores(doc, prediction)
    got, want = [c for c in prediction if c.isdigit()], [c for c in doc["answer"] if c.isdigit()]
    scores["digit_accuracy"] = sum(x == y for x, y in zip(got, want, strict=False)) / len(want)
    return scores
