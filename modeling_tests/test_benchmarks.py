"""The benchmarks run end to end on their smallest preset and write their files (no timing assertions); the
`llava-vr bench` command reaches each with its options, every documented command parses, and the report code still
reads the reference results in benchmarks/reference_results/."""

import csv
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava_vr.benchmarks import (
    cli,
    decode_benchmark,
    model_benchmark,
    serving_benchmark,
    video_benchmark,
    vision_remember_benchmark,
)
from llava_vr.benchmarks.model_benchmark import TARGETS, comparison_table, counterpart_pairs, target_checks
from llava_vr.benchmarks.model_variants import (
    PRESETS,
    VARIANTS,
    VR_MAIN,
    VR_V1,
    WIDTH_COMPARISON,
    Variant,
    build_config,
    parse_variant,
)
from llava_vr.benchmarks.reporting import DEFAULT_OUTPUT_DIR
from llava_vr.registries_llava_vr import VR_INTERACTIONS
from llava_vr.testing_utils import image_inputs, tiny_model
from llava_vr.token_feature_attention_llava_vr import MAX_ABSORBED_BLOCKS

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
REFERENCE = BENCHMARKS / "reference_results" / "cpu"
MODULES = {
    "model": model_benchmark,
    "vision-remember": vision_remember_benchmark,
    "decode": decode_benchmark,
    "serving": serving_benchmark,
    "video": video_benchmark,
}


def read_outputs(directory: Path, stem: str):
    paths = {ext: directory / f"{stem}.{ext}" for ext in ("json", "csv", "png")}
    for path in paths.values():
        assert path.is_file() and path.stat().st_size > 0, path
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    payload = json.loads(paths["json"].read_text())
    with paths["csv"].open() as handle:
        rows = list(csv.DictReader(handle))
    return payload, rows


def test_llava_vr_benchmark_tiny_end_to_end(tmp_path):
    crops = [1, 4]
    returned = model_benchmark.run(
        ["--preset", "tiny", "--device", "cpu", "--crops", *map(str, crops), "--output-dir", str(tmp_path)]
    )
    payload, rows = read_outputs(tmp_path, "llava_vr_tiny_cpu")
    assert payload["meta"]["preset"] == "tiny" and returned["meta"]["preset"] == "tiny"
    expected = {(variant, c) for variant in VARIANTS for c in crops}
    assert {(r["variant"], r["crops"]) for r in payload["results"]} == expected
    assert {(r["variant"], int(r["crops"])) for r in rows} == expected
    by_case = {(r["variant"], r["crops"]): r for r in payload["results"]}
    for (variant, c), row in by_case.items():
        assert row["ttft_ms"] > 0 and row["decode_tok_s"] > 0 and row["flops"]["total"] > 0
        assert "peak_extra_mib" in row and row["image_tokens"] > 0
        assert row["tower_tiles"] == c + 1
        calls = row["calls_per_prefill"]
        assert calls["tower"] == 1
        if row["vr"] == "none":
            assert calls["vr"] == 0 and row["flops"]["vr"] == 0
        else:  # one VR-input build and (SELA: the only interaction with saliency) one saliency per prefill, one call
            # per VR layer, each in the formulation the variant asks for (auto: the one its cost estimate picked, the
            # same for every layer; `test_vision_remember_formulations.py` checks the pick itself)
            saliency = int(row["vr"] == "sela")
            layers = len(row["vr_layers"])
            formulation = "plain" if variant.endswith(":plain") else row["vr_formulation_used"]
            assert formulation in ("absorbed", "plain"), (variant, formulation)
            ran = {name: layers * (formulation == name) for name in ("absorbed", "plain")}
            assert calls == {"tower": 1, "saliency": saliency, "vr_build": 1, "vr": layers, **ran}
            assert row["vr_formulation_used"] == formulation
            assert row["flops"]["vr"] > 0
        if variant != "mlp":  # the pooled variants carry 1/4 of mlp's tokens per tile
            assert row["image_tokens"] < by_case["mlp", c]["image_tokens"]
        assert row["x_pool"] is not None and row["mlp_speedup"] is not None
    assert by_case["adaptive_avg_pool", 1]["x_pool"] == pytest.approx(1.0)


def test_vision_remember_benchmark_tiny_end_to_end(tmp_path):
    payload = vision_remember_benchmark.run(["--preset", "tiny", "--device", "cpu", "--output-dir", str(tmp_path)])
    written, rows = read_outputs(tmp_path, "vision_remember_tiny_cpu")
    assert written["meta"]["preset"] == payload["meta"]["preset"] == "tiny"
    interactions = {r["interaction"] for r in written["results"]}
    assert interactions == set(VR_INTERACTIONS) == {r["interaction"] for r in rows}
    for row in written["results"]:
        assert row["forward_ms"] > 0 and row["gflop"] > 0 and row["pct_of_matmul"] is not None
    expected = {(str(width), f) for width in (96, 32) for f in ("absorbed", "plain")}
    assert {(r["width"], r["formulation"]) for r in rows} == expected
    for width in (96, 32):
        for formulation in ("absorbed", "plain"):
            sela = [
                r
                for r in written["results"]
                if (r["interaction"], r["width"], r["formulation"]) == ("sela", width, formulation)
            ]
            # op count independent of the tile count (the absorbed formulation's in one block; its blocks are few)
            assert len({r.get("dispatched_ops_one_block", r["dispatched_ops"]) for r in sela}) == 1
            assert all(1 <= r["absorbed_blocks"] <= MAX_ABSORBED_BLOCKS for r in sela)
            largest = max(sela, key=lambda r: r["tiles"])
            # one attention for all windows of all tiles: a fused SDPA (plain), one softmax (absorbed)
            calls, kernels = largest["cross_attention_calls"], largest["cross_attention_kernels"]
            assert (len(calls), kernels.get("_softmax", 0)) == ((1, 0) if formulation == "plain" else (0, 1))
    # the absorbed formulation gives the plain one's output (same weights and inputs, fp32 rounding)
    assert all(r["plain_rel_diff"] < 1e-4 for r in written["results"] if r["formulation"] == "absorbed")
    assert written["checks"]["all_ok"] and written["checks"]["lines"]


def test_bench_command_runs_a_benchmark_and_records_the_command(tmp_path):
    argv = ["--preset", "tiny", "--device", "cpu", "--tiles", "1", "--no-profile", "--output-dir", str(tmp_path)]
    assert cli.main(["vision-remember", *argv]) == 0
    payload, _ = read_outputs(tmp_path, "vision_remember_tiny_cpu")
    assert payload["meta"]["command"] == "llava-vr bench vision-remember " + " ".join(argv)


@pytest.mark.parametrize("name", list(cli.BENCHMARKS))
def test_bench_command_help_lists_every_option_of_the_benchmark(name):
    assert MODULES[name].__name__ == cli.BENCHMARKS[name][0]
    result = subprocess.run(
        [sys.executable, "-m", "llava_vr", "bench", name, "--help"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith(f"usage: llava-vr bench {name} ")
    options = {o for action in MODULES[name].build_parser()._actions for o in action.option_strings}
    shared = {"--preset", "--dtype", "--repeats", "--threads", "--output-dir", "--tag"}  # `benchmark_parser`'s
    assert shared <= options and all(option in result.stdout for option in options)


def documented_benchmark_commands() -> list[str]:
    """Every benchmark command in the READMEs' bash blocks (continuation lines joined)."""
    commands = []
    for readme in (REPO / "README.md", BENCHMARKS / "README.md"):
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                assert "benchmarks/benchmark_" not in line, f"{readme.name}: a removed script: {line}"
                if "llava-vr bench " in line:
                    commands.append(line.split("#")[0].strip())
    return commands


def test_every_documented_bench_command_parses():
    """Each `llava-vr bench NAME ...` line of the READMEs' bash blocks names a benchmark and takes only its options."""
    commands = documented_benchmark_commands()
    assert {shlex.split(command)[2] for command in commands} == set(cli.BENCHMARKS)
    for command in commands:
        words = shlex.split(command)
        assert words[:2] == ["llava-vr", "bench"], command
        MODULES[words[2]].build_parser().parse_args(words[3:])  # a usage error exits


def test_prefill_and_decode_steps_use_the_installed_transformers_cache_names_without_a_deprecation_warning():
    """From Transformers 5.24 on, `past_key_values` warns ("deprecated. Use `cache`"); the decode timing passes and
    reads the cache by the name the installed release takes, and gives the tokens of `generate()`."""
    model = tiny_model(perturb_vr=True).eval()
    inputs, _ = image_inputs(model, [(60, 100)])
    records = []
    handler = logging.Handler(level=logging.WARNING)
    handler.emit = records.append
    transformers_logger = logging.getLogger("transformers")
    logging.Logger.warning_once.cache_clear()  # Transformers' warn-once cache: a warning given earlier counts too
    transformers_logger.addHandler(handler)
    try:
        with torch.inference_mode():
            token, cache = model_benchmark.prefill(model, inputs)
            last = model_benchmark.decode(model, token, cache, steps=3)
    finally:
        transformers_logger.removeHandler(handler)
    assert [r.getMessage() for r in records] == []
    expected = model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert token.tolist() == expected[:, -4].tolist() and last.tolist() == expected[:, -1].tolist()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_device_without_cuda_is_a_usage_error_not_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        model_benchmark.run(["--device", "cuda", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "--device cuda: this machine has no CUDA device" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_benchmarks_write_outside_tracked_files_unless_told(tmp_path):
    """The default output folder and every README command's: git-ignored and holding no tracked file, so running the
    documented commands never rewrites the reference results (that takes an explicit --output-dir)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    defaults = {module.build_parser().parse_args([]).output_dir for module in MODULES.values()}
    assert defaults == {DEFAULT_OUTPUT_DIR}
    commands = documented_benchmark_commands()
    assert len(commands) >= 5
    folders = {DEFAULT_OUTPUT_DIR}
    for command in commands:
        given = re.search(r"--output-dir\s+(\S+)", command)
        folders.add(Path(given.group(1)) if given else DEFAULT_OUTPUT_DIR)
    for folder in folders:
        tracked = subprocess.run(["git", "ls-files", "--", str(folder)], cwd=REPO, capture_output=True, text=True)
        assert tracked.returncode == 0 and not tracked.stdout, f"{folder} holds tracked files"
        ignored = subprocess.run(["git", "check-ignore", "-q", "--no-index", str(folder / "result.json")], cwd=REPO)
        assert ignored.returncode == 0, f"{folder} is not git-ignored"


@pytest.mark.parametrize(
    "benchmark, argv, stem, table",
    [
        (
            model_benchmark,
            ["--variants", "mlp", "adaptive_avg_pool", "--crops", "1"],
            "llava_vr_tiny_cpu",
            "| variant |",
        ),
        (
            vision_remember_benchmark,
            ["--interactions", "sela", "--tiles", "1", "--no-profile"],
            "vision_remember_tiny_cpu",
            "| D |",
        ),
    ],
)
def test_benchmark_without_matplotlib_says_so_up_front_and_still_prints_and_writes_its_results(
    benchmark, argv, stem, table, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` raises ImportError
    benchmark.run(["--preset", "tiny", "--device", "cpu", "--output-dir", str(tmp_path), *argv])
    printed = capsys.readouterr().out
    hint = 'pip install -e ".[bench]"'
    assert hint in printed and printed.index(hint) < printed.index(table) < printed.rindex(hint)
    assert (tmp_path / f"{stem}.json").is_file() and (tmp_path / f"{stem}.csv").is_file()
    assert not (tmp_path / f"{stem}.png").exists()


def estimate_row(
    variant: str, crops: int, ttft_ms: float, vr_ms: float = 0.0, vr_flops_pct: float = 0.0, **extra
) -> dict:
    """A result row with a full-depth estimate (ratios as `add_ratios` writes them, shares as `vr_shares`)."""
    spec = parse_variant(variant)
    estimate = {"ttft_ms": ttft_ms, "vr_ms": vr_ms, **extra}
    if vr_ms:
        estimate.update(
            vr_flops_pct=vr_flops_pct,
            vr_time_pct=100 * vr_ms / ttft_ms,
            vr_time_over_flop_share=100 * vr_ms / ttft_ms / vr_flops_pct,
        )
    return {
        "variant": spec.name,
        "projector": spec.projector,
        "vr": spec.vr,
        "crops": crops,
        "ttft_ms": ttft_ms / 4,
        "vr_ms": vr_ms,
        "flops": {"vr": vr_flops_pct, "total": 100.0},
        "full_depth_estimate": estimate,
    }


def target_rows() -> list[dict]:
    """Pooling alone 100 ms, mlp 170 ms; the default +9 % (VR 8 ms for 8 % of the FLOPs: share ratio 1.0 + the
    other 1 %), v1 +8.5 % (VR 8.5 ms for 6 % of the FLOPs: 1.3x), the plain twins and a narrow-width twin."""
    rows = [
        estimate_row("mlp", 1, 170.0),
        estimate_row("adaptive_avg_pool", 1, 100.0),
        estimate_row(VR_MAIN, 1, 109.0, 8.72, 8.0),
        estimate_row(VR_V1, 1, 108.5, 8.4, 6.0),
        estimate_row(f"{VR_MAIN}:plain", 1, 113.0, 13.0, 12.0),
        estimate_row(f"{VR_V1}:plain", 1, 112.0, 12.0, 10.0),
        estimate_row(f"{VR_MAIN}:w1024", 1, 103.0, 3.0, 3.0),
    ]
    for row in rows:
        estimate = row["full_depth_estimate"]
        estimate["x_pool"] = estimate["ttft_ms"] / 100.0
        estimate["mlp_speedup"] = 170.0 / estimate["ttft_ms"]
    return rows


def test_variant_names_parse_into_one_scheme():
    assert parse_variant(VR_MAIN) == Variant("adaptive_avg_pool", "sela")
    assert parse_variant("mlp") == Variant("mlp") and parse_variant("mlp").vr == "none"
    spec = parse_variant("adaptive_avg_pool+sela:plain:v1:w1024")  # modifiers in any order
    assert spec == Variant("adaptive_avg_pool", "sela", width=1024, self_attention=False, formulation="plain")
    assert spec.name == "adaptive_avg_pool+sela:w1024:v1:plain"  # the canonical order
    assert parse_variant("pixel_shuffle+deformable:absorbed").formulation == "absorbed"
    for name, variant in VARIANTS.items():  # the named variants (old names included) are canonical
        assert parse_variant(name) == variant and variant.name == name
    assert {
        "mlp",
        "adaptive_avg_pool",
        "adaptive_avg_pool+global",
        "adaptive_avg_pool+deformable",
        "pixel_shuffle+sela",
        "saliency_top_k",
        *WIDTH_COMPARISON,
    } <= set(VARIANTS)
    for bad, message in [
        ("conv", "unknown projector"),
        ("mlp+attention", "unknown VR interaction"),
        ("mlp:plain", "modifiers need Vision Remember"),
        (f"{VR_MAIN}:fast", "unknown modifier"),
        (f"{VR_MAIN}:w0", "unknown modifier"),
        (f"{VR_MAIN}:plain:absorbed", "given twice"),
        ("saliency_top_k+sela", "has no Vision Remember partner"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_variant(bad)
    args = model_benchmark.build_parser().parse_args(["--variants", "adaptive_avg_pool+sela:v1:w1024", "all"])
    assert args.variants == ["adaptive_avg_pool+sela:w1024:v1", "all"]


@pytest.mark.parametrize("preset, default_width", [("tiny", 3 * 32), ("cpu-small", 3 * 1024)])
def test_comparison_variants_build_the_intended_configs(preset, default_width):
    expected = {  # variant -> (VR layers, width, token self-attention, formulation)
        "mlp": ([], default_width, True, "auto"),
        "adaptive_avg_pool": ([], default_width, True, "auto"),
        VR_MAIN: ([1, 4], default_width, True, "auto"),
        f"{VR_MAIN}:plain": ([1, 4], default_width, True, "plain"),
        VR_V1: ([1, 4], default_width, False, "auto"),
        f"{VR_V1}:plain": ([1, 4], default_width, False, "plain"),
        f"{VR_MAIN}:w1024": ([1, 4], 1024, True, "auto"),
        f"{VR_MAIN}:w1024:v1": ([1, 4], 1024, False, "auto"),
    }
    assert set(expected) == set(WIDTH_COMPARISON) and set(WIDTH_COMPARISON) <= set(PRESETS["cpu-small"]["variants"])
    for variant, settings in expected.items():
        config = build_config(PRESETS[preset], variant, "sdpa")
        assert config.projector_type == parse_variant(variant).projector
        assert (
            config.vision_remember_layers,
            config.vision_remember_hidden_size,
            config.vision_remember_self_attention,
            config.vision_remember_formulation,
        ) == settings
        assert config.vision_remember_interaction == "sela"


def test_targets_are_computed_from_the_rows():
    checks = {(c["variant"], c["target"]): c for c in target_checks(target_rows(), estimate=True)}
    assert set(checks) == {
        (VR_MAIN, "vr_over_pool_pct"),
        (VR_MAIN, "time_over_flop_share"),
        (VR_MAIN, "mlp_speedup"),
        (VR_V1, "vr_over_pool_pct"),
        (VR_V1, "time_over_flop_share"),
    }
    over = checks[VR_MAIN, "vr_over_pool_pct"]
    assert over["value"] == pytest.approx(9.0) and over["met"]
    assert over["limit"] == TARGETS["max_vr_over_pool_pct"][VR_MAIN] == 12.0
    assert checks[VR_V1, "vr_over_pool_pct"]["value"] == pytest.approx(8.5)
    assert not checks[VR_V1, "vr_over_pool_pct"]["met"]  # the v1 limit is 8 %
    share = checks[VR_MAIN, "time_over_flop_share"]
    assert share["value"] == pytest.approx(8.72 / 109.0 * 100 / 8.0) and share["met"]  # 1.0
    assert not checks[VR_V1, "time_over_flop_share"]["met"]  # 8.4 / 108.5 / 6 % = 1.29 > 1.10
    assert checks[VR_V1, "time_over_flop_share"]["limit"] == TARGETS["max_time_over_flop_share"][VR_V1] == 1.10
    speedup = checks[VR_MAIN, "mlp_speedup"]
    assert speedup["value"] == pytest.approx(170 / 109) and not speedup["met"]
    assert target_checks(target_rows(), estimate=False) == []  # the measured rows carry no ratios here


def test_formulation_and_width_comparisons_pair_each_variant_with_its_twin():
    rows = target_rows()
    pairs = {(a["variant"], b["variant"]) for a, b in counterpart_pairs(rows, "formulation")}
    assert pairs == {(VR_MAIN, f"{VR_MAIN}:plain"), (VR_V1, f"{VR_V1}:plain")}
    pairs = {(a["variant"], b["variant"]) for a, b in counterpart_pairs(rows, "width")}
    assert pairs == {(f"{VR_MAIN}:w1024", VR_MAIN)}
    table = comparison_table(rows, "formulation", estimate=True)
    # default against plain: TTFT 109 / 113 at full depth, VR time 8.72 / 13, VR over pooling +9.0 and +13.0 %
    assert f"| {VR_MAIN} | {VR_MAIN}:plain | 1 | - | 0.965 | 0.67 | 0.67 | +9.0 | +13.0 | 8.00 | 12.00 |" in table


def test_efficiency_targets_are_printed_only_for_presets_at_real_widths(capsys):
    rows = target_rows()
    for row in rows:
        row.update(tower_tiles=2, image_tokens=5, peak_extra_mib=1.0, breakdown_ms={"vision": 1.0})
    model_benchmark.print_report(rows, {"vision": 24, "text": 24}, targets=False)
    assert "target" not in capsys.readouterr().out.lower()
    model_benchmark.print_report(rows, {"vision": 24, "text": 24}, targets=True)
    printed = capsys.readouterr().out
    assert f"{VR_MAIN} crops=1: VR over pooling +9.0% (target <= +12%: met); " in printed
    assert "VR time share / FLOP share 1.00 (target <= 1.1: met)" in printed
    assert "vs mlp 1.56x (target >= 1.6x: missed)" in printed
    assert f"{VR_V1} crops=1: VR over pooling +8.5% (target <= +8%: missed)" in printed
    assert "issue" not in printed.lower()
    assert {name for name, preset in PRESETS.items() if preset.get("targets")} == {
        "cpu-small",
        "qwen2-0.5b",
        "qwen2-1.5b",
        "qwen2-7b",
    }


def test_flop_count_only_run_estimates_the_full_depth_flops_exactly(tmp_path):
    """`--repeats 0` times nothing; a cut tower's full-depth FLOP estimate equals the FLOPs counted at full depth."""
    argv = [
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--crops",
        "4",
        "--repeats",
        "0",
        "--variants",
        "mlp",
        "adaptive_avg_pool",
        VR_MAIN,
        "--output-dir",
        str(tmp_path),
    ]
    full = {r["variant"]: r for r in model_benchmark.run(argv)["results"]}
    cut = {r["variant"]: r for r in model_benchmark.run([*argv, "--vision-layers", "2", "--tag", "cut"])["results"]}
    for variant, row in cut.items():
        assert "ttft_ms" not in row and "ttft_ms" not in full[variant]
        estimate = row["full_depth_estimate"]
        assert estimate["ttft_ms"] is None
        assert estimate["gflops"] * 1e9 == pytest.approx(full[variant]["flops"]["total"], rel=1e-9)
    assert cut[VR_MAIN]["full_depth_estimate"]["vr_flops_pct"] == pytest.approx(full[VR_MAIN]["vr_flops_pct"])
    assert cut["mlp"]["full_depth_estimate"]["gflops_mlp_speedup"] == pytest.approx(1.0)


def test_benchmark_prints_no_profiler_trace_lines(tmp_path):
    """Kineto's `USDT: ... profiler_start` lines (C++ stderr, one pair per profiled prefill) stay off."""
    script = (
        "from llava_vr.benchmarks import vision_remember_benchmark as b; b.run(['--preset', 'tiny', "
        f"'--device', 'cpu', '--interactions', 'sela', '--tiles', '1', '--output-dir', {str(tmp_path)!r}])"
    )
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Checks:" in result.stdout
    assert "profiler_start" not in result.stdout + result.stderr and "USDT" not in result.stderr


def test_reference_results_still_read_by_the_report_and_plot_code(tmp_path, capsys):
    """The tracked reference JSONs (written by earlier versions) go through today's tables, checks and plots."""
    model = json.loads((REFERENCE / "llava_vr_cpu-small_cpu.json").read_text())
    model_benchmark.print_report(model["results"], model["meta"]["reference_depth"], targets=True)
    model_benchmark.plot(model["results"], tmp_path / "model.png", "reference")
    flops = json.loads((REFERENCE / "llava_vr_qwen2-1.5b-flops_cpu.json").read_text())
    model_benchmark.print_report(flops["results"], flops["meta"]["reference_depth"], targets=True)
    remember = json.loads((REFERENCE / "vision_remember_real_cpu.json").read_text())
    assert vision_remember_benchmark.structural_checks(remember["results"]) == remember["checks"]
    vision_remember_benchmark.print_report(remember["results"], remember["checks"], remember["skipped"])
    vision_remember_benchmark.plot(remember["results"], tmp_path / "remember.png", remember["meta"])
    serving = json.loads((REFERENCE / "serving_cpu-small_cpu.json").read_text())
    # written before the ratios named their engine (one vLLM engine then)
    assert [{k: v for k, v in r.items() if k != "engine"} for r in serving_benchmark.add_ratios(serving["rows"])] == (
        serving["ratios"]
    )
    assert (
        serving_benchmark.tables(serving["rows"], serving["ratios"]) + "\n"
        == (REFERENCE / "serving_cpu-small_cpu.md").read_text()
    )
    serving_benchmark.plot(serving["rows"], tmp_path / "serving.png")
    printed = capsys.readouterr().out
    for table in (
        "| variant | crops (tiles) |",
        "| variant | crops | est. TTFT ms |",
        "| D | d | interaction |",
        "Targets (full-depth estimate;",
        "Checks:",
    ):
        assert table in printed
    assert all((tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG" for name in ("model", "remember", "serving"))
