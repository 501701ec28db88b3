"""LLaVA-VR through lmms-eval 0.7 (Transformers back end): the token budget at load time, the local tasks, lmms-eval's
CLI against the visual-forgetting experiment's own scoring, and the request types. The vLLM back end's test is
serving_tests/test_evaluation_vllm.py."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402
from PIL import Image  # noqa: E402

from llava_vr import LlavaVRConfig, anyres_layout  # noqa: E402
from llava_vr.evaluation.budget import budget_grid, load_model_and_processor  # noqa: E402
from llava_vr.evaluation.compare_budgets import read_scores, table  # noqa: E402
from llava_vr.evaluation.lmms_model import LlavaVRLmms  # noqa: E402
from llava_vr.evaluation.prompts import chat_prompt  # noqa: E402
from llava_vr.evaluation.task_builder import build_digit_grid, build_documents, copy_task_files  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

BUNDLED = Path(__file__).resolve().parents[1] / "examples" / "trained_models" / "llava-vr-tiny-digit-grid"


@pytest.fixture(scope="module")
def digit_tasks(tmp_path_factory):
    """The local tasks with 6 held-out digit grids of the experiment (seed 1, the bundled model's)."""
    folder = tmp_path_factory.mktemp("tasks")
    copy_task_files(folder)
    build_digit_grid(folder, num_samples=6, seed=1)
    return folder


@pytest.fixture(scope="module")
def lmms_model():
    return LlavaVRLmms(pretrained=str(BUNDLED), batch_size=4)


def task_utils(folder: Path):
    spec = importlib.util.spec_from_file_location("llava_vr_task_utils", folder / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rows(folder: Path, name: str = "llava_vr_digit_grid/data.jsonl") -> list[dict]:
    return [json.loads(line) for line in (folder / name).read_text().splitlines()]


def request(kind: str, args: tuple, index: int = 0) -> Instance:
    return Instance(kind, args, 0, metadata={"task": args[-2], "doc_id": index, "repeats": 1})


# ---- token budget ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tokens_per_tile", [None, 9, 16, 1])
def test_budget_override_sets_the_image_token_count_of_the_layout_function(tokens_per_tile, monkeypatch):
    """The processor's count, the model's layout and the projector's output follow the budget, and so do Vision
    Remember's `sela` windows (each token reads its adaptive cell region of the 4x4 feature grid)."""
    from llava_vr.vision_remember_inputs_llava_vr import VisionRememberInputs

    built, build = [], VisionRememberInputs.build

    def recording_build(*args, **kwargs):
        built.append(build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(VisionRememberInputs, "build", recording_build)
    model, processor = load_model_and_processor(BUNDLED, budget_grid(tokens_per_tile))
    grid = 2 if tokens_per_tile is None else budget_grid(tokens_per_tile)  # the checkpoint's own: ceil(4 / 2)
    config = model.config
    expected = anyres_layout((56, 56), config.image_grid_pinpoints, 56, grid, config.vision_aspect_ratio).num_tokens
    assert expected == grid * grid + 1
    prompt = chat_prompt(processor, "Read the grid.<image>", 1)
    inputs = processor(text=prompt, images=[Image.new("RGB", (56, 56), "white")], return_tensors="pt")
    assert int((inputs["input_ids"] == config.image_token_index).sum()) == expected
    assert model.model.image_layouts(torch.tensor([[56, 56]]))[0].num_tokens == expected
    pooled = model.model.multi_modal_projector(torch.randn(1, 16, config.vision_config.hidden_size))
    assert pooled.shape[1] == grid * grid
    with torch.inference_mode():
        assert model(**inputs).logits.shape[1] == inputs["input_ids"].shape[1]
    sides = [-(-(i + 1) * 4 // grid) - i * 4 // grid for i in range(grid)]  # adaptive regions of 4 cells into g
    regions = sorted(r * c for r in sides for c in sides)
    assert sorted(built[-1].window_valid.sum(-1).tolist()) == regions


def test_budget_a_projector_cannot_produce_is_refused_with_a_message():
    with pytest.raises(ValueError, match=r"projector_pooled_grid_size=5: .*adaptive_avg_pool.*4x4 patch grid.*1 to 4"):
        load_model_and_processor(BUNDLED, 5)
    with pytest.raises(ValueError, match="square token grid"):
        budget_grid(tokens_per_tile=10)
    with pytest.raises(ValueError, match=r"unknown --model_args \['token_budget'\]"):
        LlavaVRLmms(pretrained=str(BUNDLED), token_budget=9)
    with pytest.raises(ValueError, match="disagree"):
        budget_grid(tokens_per_tile=9, projector_pooled_grid_size=2)
    with pytest.raises(Exception, match=r"pixel_shuffle.*gives g = 12 \(144 tokens\)"):
        LlavaVRConfig(projector_type="pixel_shuffle", projector_pooled_grid_size=8)
    with pytest.raises(Exception, match=r"'mlp'.*gives g = 24 \(576 tokens\)"):
        LlavaVRConfig(projector_type="mlp", projector_pooled_grid_size=12)
    for projector in ("adaptive_avg_pool", "ldpv2", "tokenpacker"):
        assert LlavaVRConfig(projector_type=projector, projector_pooled_grid_size=8).num_image_tokens_per_tile == 64


# ---- lmms-eval's CLI against the experiment ---------------------------------------------------------------------
@pytest.mark.parametrize("tokens_per_tile", [None, 9])
def test_lmms_eval_cli_on_the_digit_grid_task_scores_what_the_experiment_scores(
    digit_tasks, tmp_path, monkeypatch, tokens_per_tile
):
    """`lmms-eval --model llava_vr` (its own CLI, the model found by entry point) on the experiment's held-out grids
    gives the experiment's exact match and per-digit accuracy (`visual_forgetting_runs.evaluate`) on the same images,
    at the checkpoint's budget and at another."""
    from datasets import Dataset
    from lmms_eval.__main__ import cli_evaluate

    from llava_vr.experiments.visual_forgetting_options import PRESETS
    from llava_vr.experiments.visual_forgetting_runs import evaluate
    from llava_vr.experiments.visual_forgetting_task import held_out_samples

    model_args = f"pretrained={BUNDLED}" + (f",tokens_per_tile={tokens_per_tile}" if tokens_per_tile else "")
    argv = ["lmms-eval", "--model", "llava_vr", "--model_args", model_args, "--tasks", "llava_vr_digit_grid"]
    argv += ["--include_path", str(digit_tasks), "--batch_size", "3", "--output_path", str(tmp_path)]
    monkeypatch.setattr(sys, "argv", argv)
    cli_evaluate()
    scores = read_scores(tmp_path)["llava_vr_digit_grid"]

    samples = held_out_samples(PRESETS["cpu"], 1, 6)
    data = Dataset.from_list([s.to_chat(question_first=True) for s in samples])
    model, processor = load_model_and_processor(BUNDLED, budget_grid(tokens_per_tile))
    accuracy, digit_accuracy, _ = evaluate(model, processor, data)
    assert scores["exact_match"] == pytest.approx(accuracy, abs=1e-9)
    assert scores["digit_accuracy"] == pytest.approx(digit_accuracy, abs=1e-9)
    assert "| llava_vr_digit_grid | exact_match |" in table({tokens_per_tile: read_scores(tmp_path)})


# ---- prompts and request types ----------------------------------------------------------------------------------
def test_prompt_keeps_the_tasks_placeholder_and_puts_images_first_without_one(lmms_model):
    from llava_vr.data.synthetic_documents import generate_samples

    processor = lmms_model.processor
    sample = generate_samples(1, 0, "test", kinds=("digit_grid",), size=56, grid=4, question="all_labelled")[0]
    for question_first, context in ((True, "Read the grid.<image>"), (False, "Read the grid.")):
        trained = processor.apply_chat_template(
            sample.to_chat(question_first)["messages"][:1], add_generation_prompt=True, tokenize=False
        )
        assert chat_prompt(processor, context, 1) == trained
    assert chat_prompt(processor, "Read the grid.", 1, "last") == chat_prompt(processor, "Read the grid.<image>", 1)
    with pytest.raises(ValueError, match="sample 7 of t: its prompt has 2 <image> placeholders for 1 images"):
        chat_prompt(processor, "<image><image>Read", 1, sample="sample 7 of t")


def test_generate_until_batched_with_left_padding_equals_one_at_a_time(lmms_model, digit_tasks):
    """Digit grids, a text-only sample and a two-image sample in one batch: the answers are those of one request at a
    time (left padding, per-request images)."""
    utils = task_utils(digit_tasks)
    docs = rows(digit_tasks)[:3]
    two = dict(docs[0], id="two-images")
    docs += [dict(docs[1], id="text-only", question_first=False), two]
    lmms_model.task_dict = {"t": {"test": docs}}
    visual = [utils.doc_to_visual] * 3 + [lambda doc: [], lambda doc: utils.doc_to_visual(doc) * 2]
    gen = {"max_new_tokens": 40, "temperature": 0, "do_sample": False, "until": ["\n\n"]}
    contexts = [utils.doc_to_text(d) for d in docs[:3]] + ["Read the grid.", "Read the grid."]
    requests = [
        request("generate_until", (c, gen, v, i, "t", "test"), i)
        for i, (c, v) in enumerate(zip(contexts, visual, strict=True))
    ]
    batched = lmms_model.generate_until(requests)
    lmms_model.batch_size_per_gpu = 1
    try:
        single = [lmms_model.generate_until([r])[0] for r in requests]
    finally:
        lmms_model.batch_size_per_gpu = 4
    assert batched == single
    assert batched[:3] == [d["answer"] for d in docs[:3]]  # the bundled model reads its held-out grids


def test_loglikelihood_is_the_continuations_log_probability_under_greedy_decoding(lmms_model, digit_tasks):
    utils = task_utils(digit_tasks)
    doc = rows(digit_tasks)[0]
    lmms_model.task_dict = {"t": {"test": [doc]}}
    context = utils.doc_to_text(doc)
    wrong = "".join(c if not c.isdigit() else str((int(c) + 1) % 10) for c in doc["answer"])
    (right_lp, right_greedy), (wrong_lp, wrong_greedy) = lmms_model.loglikelihood(
        [
            request("loglikelihood", (context, answer, utils.doc_to_visual, 0, "t", "test"))
            for answer in (doc["answer"], wrong)
        ]
    )
    processor, model = lmms_model.processor, lmms_model.model
    inputs = processor(text=chat_prompt(processor, context, 1), images=utils.doc_to_visual(doc), return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(
            **inputs, max_new_tokens=40, do_sample=False, output_scores=True, return_dict_in_generate=True
        )
    tokens = out.sequences[0, inputs["input_ids"].shape[1] :]
    answer_ids = processor.tokenizer(doc["answer"], add_special_tokens=False)["input_ids"]
    assert tokens[: len(answer_ids)].tolist() == answer_ids
    scores = torch.stack(out.scores[: len(answer_ids)])[:, 0].float().log_softmax(-1)
    expected = float(scores.gather(-1, torch.tensor(answer_ids)[:, None]).sum())
    assert right_lp == pytest.approx(expected, abs=1e-4)
    assert right_greedy and not wrong_greedy
    assert wrong_lp < right_lp


def test_multi_round_asks_each_round_of_the_tasks_doc_to_text(lmms_model, digit_tasks):
    utils = task_utils(digit_tasks)
    doc = rows(digit_tasks)[1]
    lmms_model.task_dict = {"t": {"test": [doc]}}
    seen = []

    def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None):
        seen.append((list(previous_output), round_idx, previous_round_info))
        stop = round_idx >= 2
        return utils.doc_to_visual(doc), "Read the grid.<image>", stop, previous_output, {"round": round_idx}

    gen = {"max_new_tokens": 40, "temperature": 0}
    args = ("Read the grid.<image>", gen, utils.doc_to_visual, doc_to_text, 0, "t", "test")
    (outputs,) = lmms_model.generate_until_multi_round([request("generate_until_multi_round", args)])
    assert outputs == (doc["answer"], doc["answer"])
    assert seen == [([doc["answer"]], 1, None), ([doc["answer"]] * 2, 2, {"round": 1})]


# ---- local tasks ------------------------------------------------------------------------------------------------
def test_missing_or_corrupt_image_fails_with_a_message_naming_the_sample(lmms_model, tmp_path):
    copy_task_files(tmp_path)
    build_digit_grid(tmp_path, num_samples=3, seed=1)
    docs = rows(tmp_path)
    (tmp_path / docs[1]["image"]).unlink()
    (tmp_path / docs[2]["image"]).write_bytes(b"not a png")
    utils = task_utils(tmp_path)
    assert utils.doc_to_visual(docs[0])[0].size == (56, 56)
    with pytest.raises(ValueError, match=r"sample 'llava_vr_digit_grid-0001' .*cannot be read \(FileNotFoundError"):
        utils.doc_to_visual(docs[1])
    with pytest.raises(ValueError, match=r"sample 'llava_vr_digit_grid-0002' .*cannot be read \(UnidentifiedImage"):
        utils.doc_to_visual(docs[2])
    # a cut file, where lmms-eval has let PIL load truncated images (it sets the flag when imported)
    from PIL import ImageFile

    cut = tmp_path / docs[0]["image"]
    cut.write_bytes(cut.read_bytes()[:-40])
    ImageFile.LOAD_TRUNCATED_IMAGES, previous = True, ImageFile.LOAD_TRUNCATED_IMAGES
    try:
        with pytest.raises(ValueError, match=r"sample 'llava_vr_digit_grid-0000' .*cannot be read \(OSError"):
            utils.doc_to_visual(docs[0])
        assert ImageFile.LOAD_TRUNCATED_IMAGES is True
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    lmms_model.task_dict = {"t": {"test": docs}}
    gen = {"max_new_tokens": 4}
    with pytest.raises(ValueError, match="llava_vr_digit_grid-0002"):
        lmms_model.generate_until([request("generate_until", ("q<image>", gen, utils.doc_to_visual, 2, "t", "test"))])


def test_document_task_is_deterministic_and_shares_no_image_with_training_splits(tmp_path):
    from llava_vr.data.synthetic_documents import content_key, generate_samples

    first, second = tmp_path / "a", tmp_path / "b"
    counts = build_documents(first, num_samples=8, image_size=56)
    build_documents(second, num_samples=8, image_size=56)
    assert counts == {f"llava_vr_documents_{k}": 2 for k in ("receipt", "table", "bar_chart", "digit_grid")}
    files = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert files and all((first / f).read_bytes() == (second / f).read_bytes() for f in files)
    benchmark = {content_key(Image.open(p).convert("RGB")) for p in first.rglob("*.png")}
    assert len(benchmark) == 8
    training = {
        content_key(s.image)
        for seed in (0, 1)
        for split, count in (("train", 64), ("validation", 16))
        for s in generate_samples(count, seed, split, size=56)
    }
    assert not benchmark & training


def test_entry_point_registers_both_back_ends():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    registry = ModelRegistryV2()
    registry.load_entrypoint_manifests()
    assert registry.get_model_class("llava_vr") is LlavaVRLmms
    assert registry.resolve("llava_vr_vllm").class_path == "llava_vr.evaluation.lmms_model.LlavaVRVLLMLmms"
