#!/usr/bin/env bash
# The GPU checks in one go, from the repository root on a CUDA machine (budget: under 8 minutes on
# one H100; each part has its own time limit, so the whole is bounded):
#   1. pytest -m gpu: every CUDA test (compiled-vs-eager scoring, CUDA vs CPU scores, bf16 + fused Adam, ...)
#   2. the speed table on the full network: fp32 eager (published numerics), tf32, bf16, bf16 + compile;
#      training groups of 11 and scoring batches of 64
#   3. each MAL attention through SDPA vs the explicit formula, on the network's own (strided,
#      grad-requiring) inputs: the data for mal.SDPA_OFF_CPU
#   4. scoring JPEG files from disk, decoding included (the figure test.py users see)
#   5. with two GPUs visible: a 2-process torchrun training run on the demo data, stopped after one
#      epoch and resumed
#   6. Example1 on CUDA vs the CPU fp32 score of tests/test_parity.py (fp32 within 1e-3)
# One summary table at the end: each part, its status, its time, and its key figures.
# The python parts also run on a CPU in a reduced form (see each script's docstring).
set -uo pipefail
cd "$(dirname "$0")/.."
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU'" || exit 1
GPUS=$(python -c "import torch; print(torch.cuda.device_count())")
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
NAMES=() RESULTS=() TIMES=() FIGURES=()

# part NAME LIMIT_SECONDS COMMAND...: run it under a time limit, keep its output, record the outcome.
part() {
    local name=$1 limit=$2 start=$SECONDS rc
    shift 2
    echo "=== $name (limit ${limit} s)"
    timeout "$limit" "$@" 2>&1 | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    NAMES+=("$name")
    TIMES+=("$((SECONDS - start))")
    case $rc in
        0) RESULTS+=("ok") ;;
        124) RESULTS+=("TIMEOUT") ;;
        *) RESULTS+=("FAILED ($rc)") ;;
    esac
    local figure
    figure=$(grep -h '^SUMMARY' "$WORK/$name.log" | sed 's/^SUMMARY [^:]*: //' | tr '\n' ' ')
    [ -z "$figure" ] && figure=$(grep -E 'passed|failed|error' "$WORK/$name.log" | tail -n 1)
    FIGURES+=("$figure")
}

train_and_resume() {
    local run="$WORK/ddp-run"
    torchrun --standalone --nproc-per-node 2 train.py --demo --save_path "$run" --epochs 2 --stop-after-epoch 1 &&
        torchrun --standalone --nproc-per-node 2 train.py --demo --save_path "$run" --epochs 2 --resume auto &&
        python - "$run" <<'PY'
import json, sys
from pathlib import Path
import torch
run = Path(sys.argv[1])
ckpt = torch.load(run / "last.pth.tar", map_location="cpu", weights_only=False)
assert ckpt["epoch"] == 2 and len(ckpt["rng"]) == 2, (ckpt["epoch"], len(ckpt["rng"]))
print(f"SUMMARY torchrun: 2 processes, {ckpt['epoch']} epochs across a resume; best epoch {ckpt['best']['epoch']}")
PY
}

python -c "import torch; print(torch.cuda.get_device_name(), '| torch', torch.__version__, '| GPUs:', torch.cuda.device_count())" |
    tee "$WORK/device.txt"
part "pytest -m gpu" 60 python -m pytest -m gpu -q -rs -p no:cacheprovider
part "speed table" 180 python -m benchmarks.model_speed --device cuda --steps 10 --warmup 2
part "attention" 40 python -m benchmarks.attention_speed --device cuda --steps 10
part "score files" 60 python -m benchmarks.score_files_speed --device cuda --images 1088 --batch-size 64
if [ "$GPUS" -ge 2 ]; then
    export WORK
    export -f train_and_resume
    part "torchrun 2 GPUs" 90 bash -c train_and_resume
else
    NAMES+=("torchrun 2 GPUs") RESULTS+=("skipped") TIMES+=(0) FIGURES+=("needs two visible GPUs")
fi
part "Example1" 45 python -m benchmarks.example_on_device --device cuda

echo
echo "=== summary: $(cat "$WORK/device.txt")"
printf '%-17s %-12s %6s  %s\n' "part" "status" "s" "figures"
failed=0
for i in "${!NAMES[@]}"; do
    printf '%-17s %-12s %6s  %s\n' "${NAMES[$i]}" "${RESULTS[$i]}" "${TIMES[$i]}" "${FIGURES[$i]}"
    case ${RESULTS[$i]} in ok|skipped) ;; *) failed=1 ;; esac
done
exit $failed
