"""Conversion of LLaVA-NeXT / LLaVA-OneVision checkpoints (Transformers, both layouts, and the LLaVA-NeXT repo's
lmms-lab layout) into LLaVA-VR folders, and publishing them (`llava_vr.hub.push`) against a local Hub stub.

Tiny random models; the conversions run in-process through `main(argv)`, the `trust_remote_code` loading, the CLI's
refusal and the upload in subprocesses (one each)."""

import json
import logging
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from test_transformers_parity import assert_same_logits
from transformers import (
    LlavaNextConfig,
    LlavaNextForConditionalGeneration,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2Tokenizer,
)

from llava_vr import LlavaVRForConditionalGeneration
from llava_vr.conversion import convert as conversion
from llava_vr.conversion import infer_vision_config, parse_pinpoints
from llava_vr.data.image_processors import anyres_image_processor
from llava_vr.hub import push as publishing
from llava_vr.hub import validate_folder
from llava_vr.packing_llava_vr import grid_pinpoints
from llava_vr.testing_utils import build_tiny_tokenizer, left_pad, tiny_text_config, tiny_vision_config

ROOT = Path(__file__).resolve().parents[1]
CONVERT = ROOT / "conversion" / "convert_to_llava_vr.py"
SIZES = [(60, 100), (120, 40), (56, 56), (170, 30), (100, 160)]
SOURCE_README = "---\nlicense: apache-2.0\ndatasets:\n- lmms-lab/LLaVA-OneVision-Data\n---\n# tiny source\n"
VR_FLAGS = ["--vision-remember-layers", "1", "4", "--vision-remember-feature-layers", "1", "2", "3"]
IMAGE_TOKEN = 3  # the tiny tokenizer's <image>


pytestmark = pytest.mark.usefixtures("one_thread")  # see conftest.py


def subprocess_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HF_HUB_OFFLINE", "HF_ENDPOINT")}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


# ---------------------------------------------------------------------------------------------------------------------
# Tiny sources
# ---------------------------------------------------------------------------------------------------------------------
def tiny_tokenizer_vocab() -> int:
    return len(build_tiny_tokenizer())


def next_model(seed=1, text=None):
    torch.manual_seed(seed)
    tile = 56
    return LlavaNextForConditionalGeneration(
        LlavaNextConfig(
            vision_config=tiny_vision_config("clip", tile),
            text_config=text or tiny_text_config(vocab_size=tiny_tokenizer_vocab()),
            image_token_index=IMAGE_TOKEN,
            image_grid_pinpoints=grid_pinpoints(tile, 2, 3),
            vision_feature_select_strategy="default",
            vision_feature_layer=-2,
        )
    ).eval()


def onevision_model(seed=2):
    torch.manual_seed(seed)
    tile = 42
    return LlavaOnevisionForConditionalGeneration(
        LlavaOnevisionConfig(
            vision_config=tiny_vision_config("siglip", tile),
            text_config={**tiny_text_config(vocab_size=tiny_tokenizer_vocab()), "tie_word_embeddings": True},
            tie_word_embeddings=True,  # like Qwen2-0.5B: lm_head is the embedding matrix
            image_token_index=IMAGE_TOKEN,
            image_grid_pinpoints=grid_pinpoints(tile, 2, 3),
            vision_aspect_ratio="anyres_max_9",
            vision_feature_select_strategy="full",
            vision_feature_layer=-1,
        )
    ).eval()


def image_processor_for(model):
    tile, pinpoints = model.config.vision_config.image_size, model.config.image_grid_pinpoints
    if isinstance(model, LlavaNextForConditionalGeneration):
        return anyres_image_processor("next", tile, pinpoints)
    return anyres_image_processor("onevision", tile, pinpoints, image_mean=[0.5] * 3, image_std=[0.5] * 3)


def write_transformers_source(model, folder: Path, layout: str) -> Path:
    """`llava-hf`: what the Hub's llava-hf repos hold (`language_model.model.*`, `vision_tower.vision_model.*`);
    `transformers`: the current in-memory layout (`model.language_model.*`) written as is."""
    folder.mkdir(parents=True)
    if layout == "llava-hf":
        # 5.23 writes the legacy names; add the Hub repos' `vision_model.` level. Sharded, as the big repos are.
        model.save_pretrained(folder, max_shard_size="400KB")
        hub_name = lambda key: re.sub(r"^vision_tower\.", "vision_tower.vision_model.", key)  # noqa: E731
        shards = sorted(folder.glob("*.safetensors"))
        assert len(shards) > 1
        for shard in shards:
            weights = {hub_name(k): v for k, v in load_file(shard).items()}
            save_file(weights, shard, metadata={"format": "pt"})
        index = json.loads((folder / "model.safetensors.index.json").read_text())
        index["weight_map"] = {hub_name(k): v for k, v in index["weight_map"].items()}
        assert any(k.startswith("language_model.model.") for k in index["weight_map"])
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    else:
        model.config.save_pretrained(folder)
        save_file(
            {k: v.contiguous() for k, v in model.state_dict().items()},
            folder / "model.safetensors",
            metadata={"format": "pt"},
        )
    build_tiny_tokenizer(folder)
    image_processor_for(model).save_pretrained(folder)
    (folder / "README.md").write_text(SOURCE_README)
    return folder


def lmms_lab_tokenizer(folder: Path):
    """The tiny tokenizer without `<image>` (its id 3 becomes an ordinary token), like Qwen2's own tokenizer."""
    bpe = json.loads(build_tiny_tokenizer().backend_tokenizer.to_str())["model"]
    vocab = {("<|reserved|>" if token == "<image>" else token): i for token, i in bpe["vocab"].items()}
    merges = [tuple(m.split(" ") if isinstance(m, str) else m) for m in bpe["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=vocab, merges=list(merges), unk_token=None, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>"]})
    tokenizer.save_pretrained(folder)
    return tokenizer


def write_lmms_lab_source(model, folder: Path, tower_name: str) -> Path:
    """A LLaVA-NeXT-repo checkpoint: real key names and config fields, weights renamed from a Transformers model."""
    folder.mkdir(parents=True)
    renames = [
        (r"^model\.language_model\.", "model."),
        (r"^model\.multi_modal_projector\.linear_1\.", "model.mm_projector.0."),
        (r"^model\.multi_modal_projector\.linear_2\.", "model.mm_projector.2."),
        (r"^model\.vision_tower\.", "model.vision_tower.vision_tower.vision_model."),
    ]
    weights = {}
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and model.config.text_config.tie_word_embeddings:
            continue  # tied: not stored, as save_pretrained does
        for pattern, replacement in renames:
            key = re.sub(pattern, replacement, key)
        weights[key] = tensor.contiguous()
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    config, text = model.config, model.config.text_config
    siglip = config.vision_config.model_type == "siglip_vision_model"
    tile = config.vision_config.image_size
    raw = {
        "architectures": ["LlavaQwenForCausalLM"],
        "model_type": "llava",
        **{
            k: getattr(text, k)
            for k in (
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "rms_norm_eps",
                "max_position_embeddings",
                "vocab_size",
                "tie_word_embeddings",
                "use_sliding_window",
                "sliding_window",
                "max_window_layers",
                "hidden_act",
            )
        },
        "rope_theta": text.rope_parameters["rope_theta"],
        "torch_dtype": "float32",
        "image_aspect_ratio": "anyres_max_9" if siglip else "anyres",
        "image_grid_pinpoints": "(1x1),...,(2x3)" if siglip else config.image_grid_pinpoints,
        "image_token_index": 151646,
        "mm_hidden_size": config.vision_config.hidden_size,
        "mm_patch_merge_type": "spatial_unpad",
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_patch_token": False,
        "mm_use_im_start_end": False,
        "mm_vision_select_feature": "patch",
        "mm_vision_select_layer": config.vision_feature_layer,
        "mm_vision_tower": tower_name,
        "mm_spatial_pool_mode": "bilinear",
        "tokenizer_model_max_length": 32768,
        "use_mm_proj": True,
    }
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    lmms_lab_tokenizer(folder)
    assert tile in (42, 56)
    return folder


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Each tiny source model and its folders (built once for the module)."""
    root = tmp_path_factory.mktemp("sources")
    nxt, ov = next_model(), onevision_model()
    # lmms-lab: the vocabulary of the tokenizer without <image>; <image> is appended (row 400) by the conversion.
    return {
        "next": nxt,
        "onevision": ov,
        "next-llava-hf": write_transformers_source(nxt, root / "next-llava-hf", "llava-hf"),
        "next-transformers": write_transformers_source(nxt, root / "next-transformers", "transformers"),
        "onevision-llava-hf": write_transformers_source(ov, root / "onevision-llava-hf", "llava-hf"),
        "onevision-lmms-lab": write_lmms_lab_source(ov, root / "onevision-lmms-lab", "tiny/siglip-patch14-42"),
        "next-lmms-lab": write_lmms_lab_source(nxt, root / "next-lmms-lab", "tiny/clip-vit-patch14-56"),
    }


def convert(source, output, *flags, check=True):
    code = conversion.main(["--source", str(source), "--output", str(output), *flags])
    if check:
        assert code == 0
    return code


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    """Converted folders shared by the parity, loading and publishing tests."""
    root = tmp_path_factory.mktemp("converted")
    folders = {
        "next-mlp": (sources["next-llava-hf"], ["--projector-type", "mlp", *VR_FLAGS]),
        "next-mlp-new-layout": (sources["next-transformers"], ["--projector-type", "mlp", *VR_FLAGS]),
        "onevision-mlp": (sources["onevision-llava-hf"], ["--projector-type", "mlp", *VR_FLAGS]),
        "onevision-lmms-mlp": (
            sources["onevision-lmms-lab"],
            ["--projector-type", "mlp", *VR_FLAGS, "--vision-num-attention-heads", "4"],
        ),
        "next-lmms-mlp": (
            sources["next-lmms-lab"],
            ["--projector-type", "mlp", "--no-vision-remember", "--vision-num-attention-heads", "4"],
        ),
        "next-pool-vr": (sources["next-llava-hf"], ["--projector-type", "adaptive_avg_pool", *VR_FLAGS]),
    }
    for name, (source, flags) in folders.items():
        convert(source, root / name, *flags)
    return {name: root / name for name in folders}


def load(folder):
    return LlavaVRForConditionalGeneration.from_pretrained(folder).eval()


# ---------------------------------------------------------------------------------------------------------------------
# Parity with the source (`--projector-type mlp`, VR at init)
# ---------------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, source_model",
    [("next-mlp", "next"), ("next-mlp-new-layout", "next"), ("onevision-mlp", "onevision")],
)
def test_mlp_conversion_reproduces_the_source_logits(converted, sources, name, source_model):
    ours, theirs = load(converted[name]), sources[source_model]
    assert ours.config.vision_remember_layers == [1, 4]
    inputs, _ = image_inputs_for(ours, IMAGE_TOKEN)
    assert_same_logits(ours, theirs, inputs)


def test_next_source_with_a_tied_text_config_converts_untied_and_loads_without_a_tie_warning(tmp_path):
    """LLaVA-NeXT ties by its top-level flag only: a Qwen2-0.5B text config's `tie_word_embeddings: true` is unused
    there (separate lm_head). The conversion keeps it untied: loading warns nothing, the logits are the source's."""
    text = {**tiny_text_config(vocab_size=tiny_tokenizer_vocab()), "tie_word_embeddings": True}
    source = next_model(seed=3, text=text)
    assert not source.config.tie_word_embeddings and source.config.text_config.tie_word_embeddings
    assert source.lm_head.weight.data_ptr() != source.model.language_model.embed_tokens.weight.data_ptr()
    folder = write_transformers_source(source, tmp_path / "source", "llava-hf")
    convert(folder, tmp_path / "out", "--projector-type", "mlp", *VR_FLAGS)
    saved = json.loads((tmp_path / "out" / "config.json").read_text())
    assert saved["tie_word_embeddings"] is False and saved["text_config"]["tie_word_embeddings"] is False

    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    transformers_logger.addHandler(handler)
    try:
        ours = load(tmp_path / "out")
    finally:
        transformers_logger.removeHandler(handler)
    assert [r.getMessage() for r in records if "tie" in r.getMessage()] == []
    assert ours.lm_head.weight.data_ptr() != ours.model.language_model.embed_tokens.weight.data_ptr()
    inputs, _ = image_inputs_for(ours, IMAGE_TOKEN)
    assert_same_logits(ours, source, inputs)


@pytest.mark.parametrize("name, source_model", [("onevision-lmms-mlp", "onevision"), ("next-lmms-mlp", "next")])
def test_lmms_lab_conversion_reproduces_the_transformers_model_it_came_from(converted, sources, name, source_model):
    ours, theirs = load(converted[name]), sources[source_model]
    tied = ours.lm_head.weight.data_ptr() == ours.model.language_model.embed_tokens.weight.data_ptr()
    assert tied == (source_model == "onevision")
    vocab = theirs.config.text_config.vocab_size
    image_token = ours.config.image_token_index
    assert image_token == vocab and ours.config.text_config.vocab_size == vocab + 1  # <image> appended, one new row
    for key in ("vision_config", "text_config"):
        for field in ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            assert getattr(getattr(ours.config, key), field) == getattr(getattr(theirs.config, key), field)
    for field in ("image_grid_pinpoints", "vision_feature_layer", "vision_feature_select_strategy"):
        assert getattr(ours.config, field) == getattr(theirs.config, field)
    ours_inputs, ids = image_inputs_for(ours, image_token)
    their_inputs = dict(
        ours_inputs,
        input_ids=torch.where(ours_inputs["input_ids"] == image_token, IMAGE_TOKEN, ours_inputs["input_ids"]),
    )
    real = ours_inputs["attention_mask"].bool()
    expected = theirs(**their_inputs).logits[real]
    got = ours(**ours_inputs).logits[real][:, :vocab]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5 * expected.abs().max().item())


def image_inputs_for(model, image_token, seed=0):
    sizes = torch.tensor(SIZES)
    layouts = model.model.image_layouts(sizes)
    tile = model.config.vision_config.image_size
    generator = torch.Generator().manual_seed(seed)
    most_tiles = max(layout.num_tiles for layout in layouts)
    pixel_values = torch.randn(len(layouts), most_tiles, 3, tile, tile, generator=generator)
    ids = [torch.tensor([10, 11, 12, *([image_token] * layout.num_tokens), 13, 14]) for layout in layouts]
    return left_pad(ids) | {"pixel_values": pixel_values, "image_sizes": sizes}, ids


# ---------------------------------------------------------------------------------------------------------------------
# What the folder holds; trust_remote_code loading where `llava_vr` is not importable
# ---------------------------------------------------------------------------------------------------------------------
def test_converted_folder_is_a_complete_remote_code_folder(converted):
    folder = converted["next-pool-vr"]
    files = set(os.listdir(folder))
    assert {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
        "chat_template.jinja",
        "README.md",
        "configuration_llava_vr.py",
        "modeling_llava_vr.py",
        "processing_llava_vr.py",
    } <= files or {"config.json", "model.safetensors", "processor_config.json", "README.md"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    config = json.loads((folder / "config.json").read_text())
    assert {"AutoConfig", "AutoModel", "AutoModelForImageTextToText"} <= config["auto_map"].keys()
    assert config["projector_type"] == "adaptive_avg_pool" and config["vision_remember_layers"] == [1, 4]
    assert (config["vision_aspect_ratio"], config["multi_image_anyres"]) == ("anyres", True)  # from LLaVA-NeXT
    processor_config = json.loads((folder / "processor_config.json").read_text())
    assert processor_config["auto_map"]["AutoProcessor"].endswith("LlavaVRProcessor")
    assert processor_config["num_image_tokens"] == 4  # follows the pooling projector (2 x 2 per 56-px tile)
    ov = json.loads((converted["onevision-mlp"] / "config.json").read_text())
    assert (ov["vision_aspect_ratio"], ov["multi_image_anyres"]) == ("anyres_max_9", False)  # from OneVision
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folders left
    validate_folder(folder)


REMOTE_SCRIPT = textwrap.dedent(
    """
    import json, sys
    sys.modules["llava_vr"] = None  # the package must not be importable
    import numpy as np
    from PIL import Image
    from transformers import AutoConfig, AutoModel, AutoModelForImageTextToText, AutoProcessor

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in [(60, 100), (120, 40)]]
    report = {}
    for folder in sys.argv[1:]:
        config = AutoConfig.from_pretrained(folder, trust_remote_code=True)
        base = AutoModel.from_pretrained(folder, trust_remote_code=True)
        model = AutoModelForImageTextToText.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
        processor.tokenizer.padding_side = "left"
        messages = [[{"role": "user", "content": [{"type": "image", "image": p}, {"type": "text", "text": "Total?"}]}]
                    for p in pictures]
        inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True,
                                               return_tensors="pt", padding=True)
        layouts = model.model.image_layouts(inputs["image_sizes"], inputs.get("batch_num_images"))
        generated = model.generate(**inputs, max_new_tokens=3, do_sample=False)
        report[folder] = {
            "classes": [type(config).__module__, type(base).__name__, type(model).__name__, type(processor).__name__],
            "tokens": (inputs["input_ids"] == model.config.image_token_id).sum(-1).tolist(),
            "layout_tokens": [layout.num_tokens for layout in layouts],
            "per_tile": [processor.num_image_tokens, model.config.num_image_tokens_per_tile],
            "image_token": [processor.image_token_id, model.config.image_token_id],
            "new_tokens": generated.shape[1] - inputs["input_ids"].shape[1],
        }
    report["modules"] = [m for m, v in sys.modules.items() if m.startswith("llava_vr") and v is not None]
    print(json.dumps(report))
    """
)


def test_converted_folders_load_with_trust_remote_code_without_the_package(converted, tmp_path):
    folders = [str(converted[name]) for name in ("next-mlp", "next-pool-vr", "onevision-lmms-mlp")]
    env = subprocess_env(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf-home"))
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_SCRIPT, *folders],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report.pop("modules") == []
    for folder in folders:
        entry = report[folder]
        assert entry["classes"][0].startswith("transformers_modules")
        assert entry["classes"][1:] == ["LlavaVRModel", "LlavaVRForConditionalGeneration", "LlavaVRProcessor"]
        assert entry["tokens"] == entry["layout_tokens"]  # processor and model count the same image tokens
        assert entry["per_tile"][0] == entry["per_tile"][1]
        assert entry["image_token"][0] == entry["image_token"][1]
        assert entry["new_tokens"] >= 1
    assert report[folders[1]]["per_tile"] == [4, 4]  # adaptive_avg_pool: 2 x 2 per tile instead of 4 x 4
    assert report[folders[2]]["image_token"] == [400, 400]  # lmms-lab: <image> appended to the vocabulary


# ---------------------------------------------------------------------------------------------------------------------
# Compressing projectors: what is carried and what is new
# ---------------------------------------------------------------------------------------------------------------------
NEW_PROJECTOR_PARTS = {
    "pixel_shuffle": ["model.multi_modal_projector.linear_1", "model.multi_modal_projector.norm"],
    "ldpv2": ["model.multi_modal_projector.peg"],
    "tokenpacker": ["model.multi_modal_projector.{q,k,v,o}_proj"],
}


@pytest.mark.parametrize("projector", sorted(NEW_PROJECTOR_PARTS))
def test_compressing_projector_conversion_card_lists_new_and_carried_weights(sources, tmp_path, projector):
    output = tmp_path / projector
    dtype = ["--dtype", "bfloat16"] if projector == "ldpv2" else []
    convert(sources["next-llava-hf"], output, "--projector-type", projector, *VR_FLAGS, *dtype)
    model = load(output)
    stored = torch.bfloat16 if dtype else torch.float32
    assert model.dtype == stored
    source = sources["next"].state_dict()
    ours = model.state_dict()
    carried_projector = [k for k in ours if k.startswith("model.multi_modal_projector.linear_")]
    for key in carried_projector:
        if projector == "pixel_shuffle" and ".linear_1." in key:  # reads 4x the width: a new layer
            assert key.endswith(".bias") or ours[key].shape[1] == 4 * source[key].shape[1]
        else:
            assert torch.equal(ours[key], source[key].to(stored)), key
    card = (output / "README.md").read_text()
    new_section = card.split("**NEW and UNTRAINED")[1].split("parameters are new")[0]
    for part in NEW_PROJECTOR_PARTS[projector] + [
        "model.language_model.vision_remember.1",
        "model.language_model.vision_remember.4",
    ]:
        assert f"`{part}" in new_section, (part, new_section)
    assert "linear_2" not in new_section and "vision_tower" not in new_section
    assert "4 vision tokens per 56-px tile, down from 16" in card


def test_mlp_card_says_the_conversion_reproduces_the_source(converted):
    card = (converted["next-mlp"] / "README.md").read_text()
    assert "reproduces the source model's outputs" in card
    assert "16 vision tokens per 56-px tile" in card and "down from" not in card
    assert "Vision Remember: Recovering Visual Information in Efficient LVLM with Vision Feature Resampling" in card


def test_lmms_lab_tower_inference_and_pinpoints():
    clip = {
        "model.vision_tower.embeddings.patch_embedding.weight": (1024, 3, 14, 14),
        "model.vision_tower.embeddings.position_embedding.weight": (577, 1024),
        "model.vision_tower.embeddings.class_embedding": (1024,),
        "model.vision_tower.pre_layrnorm.weight": (1024,),
    }
    clip.update({f"model.vision_tower.encoder.layers.{i}.mlp.fc1.weight": (4096, 1024) for i in range(24)})
    config = infer_vision_config(clip, "openai/clip-vit-large-patch14-336")
    assert (
        config["model_type"],
        config["image_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["intermediate_size"],
    ) == ("clip_vision_model", 336, 24, 16, 4096)
    siglip = {
        "model.vision_tower.embeddings.patch_embedding.weight": (1152, 3, 14, 14),
        "model.vision_tower.embeddings.position_embedding.weight": (729, 1152),
    }
    siglip.update({f"model.vision_tower.encoder.layers.{i}.mlp.fc1.weight": (4304, 1152) for i in range(26)})
    config = infer_vision_config(siglip, "google/siglip-so400m-patch14-384")
    assert (
        config["model_type"],
        config["image_size"],
        config["num_hidden_layers"],
        config["num_attention_heads"],
        config["vision_use_head"],
    ) == ("siglip_vision_model", 384, 26, 16, False)
    assert infer_vision_config(siglip, "someone/unknown-tower")["num_attention_heads"] == 1152 // 64
    assert parse_pinpoints("(1x1),...,(2x3)", 384)[:4] == [[384, 384], [384, 768], [384, 1152], [768, 384]]


# ---------------------------------------------------------------------------------------------------------------------
# Refusals: non-zero exit, one line on stderr, nothing written
# ---------------------------------------------------------------------------------------------------------------------
def dummy_weights(folder: Path, key="language_model.model.embed_tokens.weight"):
    save_file({key: torch.zeros(2, 2)}, folder / "model.safetensors")


def refusal_sources(root: Path) -> dict:
    qwen = root / "qwen2"
    torch.manual_seed(0)
    text_config = Qwen2Config(**{k: v for k, v in tiny_text_config().items() if k != "model_type"})
    Qwen2ForCausalLM(text_config).save_pretrained(qwen)
    llava = root / "llava"
    llava.mkdir()
    (llava / "config.json").write_text(
        json.dumps({"architectures": ["LlavaForConditionalGeneration"], "model_type": "llava"})
    )
    dummy_weights(llava)
    llama = root / "llava-next-llama"
    LlavaNextConfig(
        vision_config=tiny_vision_config(),
        text_config={**tiny_text_config(), "model_type": "llama"},
        image_token_index=IMAGE_TOKEN,
    ).save_pretrained(llama)
    dummy_weights(llama)
    lmms_llama = root / "lmms-llama"
    lmms_llama.mkdir()
    (lmms_llama / "config.json").write_text(
        json.dumps({"architectures": ["LlavaLlamaForCausalLM"], "model_type": "llava_llama", "mm_vision_tower": "x"})
    )
    dummy_weights(lmms_llama, "model.embed_tokens.weight")
    return {"qwen2": qwen, "llava": llava, "llama": llama, "lmms-llama": lmms_llama}


def test_refusals_exit_non_zero_with_one_line_and_write_nothing(sources, tmp_path, capsys):
    bad = refusal_sources(tmp_path / "bad")
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    next_source = sources["next-llava-hf"]
    cases = [
        ([bad["qwen2"], "out-1"], "Qwen2ForCausalLM"),
        ([bad["llava"], "out-2"], "LlavaForConditionalGeneration"),
        ([bad["llama"], "out-3"], "'llama'"),
        ([bad["lmms-llama"], "out-4"], "Llama"),
        ([next_source, "out-5"], "vision-remember-feature-layers [13, 18, 23] are beyond the vision tower's depth"),
        (
            [next_source, "out-6", "--vision-remember-layers", "1", "9", "--vision-remember-feature-layers", "1", "2"],
            "vision_remember_layers [9] are outside the LLM's 5 decoder layers: valid 0-based layers are 0 to 4",
        ),
        ([next_source, "occupied"], "exists and is not empty"),
        ([tmp_path / "no-such-folder", "out-8"], "no such folder"),
    ]
    capsys.readouterr()  # the sources' own save messages
    for (source, output, *flags), expected in cases:
        code = conversion.main(["--source", str(source), "--output", str(tmp_path / output), *flags])
        captured = capsys.readouterr()
        lines = captured.err.strip().splitlines()
        assert code == 2, (expected, captured.err)
        assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], (expected, lines)
        assert "Traceback" not in captured.err + captured.out
        assert output == "occupied" or not (tmp_path / output).exists()
    assert (occupied / "keep.txt").read_text() == "mine"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_cli_refusal_in_a_subprocess(tmp_path):
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    result = subprocess.run(
        [sys.executable, str(CONVERT), "--source", str(tmp_path), "--output", str(occupied)],
        capture_output=True,
        text=True,
        timeout=120,
        env=subprocess_env(),
    )
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]  # not other packages' notices
    assert errors == [f"error: --output {occupied} exists and is not empty (pass --overwrite to replace it)"]
    assert "Traceback" not in result.stderr


def test_failed_conversion_leaves_no_half_written_folder_and_overwrite_replaces(sources, tmp_path, monkeypatch, capsys):
    output = tmp_path / "model"
    output.mkdir()
    (output / "old.txt").write_text("old")

    class BrokenProcessor:
        def save_pretrained(self, folder):
            (Path(folder) / "half-written.json").write_text("{}")
            raise OSError("disk full")

    real_build_processor = conversion.build_processor
    monkeypatch.setattr(conversion, "build_processor", lambda *a: (real_build_processor(*a), BrokenProcessor())[1])
    code = conversion.main(
        [
            "--source",
            str(sources["next-llava-hf"]),
            "--output",
            str(output),
            "--overwrite",
            "--projector-type",
            "mlp",
            "--no-vision-remember",
        ]
    )
    assert code == 1 and "disk full" in capsys.readouterr().err
    assert sorted(os.listdir(output)) == ["old.txt"]  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # temporary folder removed

    monkeypatch.setattr(conversion, "build_processor", real_build_processor)
    convert(sources["next-llava-hf"], output, "--overwrite", "--projector-type", "mlp", "--no-vision-remember")
    assert "old.txt" not in os.listdir(output) and (output / "model.safetensors").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


# ---------------------------------------------------------------------------------------------------------------------
# Publishing
# ---------------------------------------------------------------------------------------------------------------------
def test_dry_run_lists_the_files_and_prints_the_card_without_uploading(converted, monkeypatch, capsys):
    import huggingface_hub

    def no_network(*args, **kwargs):
        raise AssertionError("a dry run must not contact the Hub")

    for name in ("create_repo", "upload_folder"):
        monkeypatch.setattr(huggingface_hub, name, no_network)
    monkeypatch.setattr(huggingface_hub.HfApi, "_validate_yaml", no_network)
    folder = converted["next-pool-vr"]
    assert publishing.main([str(folder), "--repo-id", "me/tiny-llava-vr", "--dry-run"]) == 0
    out = capsys.readouterr().out
    listed = dict(re.findall(r"^  (\S+)\s+([\d,]+) bytes", out, re.MULTILINE))
    card = out.split("--- README.md (model card) ---")[1]
    # the repo id filled in
    completed = (folder / "README.md").read_text().replace('"OWNER/NAME"', '"me/tiny-llava-vr"')
    assert {name: int(size.replace(",", "")) for name, size in listed.items()} == {
        p.name: p.stat().st_size for p in folder.iterdir() if p.is_file()
    } | {"README.md": len(completed.encode())}
    metadata = yaml.safe_load(card.split("---")[1])
    assert metadata["library_name"] == "transformers" and metadata["pipeline_tag"] == "image-text-to-text"
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["lmms-lab/LLaVA-OneVision-Data"]
    assert "base_model" not in metadata  # a local source of unknown Hub id: no local path as base_model
    assert 'model_id = "me/tiny-llava-vr"' in card and "OWNER/NAME" not in card
    assert {"llava-vr", "vision-remember", "image-text-to-text"} <= set(metadata["tags"])
    assert "trust_remote_code=True" in card and "AutoModelForImageTextToText" in card and "pipeline(" in card
    assert "nothing was uploaded" in out


def test_push_refuses_pickles_and_folders_without_remote_code(converted, tmp_path, capsys):
    import shutil

    folder = tmp_path / "copy"
    shutil.copytree(converted["next-mlp"], folder)
    (folder / "README.md").unlink()  # e.g. a fine-tuned folder: a card is generated for the upload
    assert publishing.main([str(folder), "--repo-id", "me/fine-tuned", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "uploading a generated LLaVA-VR card" in out and not (folder / "README.md").exists()  # folder unchanged
    card = out.split("--- README.md (model card) ---")[1]
    assert yaml.safe_load(card.split("---")[1])["pipeline_tag"] == "image-text-to-text"
    assert 'model_id = "me/fine-tuned"' in out
    (folder / "pytorch_model.bin").write_bytes(b"pickle")
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "pickle-format files" in capsys.readouterr().err
    (folder / "pytorch_model.bin").unlink()
    (folder / "modeling_llava_vr.py").unlink()
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "modeling_llava_vr.py" in capsys.readouterr().err
    shutil.copy(converted["next-mlp"] / "modeling_llava_vr.py", folder)
    config = json.loads((folder / "config.json").read_text())
    del config["auto_map"]["AutoModel"]
    (folder / "config.json").write_text(json.dumps(config))
    assert publishing.main([str(folder), "--repo-id", "me/x", "--dry-run"]) == 2
    assert "auto_map lacks AutoModel" in capsys.readouterr().err


def test_push_to_hub_uploads_the_folder_to_a_hub_stub(converted, tmp_path):
    from hub_stub import HubStub

    folder = converted["onevision-lmms-mlp"]
    with HubStub() as stub:
        env = subprocess_env(
            HF_ENDPOINT=stub.url,
            HF_TOKEN="hf_dummy_token",
            HF_HOME=str(tmp_path / "hf-home"),
            HF_HUB_DISABLE_TELEMETRY="1",
            NO_PROXY="127.0.0.1,localhost",
            no_proxy="127.0.0.1,localhost",
        )
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "llava_vr",
                "push",
                str(folder),
                "--repo-id",
                "me/tiny-llava-vr",
                "--private",
                "--commit-message",
                "Add tiny LLaVA-VR",
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        assert stub.repos["me/tiny-llava-vr"]["private"] is True
        committed = stub.committed_files("me/tiny-llava-vr")
        expected = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
        assert committed.keys() == expected.keys()
        assert all(committed[name] == data for name, data in expected.items() if name != "README.md")
        card = committed["README.md"].decode()  # the folder's card, completed with the repo id
        assert card == expected["README.md"].decode().replace('"OWNER/NAME"', '"me/tiny-llava-vr"')
        assert [c["summary"] for c in stub.commits] == ["Add tiny LLaVA-VR"]
        assert stub.validated and stub.validated[0] == card
        assert all(auth == "Bearer hf_dummy_token" for _, _, auth in stub.requests)
        assert not stub.unhandled
    assert "Uploaded:" in result.stdout
