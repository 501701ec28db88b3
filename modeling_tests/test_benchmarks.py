"""The benchmarks run end to end on their smallest preset and write their files (no timing assertions); the
`llava-vr bench` command and the scripts in benchmarks/ reach them with the same options."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from llava_vr.benchmarks import cli, model_benchmark, vision_remember_benchmark
from llava_vr.benchmarks.model_variants import VARIANTS
from llava_vr.registries_llava_vr import VR_INTERACTIONS

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


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
        else:  # one VR-input build and one saliency per prefill, one call per VR layer
            assert calls == {"tower": 1, "saliency": 1, "vr_build": 1, "vr": len(row["vr_layers"])}
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
    sela = [r for r in written["results"] if r["interaction"] == "sela"]
    assert len({r["dispatched_ops"] for r in sela}) == 1  # op count independent of the tile count
    largest = max(sela, key=lambda r: r["tiles"])
    assert len(largest["cross_attention_calls"]) == 1  # one attention kernel for all windows of all tiles
    assert written["checks"]["lines"]


def test_bench_command_runs_a_benchmark_and_records_the_command(tmp_path):
    argv = ["--preset", "tiny", "--device", "cpu", "--tiles", "1", "--no-profile", "--output-dir", str(tmp_path)]
    assert cli.main(["vision-remember", *argv]) == 0
    payload, _ = read_outputs(tmp_path, "vision_remember_tiny_cpu")
    assert payload["meta"]["command"] == "llava-vr bench vision-remember " + " ".join(argv)


@pytest.mark.parametrize(
    "script, module",
    [("benchmark_llava_vr.py", model_benchmark), ("benchmark_vision_remember.py", vision_remember_benchmark)],
)
def test_benchmark_script_takes_the_options_of_its_bench_subcommand(script, module, tmp_path):
    result = subprocess.run(
        [sys.executable, str(BENCHMARKS / script), "--help"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    options = {o for action in module.build_parser()._actions for o in action.option_strings}
    assert options and all(option in result.stdout for option in options)
