# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
"""`llava-vr bench serving` end to end at tiny widths: both engines run on the same saved model and requests, and
the result files hold every engine, concurrency level and ratio."""

import json

import pytest

from llava_vr.benchmarks.serving_benchmark import run, vllm_threads_bind


def test_serving_benchmark_tiny_runs_both_engines_and_writes_results(tmp_path, capfd):
    argv = [
        "--preset",
        "tiny",
        "--concurrency",
        "1",
        "2",
        "--max-tokens",
        "3",
        "--image-size",
        "56",
        "112",
        "--rounds",
        "2",
        "--dtype",
        "float32",
        "--output-dir",
        str(tmp_path),
    ]
    returned = run(argv, prog="llava-vr bench serving")
    result = json.loads((tmp_path / "serving_tiny_cpu.json").read_text())
    assert returned["rows"] == result["rows"]
    assert result["command"].startswith("llava-vr bench serving --preset tiny")
    rows = {(r["variant"], r["engine"], r["concurrency"]): r for r in result["rows"]}
    variants = ["adaptive_avg_pool", "adaptive_avg_pool+sela"]
    assert set(rows) == {(v, e, c) for v in variants for e in ("sequential", "batched", "vllm") for c in (1, 2)}
    for (_, _, concurrency), row in rows.items():
        assert row["rounds"] == (2 if concurrency == 1 else 1)
        assert row["output_tokens_per_s"] > 0 and row["ttft_mean_s"] > 0
        if row["rounds"] == 1:  # medians over rounds need not multiply back exactly
            assert abs(row["output_tokens_per_s"] * row["wall_s"] - 3 * row["concurrency"]) < 1e-6
    assert len(result["ratios"]) == len(variants) * 2 * 2  # against sequential and batched, at C = 1 and 2
    assert result["vllm_threads_bind"] == {"1": vllm_threads_bind("threads", result["threads"], 1)}
    assert (tmp_path / "serving_tiny_cpu.csv").is_file() and (tmp_path / "serving_tiny_cpu.md").is_file()
    # vLLM's engine core runs in a process of its own, as `vllm serve` runs it: vLLM's CPU worker stands in for
    # `torch.set_num_threads` with a warning, which in the front end's process met every thread guard of vLLM's own
    # front end (36 lines here); what is left is the worker's start-up, two lines an engine (vLLM's own)
    printed = capfd.readouterr()
    assert (printed.out + printed.err).count("torch.set_num_threads") <= 2 * len(variants)


@pytest.mark.parametrize(
    "mode, threads, ranks, expected",
    [
        ("threads", 2, 1, "0,1"),  # the cores Transformers computes on, none reserved
        ("threads", 2, 2, "0|1"),  # one core per rank
        ("threads", 1, 2, "0|1"),  # at least one core per rank
        ("threads", 8, 2, "0,1,2,3|4,5,6,7"),
        ("threads", 3, 1, "0,1,2"),
        ("auto", 2, 1, "auto"),  # vLLM's own values pass through
        ("nobind", 2, 1, "nobind"),
        ("0-1", 2, 1, "0-1"),
    ],
)
def test_vllm_binding_pins_the_benchmark_threads_split_over_ranks(mode, threads, ranks, expected):
    assert vllm_threads_bind(mode, threads, ranks, cores=list(range(8))) == expected


def test_serving_benchmark_tensor_parallel_engine_has_its_own_rows(tmp_path):
    argv = ["--preset", "tiny", "--variants", "adaptive_avg_pool+sela", "--engines", "vllm"]
    argv += ["--tensor-parallel-sizes", "2", "--concurrency", "2", "--max-tokens", "3", "--image-size", "56", "112"]
    argv += ["--dtype", "float32", "--threads", "2", "--output-dir", str(tmp_path), "--tag", "tp"]
    result = run(argv)
    assert [(r["engine"], r["concurrency"]) for r in result["rows"]] == [("vllm tp2", 2)]
    assert result["rows"][0]["output_tokens_per_s"] > 0
    assert result["vllm_threads_bind"] == {2: vllm_threads_bind("threads", 2, 2)}
