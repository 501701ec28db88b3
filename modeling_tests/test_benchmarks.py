"""The benchmarks run end to end on their smallest preset and write their files (no timing assertions); the
`llava-vr bench` command and the scripts in benchmarks/ reach them with the same options."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llava_vr.benchmarks import cli, model_benchmark, model_report, serving, vision_remember_benchmark
from llava_vr.benchmarks.model_variants import PRESETS, VARIANTS, VR_MAIN
from llava_vr.benchmarks.reporting import DEFAULT_OUTPUT_DIR
from llava_vr.registries_llava_vr import VR_INTERACTIONS

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"


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
            # per VR layer
            saliency = int(row["vr"] == "sela")
            assert calls == {"tower": 1, "saliency": saliency, "vr_build": 1, "vr": len(row["vr_layers"])}
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
    # one attention for all windows of all tiles: a fused SDPA, or the absorbed formulation's one softmax
    assert len(largest["cross_attention_calls"]) + largest["cross_attention_kernels"].get("_softmax", 0) == 1
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


def documented_benchmark_commands() -> list[str]:
    """Every benchmark command in the READMEs' bash blocks (continuation lines joined)."""
    commands = []
    for readme in (REPO / "README.md", BENCHMARKS / "README.md"):
        for block in re.findall(r"```bash\n(.*?)```", readme.read_text(), re.S):
            for line in block.replace("\\\n", " ").splitlines():
                if "benchmarks/benchmark_" in line or "llava-vr bench " in line:
                    commands.append(line.split("#")[0].strip())
    return commands


def test_benchmarks_write_outside_tracked_files_unless_told(tmp_path):
    """The default output folder and every README command's: git-ignored and holding no tracked file, so running the
    documented commands never rewrites the reference results (that takes an explicit --output-dir)."""
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    defaults = {model_benchmark.build_parser().parse_args([]).output_dir,
                vision_remember_benchmark.build_parser().parse_args([]).output_dir,
                serving.parse_args([]).output_dir}
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


@pytest.mark.parametrize("benchmark, argv, stem, table", [
    (model_benchmark, ["--variants", "mlp", "adaptive_avg_pool", "--crops", "1"], "llava_vr_tiny_cpu", "| variant |"),
    (vision_remember_benchmark, ["--interactions", "sela", "--tiles", "1", "--no-profile"], "vision_remember_tiny_cpu",
     "| D |"),
])
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


def test_efficiency_targets_are_printed_only_for_presets_at_real_widths(capsys):
    rows = [
        {"variant": variant, "crops": 1, "ttft_ms": ms, "x_pool": ms / 10, "mlp_speedup": 20 / ms, "breakdown_ms":
         {"vision": 1.0, "vr": 0.1, "vr_build": 0.1}, "tower_tiles": 2, "image_tokens": 5, "peak_extra_mib": 1.0}
        for variant, ms in (("mlp", 20.0), ("adaptive_avg_pool", 10.0), (VR_MAIN, 10.2))
    ]
    model_report.print_report(rows, None, targets=False)
    assert "target" not in capsys.readouterr().out.lower()
    model_report.print_report(rows, None, targets=True)
    printed = capsys.readouterr().out
    assert f"Targets for {VR_MAIN}, measured: crops=1: VR over pooling +2.0% (target <= +3%: met);" in printed
    assert "vs mlp 1.96x (target >= 1.6x: met)" in printed and "issue" not in printed.lower()
    assert {name for name, preset in PRESETS.items() if preset.get("targets")} == {
        "cpu-small", "qwen2-0.5b", "qwen2-1.5b", "qwen2-7b"}


def test_benchmark_prints_no_profiler_trace_lines(tmp_path):
    """Kineto's `USDT: ... profiler_start` lines (C++ stderr, one pair per profiled prefill) stay off."""
    script = ("from llava_vr.benchmarks import vision_remember_benchmark as b; b.run(['--preset', 'tiny', "
              f"'--device', 'cpu', '--interactions', 'sela', '--tiles', '1', '--output-dir', {str(tmp_path)!r}])")
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Checks:" in result.stdout
    assert "profiler_start" not in result.stdout + result.stderr and "USDT" not in result.stderr
