"""Fine-tuning with TRL's SFTTrainer on CPU: tiny model, tiny tokenizer, synthetic documents, a few steps each."""

import copy
import json

import pytest
import torch
from PIL import Image

from llava_vr import LlavaVRForConditionalGeneration
from llava_vr.data.synthetic_documents import synthetic_document_dataset
from llava_vr.testing_utils import TILE, build_tiny_tokenizer, tiny_config, tiny_processor, tiny_text_config
from llava_vr.training import (
    STAGES,
    LlavaVRSFTTrainer,
    base_tile_only,
    check_lora_trainable,
    component_learning_rates,
    component_of,
    lora_config_for,
    merge_and_save,
    set_trainable,
)

pytest.importorskip("trl")
pytest.importorskip("peft")
from trl import SFTConfig  # noqa: E402

from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.sft_data import load_documents  # noqa: E402
from llava_vr.training.sft_options import parse_args  # noqa: E402

IMAGE_SIZE = 84  # an 84 x 84 document: base tile + 2 x 2 AnyRes crops on the tiny 56-px tiles


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


@pytest.fixture(scope="module")
def config(tokenizer):
    return tiny_config(
        text_config=tiny_text_config(vocab_size=len(tokenizer)),
        image_token_index=tokenizer.convert_tokens_to_ids("<image>"),
    )


@pytest.fixture(scope="module")
def dataset():
    return synthetic_document_dataset(4, seed=0, size=IMAGE_SIZE)


def make_processor(config):
    assert config.vision_config.image_size == TILE
    return tiny_processor(config, kind="onevision")


def make_model(config, seed=0):
    torch.manual_seed(seed)
    return LlavaVRForConditionalGeneration(copy.deepcopy(config))


def sft_config(output_dir, **overrides):
    values = dict(
        output_dir=str(output_dir),
        max_steps=2,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        bf16=False,
        activation_checkpointing=False,
        assistant_only_loss=True,
        max_length=2048,  # not TRL's 1024 default, which is smaller than one 9-tile image of a real checkpoint
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    values.update(overrides)
    return SFTConfig(**values)


def train(model, processor, dataset, output_dir, rates=None, peft_config=None, **overrides):
    trainer = LlavaVRSFTTrainer(
        model=model,
        args=sft_config(output_dir, **overrides),
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
        component_learning_rates=rates,
    )
    trainer.train()
    return trainer


def losses(trainer):
    return [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]


def snapshot(model):
    return {name: param.detach().clone() for name, param in model.named_parameters()}


def changed(before, after, names):
    return [n for n in names if not torch.equal(before[n], after[n])]


# ---- labels ----------------------------------------------------------------------------------------------------------


def test_labels_cover_exactly_the_assistant_replies_and_their_end_token(config, dataset, tmp_path):
    processor = make_processor(config)
    trainer = LlavaVRSFTTrainer(
        model=make_model(config), args=sft_config(tmp_path), train_dataset=dataset, processing_class=processor
    )
    rows = [dataset[i] for i in range(3)]
    batch = trainer.data_collator(copy.deepcopy(rows))
    assert {"input_ids", "attention_mask", "labels", "pixel_values", "image_sizes", "batch_num_images"} <= set(batch)
    tok = processor.tokenizer
    header = tok.encode("<|im_start|>assistant\n", add_special_tokens=False)
    im_end, image_id = tok.convert_tokens_to_ids("<|im_end|>"), config.image_token_index
    for row, ids, labels, mask in zip(rows, batch["input_ids"], batch["labels"], batch["attention_mask"], strict=False):
        ids = ids.tolist()
        starts = [i + len(header) for i in range(len(ids) - len(header) + 1) if ids[i : i + len(header)] == header]
        assert len(starts) == 1, "one assistant turn per sample"
        end = ids.index(im_end, starts[0])
        expected = torch.zeros(len(ids), dtype=torch.bool)
        expected[starts[0] : end + 1] = True  # the reply and its <|im_end|>
        assert torch.equal(labels != -100, expected), "labels must be exactly the assistant reply + <|im_end|>"
        assert torch.equal(labels[expected], torch.tensor(ids)[expected])
        answer = row["messages"][1]["content"][0]["text"]
        assert tok.decode(ids[starts[0] : end]) == answer
        assert (torch.tensor(ids) == image_id).sum() > 0 and not (labels == image_id).any()
        assert (labels[mask == 0] == -100).all()


# ---- full fine-tune, stage 1, learning rates -------------------------------------------------------------------------


def test_full_fine_tune_loss_is_finite_and_falls(config, dataset, tmp_path):
    model = make_model(config)
    set_trainable(model, "stage2")
    trainer = train(model, make_processor(config), dataset.select([0, 1]), tmp_path, max_steps=4)
    history = losses(trainer)
    assert len(history) == 4 and all(torch.isfinite(torch.tensor(history)))
    assert history[-1] < history[0], history


def test_stage1_moves_only_projector_and_vision_remember_with_their_learning_rates(config, dataset, tmp_path):
    model = make_model(config)
    counts = set_trainable(model, "stage1")
    assert counts["vision_tower"]["trainable"] == counts["llm"]["trainable"] == counts["lm_head"]["trainable"] == 0
    assert counts["projector"]["trainable"] == counts["projector"]["total"] > 0
    before = snapshot(model)
    rates = {"projector": 1e-3, "vision_remember": 5e-4}
    trainer = train(model, make_processor(config), dataset, tmp_path, rates=rates)
    after = snapshot(model)
    by_component = {}
    for name in before:
        by_component.setdefault(component_of(name), []).append(name)
    for frozen in ("vision_tower", "llm", "lm_head"):
        assert not changed(before, after, by_component[frozen]), f"{frozen} moved"
    for layer in model.config.vision_remember_layers:
        module_names = [n for n in by_component["vision_remember"] if f"vision_remember.{layer}." in n]
        assert changed(before, after, module_names), f"VR {layer} did not move"
    assert changed(before, after, by_component["projector"])
    assert not torch.isfinite(torch.tensor(losses(trainer))).logical_not().any()

    groups = trainer.optimizer.param_groups
    assert {g["component"]: g["initial_lr"] for g in groups} == rates
    optimized = {id(p) for g in groups for p in g["params"]}
    assert optimized == {id(p) for p in model.parameters() if p.requires_grad}


def test_stage1_without_anyres_encodes_the_base_tile_only(config, dataset, tmp_path):
    model, processor = make_model(config), make_processor(config)
    set_trainable(model, "stage1")
    with base_tile_only(model, processor):
        trainer = LlavaVRSFTTrainer(
            model=model, args=sft_config(tmp_path), train_dataset=dataset, processing_class=processor
        )
        batch = trainer.data_collator([dataset[0]])
        grid = config.token_grid_size
        assert int((batch["input_ids"] == config.image_token_index).sum()) == grid * grid + 1
        loss = model(**batch).loss
        assert torch.isfinite(loss)
    assert model.config.vision_aspect_ratio == processor.vision_aspect_ratio == config.vision_aspect_ratio
    assert processor.image_processor.image_grid_pinpoints == config.image_grid_pinpoints


# ---- LoRA ------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(config, dataset, tmp_path_factory):
    model, processor = make_model(config), make_processor(config)
    base = snapshot(model)
    trainer = train(
        model, processor, dataset, tmp_path_factory.mktemp("lora"), peft_config=lora_config_for(model), max_steps=3
    )
    return trainer, base, processor


def test_lora_config_targets_llm_linears_only_and_saves_vr_and_projector(config):
    lora = lora_config_for(config)
    assert lora.modules_to_save == ["vision_remember.1", "vision_remember.4", "multi_modal_projector"]
    from peft import get_peft_model

    peft_model = get_peft_model(make_model(config), lora)
    targets = {n.rsplit(".lora_A", 1)[0] for n, _ in peft_model.named_modules() if n.endswith(".lora_A")}
    assert len(targets) == 7 * config.text_config.num_hidden_layers
    assert all(".language_model.layers." in t and "vision_remember" not in t for t in targets)
    summary = check_lora_trainable(peft_model)
    assert summary["vision_remember"] > 0 and summary["projector"] > 0 and summary["lora"] > 0


def test_lora_run_moves_only_lora_and_modules_to_save(lora_run):
    trainer, base, _ = lora_run
    peft_model = trainer.model
    check_lora_trainable(peft_model)
    moved_lora = moved_saved = 0
    for name, param in peft_model.named_parameters():
        base_name = name.removeprefix("base_model.model.").replace(".base_layer", "").replace(".original_module", "")
        if ".lora_" in name:
            moved_lora += "lora_B" in name and bool(param.detach().abs().sum() > 0)
        elif ".modules_to_save." in name:
            moved_saved += not torch.equal(
                param.detach(), base[name.removeprefix("base_model.model.").replace(".modules_to_save.default", "")]
            )
        else:
            assert torch.equal(param.detach(), base[base_name]), f"base weight moved: {name}"
    assert moved_lora == 7 * 5, "every LoRA B matrix moved off zero"
    assert moved_saved > 0
    assert all(torch.isfinite(torch.tensor(losses(trainer))))


def test_merged_lora_checkpoint_reloads_and_reproduces_the_adapter_logits(lora_run, dataset, tmp_path):
    trainer, _, processor = lora_run
    peft_model = trainer.model.eval()
    inputs = trainer.data_collator([copy.deepcopy(dataset[2])])
    inputs.pop("labels")
    with torch.no_grad():
        unmerged = peft_model(**inputs).logits
    merge_and_save(peft_model, tmp_path, processor)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "modeling_llava_vr.py", "processor_config.json"} <= files
    assert not any("adapter" in name for name in files)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModelForImageTextToText"] == "modeling_llava_vr.LlavaVRForConditionalGeneration"

    from transformers import AutoModelForImageTextToText, AutoProcessor

    reloaded = AutoModelForImageTextToText.from_pretrained(tmp_path, trust_remote_code=True).eval()
    assert not any("lora" in name or "modules_to_save" in name for name, _ in reloaded.named_parameters())
    reloaded_processor = AutoProcessor.from_pretrained(tmp_path, trust_remote_code=True)
    encoded = reloaded_processor(text=["<image>"], images=[dataset[2]["images"][0]], return_tensors="pt")
    image_id = config["image_token_index"]
    assert int((encoded["input_ids"] == image_id).sum()) == int((inputs["input_ids"] == image_id).sum())
    with torch.no_grad():
        merged = reloaded(**inputs).logits
    torch.testing.assert_close(merged, unmerged, rtol=1e-5, atol=1e-5)


# ---- gradient checkpointing through the trainer --------------------------------------------------------------------


def test_gradient_checkpointing_recomputes_vr_and_gives_the_same_update(config, dataset, tmp_path):
    updates, calls = [], []
    for checkpointing in (False, True):
        model = make_model(config)
        set_trainable(model, "stage2")
        before = snapshot(model)
        count = []
        # Transformers checkpoints VR's `forward` (its own hooks stay outside) and the recompute may stop early once
        # it has what the backward needs: count calls of VR's first submodule, with a pre-hook
        model.model.language_model.vision_remember["1"].input_norm.register_forward_pre_hook(
            lambda *a, count=count: count.append(1)
        )
        train(
            model,
            make_processor(config),
            dataset.select([0, 1]),
            tmp_path / str(checkpointing),
            max_steps=1,
            optim="sgd",
            learning_rate=1.0,
            max_grad_norm=0.0,
            activation_checkpointing=checkpointing,
        )
        assert model.model.language_model.vision_remember["1"].gradient_checkpointing is checkpointing
        updates.append({n: before[n] - p.detach() for n, p in model.named_parameters()})
        calls.append(len(count))
    assert calls == [1, 2], "with checkpointing VR runs again in the backward"
    for name in updates[0]:
        torch.testing.assert_close(updates[1][name], updates[0][name], rtol=1e-5, atol=1e-6, msg=name)


# ---- helpers and the sft command -------------------------------------------------------------------------------------


def test_component_of_sees_through_wrappers():
    assert component_of("model.language_model.vision_remember.1.expand_in.weight") == "vision_remember"
    assert component_of("base_model.model.model.language_model.vision_remember.4.modules_to_save.default.x") == (
        "vision_remember"
    )
    assert component_of(
        "_fsdp_wrapped_module.model.language_model.layers.0._fsdp_wrapped_module.mlp.up_proj.weight"
    ) == ("llm")
    assert component_of("module.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight") == "vision_tower"
    assert (
        component_of("model.image_newline")
        == component_of("model.multi_modal_projector.linear_1.weight")
        == ("projector")
    )
    assert component_of("lm_head.weight") == "lm_head"
    assert STAGES["stage1"] == ("projector", "vision_remember")


def test_stage_learning_rates_come_from_one_place_with_per_component_overrides():
    assert component_learning_rates("stage1") == {"projector": 1e-3, "vision_remember": 1e-3}
    assert component_learning_rates("stage2", llm=1e-5) == {
        "projector": 2e-5,
        "vision_remember": 2e-5,
        "llm": 1e-5,
        "lm_head": 1e-5,
    }
    lora = component_learning_rates("stage2", ("projector", "vision_remember", "llm"), lora=True, projector=1e-4)
    assert lora == {"projector": 1e-4, "vision_remember": 2e-4, "llm": 2e-4}
    assert component_learning_rates("stage1", learning_rate=5e-4, llm=1.0) == {
        "projector": 5e-4,
        "vision_remember": 5e-4,
    }
    with pytest.raises(ValueError, match="stage"):
        component_learning_rates("stage3")


def test_sft_command_takes_trls_options_its_own_and_the_short_spellings():
    training_args, model_args, options = parse_args(
        [
            "--model",
            "CKPT",
            "--lora",
            "--max-steps",
            "3",
            "--per_device_train_batch_size",
            "4",
            "--no-merge",
            "--projector_lr",
            "1e-4",
            "--eval_strategy",
            "steps",
            "--eval_steps",
            "2",
        ]
    )
    assert model_args.model_name_or_path == "CKPT" and model_args.use_peft and model_args.dtype is None
    assert training_args.max_steps == 3 and training_args.per_device_train_batch_size == 4
    assert training_args.eval_strategy == "steps" and training_args.assistant_only_loss
    assert training_args.learning_rate is None and training_args.max_length is None  # derived at run time
    assert not training_args.bf16 and not training_args.activation_checkpointing
    assert options.projector_lr == 1e-4 and not options.merge and options.anyres and options.stage == "stage2"
    _, _, stage1 = parse_args(["--tiny", "--stage", "stage1"])
    assert stage1.anyres is False
    bf16, _, _ = parse_args(["--tiny", "--bf16", "--use_cpu", "--warmup", "5"])  # bare --bf16; the old --warmup
    assert bf16.bf16 is True and bf16.warmup_steps == 5
    for bad in (
        ["--tiny", "--model", "CKPT"],
        ["--model", "CKPT", "--lora", "--stage", "stage1"],
        ["--tiny", "--jsonl", "x.jsonl"],
        ["--model", "CKPT", "--lora", "--lora_target_modules", "q_proj"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_sft_command_stage1_run_trains_and_saves_with_the_anyres_settings_restored(tmp_path):
    trainer = sft_cli.run(
        *parse_args(
            [
                "--tiny",
                "--stage",
                "stage1",
                "--max-steps",
                "2",
                "--num-samples",
                "4",
                "--output-dir",
                str(tmp_path),
                "--report-to",
                "none",
            ]
        )
    )
    assert {g["component"] for g in trainer.optimizer.param_groups} == {"projector", "vision_remember"}
    assert {g["initial_lr"] for g in trainer.optimizer.param_groups} == {1e-3}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["vision_aspect_ratio"] == "anyres_max_9"
    processor = json.loads((tmp_path / "processor_config.json").read_text())
    assert processor.get("vision_aspect_ratio", "anyres_max_9") == "anyres_max_9"
    assert len(processor["image_processor"]["image_grid_pinpoints"]) == 6


def test_sft_command_reads_image_folder_plus_jsonl(tmp_path):
    for name in ("a.png", "b.png"):
        Image.new("RGB", (70, 40), "white").save(tmp_path / name)
    lines = [{"image": "a.png", "question": "Total?", "answer": 12}, {"image": "b.png", "question": "Q", "answer": "x"}]
    (tmp_path / "data.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    _, _, options = parse_args(["--tiny", "--jsonl", str(tmp_path / "data.jsonl"), "--image-root", str(tmp_path)])
    dataset = load_documents(options)
    assert dataset.column_names == ["messages", "images"] and len(dataset) == 2
    row = dataset[0]
    assert row["images"][0].size == (70, 40)
    assert row["messages"][1]["content"][0]["text"] == "12"


def test_sft_command_reads_datasets_from_disk_and_from_a_data_folder(dataset, tmp_path):
    dataset.save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "parquet").mkdir()
    dataset.to_parquet(str(tmp_path / "parquet" / "train.parquet"))
    for source in ("saved", "parquet"):
        _, _, options = parse_args(["--tiny", "--dataset", str(tmp_path / source)])
        loaded = load_documents(options)
        assert len(loaded) == len(dataset) and {"messages", "images"} <= set(loaded.column_names), source
        assert loaded[0]["images"][0].size == (IMAGE_SIZE, IMAGE_SIZE)
        assert loaded[0]["messages"][1]["content"][0]["text"] == dataset[0]["messages"][1]["content"][0]["text"]
