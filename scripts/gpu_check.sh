#!/usr/bin/env bash
# The GPU checks: run wherever a CUDA GPU is lent, from the repository root, in under five minutes.
#
#   scripts/gpu_check.sh            # uses .venv/bin/python when there is one, else python
#   PYTHON=python3 scripts/gpu_check.sh
#
# 1. the GPU-relevant tests: device/dtype resolution, fp16/bf16 steering on the GPU (zero intensity
#    bit-identical), SAE training on the GPU, and the distributed tests (gloo; NCCL when 2+ GPUs:
#    the same torchrun command with --device cuda);
# 2. the overhead benchmarks on the GPU (models loaded there through POLYSTEER_DEVICE), short runs,
#    in float32 and bfloat16; each prints its *_ratio figures.
# Paste the printed table and the card's name (first line) into docs/benchmarks.md.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
export HF_HUB_OFFLINE=1 MPLBACKEND=Agg
LOG="${GPU_CHECK_LOG:-gpu_check.log}"
: > "$LOG"

"$PY" - <<'PY' | tee -a "$LOG"
import torch
if not torch.cuda.is_available():
    raise SystemExit("gpu_check: torch sees no CUDA GPU here; run this on a GPU machine")
p = torch.cuda.get_device_properties(0)
print(f"card: {p.name}, {p.total_memory / 2**30:.0f} GiB, {torch.cuda.device_count()} GPU(s), "
      f"torch {torch.__version__}, CUDA {torch.version.cuda}, bf16 {torch.cuda.is_bf16_supported()}")
PY
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 2

status=0
echo "== tests" | tee -a "$LOG"
timeout 150 "$PY" -m pytest -q -x tests/core/test_device.py tests/core/test_distributed.py \
    tests/core/test_runtime.py 2>&1 | tail -5 | tee -a "$LOG" || status=1

bench() {  # NAME TIMEOUT ARGS...: one benchmark, its JSON figures on one line
    local name=$1 limit=$2; shift 2
    local out
    if out=$(timeout "$limit" "$PY" "benchmarks/$name" "$@" --json 2>/dev/null); then
        echo "$name ${POLYSTEER_DTYPE:-float32} $(echo "$out" | tail -1)" | tee -a "$LOG"
    else
        echo "$name ${POLYSTEER_DTYPE:-float32} FAILED or timed out (${limit}s)" | tee -a "$LOG"
        status=1
    fi
}

echo "== overhead benchmarks on cuda (ratios: steered / plain, 1.0 = free)" | tee -a "$LOG"
export POLYSTEER_DEVICE=cuda
for dtype in float32 bfloat16; do
    export POLYSTEER_DTYPE=$dtype
    bench text_overhead.py 60 --tokens 32 --batch 1 8 --repeats 2
    bench image_overhead.py 50 --steps 10 --batch 1 8 --repeats 3
done
unset POLYSTEER_DTYPE
bench voice_overhead.py 40 --batch 1 4 --repeats 2

echo "== ratios" | tee -a "$LOG"
"$PY" - "$LOG" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    parts = line.split(" ", 2)
    if len(parts) == 3 and parts[0].endswith(".py") and parts[2].lstrip().startswith("{"):
        figures = json.loads(parts[2])
        ratios = {k: v for k, v in figures.items() if k.endswith("_ratio")}
        print(f"{parts[0]:<20} {parts[1]:<9} " + "  ".join(f"{k}={v:.3f}" for k, v in ratios.items()))
PY
exit $status
