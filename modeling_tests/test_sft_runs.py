"""Short runs train and stay quiet: a 1-step `llava-vr sft` run trains at its learning rate (not at the warmup's 0),
resuming a tied-head checkpoint reports no missing `lm_head.weight`, and the experiment's model carries its
tokenizer's special tokens (no PAD/BOS/EOS notice per run)."""

import pytest
import torch

pytest.importorskip("trl")

from llava_vr.training import sft_cli  # noqa: E402
from llava_vr.training.sft_options import parse_args  # noqa: E402


@pytest.mark.parametrize("steps, warmup", [(1, 0), (10, 0), (33, 0), (34, 1), (100, 3), (1000, 30)])
def test_a_warmup_ratio_rounds_down_so_short_runs_start_at_their_learning_rate(steps, warmup):
    training_args, _, _ = parse_args(["--tiny"])
    assert training_args.warmup_steps == 0.03
    assert training_args.get_warmup_steps(steps) == warmup


def test_a_one_step_smoke_run_trains(tmp_path):
    """Transformers rounds a 3 % warmup of a 1-step run up to one step, whose learning rate is 0: nothing trained."""
    args = parse_args(["--tiny", "--max_steps", "1", "--num_samples", "2", "--output_dir", str(tmp_path / "run")])
    before = {n: p.detach().clone() for n, p in sft_cli.tiny_model_and_processor()[0].named_parameters()}
    trainer = sft_cli.run(*args)
    logged = [entry["learning_rate"] for entry in trainer.state.log_history if "learning_rate" in entry]
    assert logged == [pytest.approx(2e-5)]
    projector = "model.multi_modal_projector.linear_1.weight"
    assert not torch.equal(trainer.model.get_parameter(projector).detach(), before[projector])


def test_resuming_a_tied_head_checkpoint_reports_no_missing_lm_head(tmp_path, capfd):
    """`save_pretrained` leaves the tied `lm_head.weight` out; Trainer's resume reported it missing. Re-tied, and the
    head equals the embeddings after resuming."""
    from llava_vr.testing_utils import build_tiny_tokenizer, tiny_config, tiny_model, tiny_processor, tiny_text_config

    tokenizer = build_tiny_tokenizer()
    text = {
        **tiny_text_config(vocab_size=len(tokenizer)),
        "tie_word_embeddings": True,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    config = tiny_config(text_config=text, image_token_index=tokenizer.convert_tokens_to_ids("<image>"))
    model, processor = tiny_model(config), tiny_processor(config, kind="onevision")
    assert model.all_tied_weights_keys == {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    base = tmp_path / "tied"
    model.save_pretrained(base)
    processor.save_pretrained(base)
    out = tmp_path / "run"
    common = ["--model", str(base), "--num_samples", "2", "--save_steps", "1", "--output_dir", str(out)]
    sft_cli.run(*parse_args([*common, "--max_steps", "1"]))
    capfd.readouterr()
    trainer = sft_cli.run(
        *parse_args([*common, "--max_steps", "2", "--resume_from_checkpoint", str(out / "checkpoint-1")])
    )
    assert trainer.state.global_step == 2
    output = "".join(capfd.readouterr())
    assert "missing keys" not in output and "unexpected keys" not in output, output
    head, embeddings = trainer.model.lm_head.weight, trainer.model.get_input_embeddings().weight
    assert head.data_ptr() == embeddings.data_ptr()


def test_experiment_model_carries_its_tokenizers_special_tokens(capfd):
    """The visual-forgetting model's config has the tokenizer's PAD/BOS/EOS, so Transformers' trainer aligns nothing
    (and prints no notice per run)."""
    from transformers.trainer_utils import align_special_tokens

    from llava_vr.experiments.visual_forgetting import PRESETS, build_tokenizer
    from llava_vr.experiments.visual_forgetting_task import build_model_and_processor

    tokenizer = build_tokenizer()
    model, processor = build_model_and_processor("pool_vr_sela", PRESETS["smoke"], tokenizer, seed=0)
    capfd.readouterr()
    align_special_tokens(model, processor)
    assert "PAD/BOS/EOS" not in "".join(capfd.readouterr())
    assert model.config.get_text_config().eos_token_id == tokenizer.eos_token_id
    assert model.config.get_text_config().pad_token_id == tokenizer.pad_token_id
