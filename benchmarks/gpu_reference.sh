#!/usr/bin/env bash
# Copyright 2026 The LLaVA-VR authors. Licensed under the Apache License, Version 2.0.
#
# The GPU reference run (issue 24), one script: on one CUDA GPU,
#   1. time to first token at full depth, Qwen2-0.5B and Qwen2-1.5B (+ CLIP-L/14-336), random weights, bf16:
#      mlp / pooling / pooling + VR (v2: `adaptive_avg_pool+sela`, v1: `...:v1`, no token self-attention),
#      1 / 4 / 9 AnyRes crops, with sdpa and (where `flash_attn` imports) flash-attention 2 (`llava-vr bench model`);
#   2. vLLM against Transformers at 1 / 16 / 64 concurrent requests, pooling and pooling + VR, Qwen2-0.5B width and
#      depth (`llava-vr bench serving`, 3 rounds per level, medians).
# Writes every result (.json / .csv / .md / .png, and each command's printed tables as .txt) under
# benchmarks/reference_results/gpu/ and prints the tables at the end.
#
# Needs: the serving install with the benchmark extra on a CUDA machine, e.g. `pip install -e ".[serve,bench]"`
# (vLLM's GPU build; `pip install flash-attn` for the flash-attention rows). No download: weights are random, the
# tokenizer is the package's offline one.
#
#   benchmarks/gpu_reference.sh                       # the whole run (~15-25 min on one H100, mostly vLLM starts)
#   SMOKE=1 benchmarks/gpu_reference.sh               # seconds-scale check of the script itself (tiny preset; runs
#                                                     # on a CPU too, with DEVICE=cpu; writes to OUT, a temp dir)
# Settings (environment): OUT, DEVICE (cuda), PRESETS, CROPS, CONCURRENCY, MAX_TOKENS, ROUNDS, SERVING_PRESET.
set -euo pipefail

SMOKE=${SMOKE:-0}
if [[ "$SMOKE" == 1 ]]; then
    OUT=${OUT:-$(mktemp -d)}
    DEVICE=${DEVICE:-cpu}
    PRESETS=${PRESETS:-tiny}
    CROPS=${CROPS:-1 4}
    CONCURRENCY=${CONCURRENCY:-1 2}
    MAX_TOKENS=${MAX_TOKENS:-3}
    ROUNDS=${ROUNDS:-1}
    SERVING_PRESET=${SERVING_PRESET:-tiny}
    DTYPE=${DTYPE:-float32}
    MODEL_EXTRA=(--repeats 1)
    SERVING_EXTRA=(--image-size 56 112 --threads 2)
else
    OUT=${OUT:-benchmarks/reference_results/gpu}
    DEVICE=${DEVICE:-cuda}
    PRESETS=${PRESETS:-qwen2-0.5b qwen2-1.5b}
    CROPS=${CROPS:-1 4 9}
    CONCURRENCY=${CONCURRENCY:-1 16 64}
    MAX_TOKENS=${MAX_TOKENS:-128}
    ROUNDS=${ROUNDS:-3}
    SERVING_PRESET=${SERVING_PRESET:-qwen2-0.5b}
    DTYPE=${DTYPE:-bfloat16}
    MODEL_EXTRA=()
    SERVING_EXTRA=()
fi
VARIANTS=(mlp adaptive_avg_pool adaptive_avg_pool+sela adaptive_avg_pool+sela:v1)
ATTNS=(sdpa)
if [[ "$DEVICE" == cuda* ]] && python -c "import flash_attn" 2>/dev/null; then
    ATTNS+=(flash_attention_2)
fi
mkdir -p "$OUT"
echo "GPU reference run -> $OUT (device $DEVICE, presets $PRESETS, attention ${ATTNS[*]})"
python -c "import torch; print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu')"

stems=()
for preset in $PRESETS; do
    for attn in "${ATTNS[@]}"; do
        stem="model_${preset}_${DEVICE%%:*}_${attn}"
        stems+=("$stem")
        llava-vr bench model --preset "$preset" --device "$DEVICE" --dtype "$DTYPE" --attn "$attn" \
            --variants "${VARIANTS[@]}" --crops $CROPS "${MODEL_EXTRA[@]}" --output-dir "$OUT" --tag "$stem" \
            | tee "$OUT/$stem.txt"
    done
done

stem="serving_${SERVING_PRESET}_${DEVICE%%:*}"
stems+=("$stem")
llava-vr bench serving --preset "$SERVING_PRESET" --device "$DEVICE" --dtype "$DTYPE" --concurrency $CONCURRENCY \
    --max-tokens "$MAX_TOKENS" --rounds "$ROUNDS" --concurrent-rounds "$ROUNDS" "${SERVING_EXTRA[@]}" \
    --output-dir "$OUT" --tag "$stem" | tee "$OUT/$stem.txt"

echo
echo "================ GPU reference tables ($OUT) ================"
for stem in "${stems[@]}"; do
    echo
    echo "## $stem"
    if [[ -f "$OUT/$stem.md" ]]; then cat "$OUT/$stem.md"; else grep '^|' "$OUT/$stem.txt" || true; fi
done
