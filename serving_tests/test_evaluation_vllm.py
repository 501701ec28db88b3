"""The lmms-eval model's vLLM back end (`llava_vr_vllm`) gives the Transformers back end's (`llava_vr`) answers and
log-likelihoods, at the checkpoint's token budget and at another, and runs through lmms-eval's CLI."""

import gc
import json
import sys

import pytest
from serving_utils import BUNDLED

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402

from llava_vr.evaluation.compare_budgets import read_scores  # noqa: E402
from llava_vr.evaluation.lmms_model import LlavaVRLmms, LlavaVRVLLMLmms  # noqa: E402
from llava_vr.evaluation.task_builder import build_digit_grid, copy_task_files  # noqa: E402


@pytest.fixture(scope="module")
def digit_tasks(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tasks")
    copy_task_files(folder)
    build_digit_grid(folder, num_samples=5, seed=1)
    return folder


def task_requests(folder):
    """Five held-out grids (question, then image), a text-only prompt and a two-image prompt (images first)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("llava_vr_task_utils_vllm", folder / "utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    docs = [json.loads(line) for line in (folder / "llava_vr_digit_grid" / "data.jsonl").read_text().splitlines()]
    gen = {"max_new_tokens": 40, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    args = [(utils.doc_to_text(doc), gen, utils.doc_to_visual, i, "t", "test") for i, doc in enumerate(docs)]
    args.append(("Read the grid.", gen, lambda doc: [], 0, "t", "test"))
    args.append(("Read the grid.", gen, lambda doc: utils.doc_to_visual(doc) * 2, 1, "t", "test"))
    generate = [Instance("generate_until", a, 0, metadata={"task": "t", "doc_id": a[3], "repeats": 1}) for a in args]
    wrong = "".join(str((int(c) + 3) % 10) if c.isdigit() else c for c in docs[0]["answer"])
    loglikelihood = [
        Instance(
            "loglikelihood",
            (args[0][0], answer, utils.doc_to_visual, 0, "t", "test"),
            0,
            metadata={"task": "t", "doc_id": 0, "repeats": 1},
        )
        for answer in (docs[0]["answer"], wrong)
    ]
    return {"t": {"test": docs}}, generate, loglikelihood


@pytest.mark.parametrize("tokens_per_tile", [None, 9])
def test_vllm_back_end_gives_the_transformers_back_ends_answers(digit_tasks, tokens_per_tile):
    task_dict, generate, loglikelihood = task_requests(digit_tasks)
    budget = {} if tokens_per_tile is None else {"tokens_per_tile": tokens_per_tile}
    reference = LlavaVRLmms(pretrained=str(BUNDLED), batch_size=8, **budget)
    reference.task_dict = task_dict
    expected_answers = reference.generate_until(generate)
    expected_logprobs = reference.loglikelihood(loglikelihood)
    del reference

    engine = LlavaVRVLLMLmms(pretrained=str(BUNDLED), max_num_seqs=8, **budget)
    engine.task_dict = task_dict
    try:
        answers = engine.generate_until(generate)
        logprobs = engine.loglikelihood(loglikelihood)
    finally:
        del engine
        gc.collect()
    assert answers == expected_answers
    for (value, greedy), (expected_value, expected_greedy) in zip(logprobs, expected_logprobs, strict=True):
        assert value == pytest.approx(expected_value, abs=1e-3)
        assert greedy == expected_greedy


def test_lmms_eval_cli_runs_the_vllm_back_end_and_scores_as_the_transformers_one(digit_tasks, tmp_path, monkeypatch):
    from lmms_eval.__main__ import cli_evaluate

    scores = {}
    for model in ("llava_vr", "llava_vr_vllm"):
        argv = ["lmms-eval", "--model", model, "--model_args", f"pretrained={BUNDLED},tokens_per_tile=9"]
        argv += ["--tasks", "llava_vr_digit_grid", "--include_path", str(digit_tasks)]
        argv += ["--batch_size", "5", "--output_path", str(tmp_path / model)]
        monkeypatch.setattr(sys, "argv", argv)
        cli_evaluate()
        gc.collect()
        scores[model] = read_scores(tmp_path / model)["llava_vr_digit_grid"]
    assert set(scores["llava_vr"]) >= {"exact_match", "digit_accuracy", "anls", "relaxed_accuracy", "vqa_accuracy"}
    assert scores["llava_vr_vllm"] == scores["llava_vr"]
