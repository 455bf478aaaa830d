#!/usr/bin/env bash
# One-call check of the CUDA RoI ops and the model on a GPU machine, from a bare checkout.
#
#   bash tools/gpu_check.sh            # in the repository root; results in $OUT
#
# Steps, each time-boxed, logged and summarised; a failing step is recorded and the next one runs:
#   wheels      install the carried wheels in .whl/ (make gpu-wheels: hydra-core, omegaconf, antlr4,
#               pycocotools, dockerfile) into a temporary folder when the Python lacks them
#   build       the extension for sm_90 (TORCH_CUDA_ARCH_LIST) with all cores, in place
#   pytest      pytest -m cuda (every GPU test: the CUDA twins of the emulated tests and the GPU-only ones)
#   sync        tools/check_roi_sync.py: the model's training step with torch.cuda.set_sync_debug_mode
#               ("error") around the RoI poolers' forward and backward (no host synchronisation)
#   memcheck    compute-sanitizer memcheck on the bad-input and multi-level GPU tests
#   racecheck   compute-sanitizer racecheck on small cases of the deterministic RoI Align backward
#   bench_ops   tools/bench_ops.py --device cuda --json
#   bench_model tools/bench_model.py --device cuda, fp32 and bf16 autocast, ours vs torchvision
#   train       a short GPU training run of the demo (synthetic scenes made on the spot), its AP
# Without a CUDA GPU (or without compute-sanitizer) the CUDA steps are skipped and say so; the
# extension is then neither rebuilt nor touched.
#
# Outputs in $OUT (default outputs/gpu_check/<date-time>), at most 8 files: summary.txt,
# summary.json, gpu_check.log (every step's log, in order), pytest_cuda.xml, bench_ops.json,
# bench_model_fp32.json, bench_model_bf16.json, train_metrics.json.
# Knobs: GPU_CHECK_BUDGET (seconds for all steps, default 480), GPU_CHECK_STEPS (the steps to run,
# e.g. "build pytest memcheck"; default all; the wheels are always installed), GPU_CHECK_TRAIN_ITERS
# (default 600), PYTHON (default .venv/bin/python if present, else python3), MAX_JOBS (default: all
# cores).
set -u
cd "$(dirname "$0")/.."
REPO=$(pwd)
OUT=${OUT:-$REPO/outputs/gpu_check/$(date +%Y-%m-%d_%H-%M-%S)}
mkdir -p "$OUT"
WORK=$(mktemp -d /tmp/gpu_check.XXXXXX)  # wheels, logs, the synthetic dataset, the training run
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/logs"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$REPO/.venv/bin/python" ]; then PYTHON=$REPO/.venv/bin/python; else PYTHON=python3; fi
fi
BUDGET=${GPU_CHECK_BUDGET:-480}
TRAIN_ITERS=${GPU_CHECK_TRAIN_ITERS:-600}
JOBS=${MAX_JOBS:-$(nproc)}
START=$SECONDS
STEPS=()
export PYTHONUNBUFFERED=1

# record NAME STATUS SECONDS NOTE: one line of the summary.
record() {
    STEPS+=("$1|$2|$3|$4")
    printf '%-12s %-8s %5ss  %s\n' "$1" "$2" "$3" "$4"
}

# wanted NAME: whether GPU_CHECK_STEPS (empty: all) names the step or its prefix (bench_model
# names bench_model_fp32 and bench_model_bf16).
wanted() {
    local word
    [ -z "${GPU_CHECK_STEPS:-}" ] && return 0
    for word in $GPU_CHECK_STEPS; do
        case $1 in "$word" | "${word}"_*) return 0 ;; esac
    done
    return 1
}

# step NAME LIMIT_SECONDS CMD...: runs CMD with its output in STEP_LOG, at most LIMIT seconds
# and never past the overall budget. Sets STEP_RC, STEP_STATUS (PASS, FAIL, TIMEOUT, SKIP),
# STEP_SECONDS and STEP_NOTE for the caller's record line.
STEP_INDEX=0
step() {
    local name=$1 limit=$2
    shift 2
    local left=$((BUDGET - (SECONDS - START)))
    if ! wanted "$name"; then
        STEP_RC=125 STEP_STATUS=SKIP STEP_SECONDS=0 STEP_NOTE="not in GPU_CHECK_STEPS" STEP_LOG=/dev/null
        return
    fi
    if [ "$left" -lt 15 ]; then
        STEP_RC=125 STEP_STATUS=SKIP STEP_SECONDS=0 STEP_NOTE="the time budget (${BUDGET}s) is spent"
        STEP_LOG=/dev/null
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    local t0=$SECONDS
    STEP_INDEX=$((STEP_INDEX + 1))
    STEP_LOG=$WORK/logs/$(printf %02d "$STEP_INDEX")_$name.log
    echo "\$ $*" > "$STEP_LOG"
    timeout --kill-after=15 "$limit" "$@" >> "$STEP_LOG" 2>&1
    STEP_RC=$?
    STEP_SECONDS=$((SECONDS - t0))
    if [ "$STEP_RC" -eq 124 ] || [ "$STEP_RC" -eq 137 ]; then
        STEP_STATUS=TIMEOUT
        STEP_NOTE="stopped after ${limit}s"
    elif [ "$STEP_RC" -eq 0 ]; then
        STEP_STATUS=PASS
        STEP_NOTE=""
    else
        STEP_STATUS=FAIL
        STEP_NOTE="exit code $STEP_RC"
    fi
}

# The last line of the step's log matching a pattern (for the summary notes).
last_match() { grep -E "$1" "$STEP_LOG" 2>/dev/null | tail -n 1 | sed 's/^[= ]*//' | cut -c1-150; }

# The non-empty arguments joined by "; ".
join_notes() {
    local out="" part
    for part in "$@"; do [ -n "$part" ] && out=${out:+$out; }$part; done
    echo "$out"
}

finish() {
    for log in "$WORK"/logs/*.log; do
        [ -e "$log" ] || continue
        printf '\n===== %s =====\n' "$(basename "$log" .log | cut -d_ -f2-)"
        cat "$log"
    done > "$OUT/gpu_check.log"
    {
        echo "gpu_check: $(date -u +%Y-%m-%dT%H:%M:%SZ), $((SECONDS - START)) s, budget ${BUDGET} s"
        echo "python: $PYTHON; $CUDA_LINE"
        printf '%-12s %-8s %6s  %s\n' step status time note
        for entry in "${STEPS[@]}"; do
            IFS='|' read -r name status secs note <<< "$entry"
            printf '%-12s %-8s %5ss  %s\n' "$name" "$status" "$secs" "$note"
        done
    } > "$OUT/summary.txt"
    {
        printf '{"cuda": "%s", "seconds": %d, "steps": [' "${CUDA_LINE//\"/\\\"}" "$((SECONDS - START))"
        local sep=""
        for entry in "${STEPS[@]}"; do
            IFS='|' read -r name status secs note <<< "$entry"
            note=${note//\\/\\\\}
            printf '%s\n  {"step": "%s", "status": "%s", "seconds": %s, "note": "%s"}' \
                "$sep" "$name" "$status" "$secs" "${note//\"/\\\"}"
            sep=","
        done
        printf '\n]}\n'
    } > "$OUT/summary.json"
    echo
    cat "$OUT/summary.txt"
    echo "outputs: $OUT"
}

echo "gpu_check: outputs in $OUT, work folder $WORK, budget ${BUDGET}s"

# 1. Wheels: only where the Python lacks the packages (a bare GPU image has torch but not these).
if "$PYTHON" -c "import hydra, omegaconf, pycocotools, dockerfile" 2>/dev/null; then
    record wheels SKIP 0 "hydra-core, omegaconf, pycocotools and dockerfile are already installed"
elif ls "$REPO"/.whl/*.whl > /dev/null 2>&1; then
    step wheels 120 "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$REPO"/.whl/*.whl
    record wheels "$STEP_STATUS" "$STEP_SECONDS" "$STEP_NOTE"
    export PYTHONPATH=$WORK/site
else
    record wheels FAIL 0 "hydra-core/omegaconf/pycocotools/dockerfile missing and no wheels in .whl/ (make gpu-wheels)"
fi
export PYTHONPATH=$REPO${PYTHONPATH:+:$PYTHONPATH}

CUDA_LINE=$("$PYTHON" -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name() \
    if torch.cuda.is_available() else 'no CUDA GPU visible')" 2>&1 | tail -n 1)
echo "python: $PYTHON; $CUDA_LINE"
HAVE_CUDA=0
"$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null && HAVE_CUDA=1
SANITIZER=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer \
    /usr/local/cuda/compute-sanitizer/compute-sanitizer 2>/dev/null | head -n 1)
NO_GPU="skipped: no CUDA GPU visible"

# 2. Build for Hopper (sm_90), in place, then check that the CUDA kernels are registered.
if [ "$HAVE_CUDA" -eq 1 ]; then
    step build 300 env FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS="$JOBS" \
        bash -c "'$PYTHON' setup.py -q build_ext --inplace && '$PYTHON' -c \"import torch, maskrcnn.ops; \
assert torch._C._dispatch_has_kernel_for_dispatch_key('maskrcnn::roi_align', 'CUDA'), 'no CUDA kernel'; \
print('CUDA kernels registered')\""
    record build "$STEP_STATUS" "$STEP_SECONDS" "$STEP_NOTE"
else
    record build SKIP 0 "$NO_GPU (the existing extension is used as it is)"
fi

# 3. Every GPU test. Without a GPU this still collects them and reports them skipped.
step pytest 180 "$PYTHON" -m pytest -m cuda -q -rfEs -p no:cacheprovider --junitxml="$OUT/pytest_cuda.xml"
if [ "$HAVE_CUDA" -ne 1 ] && [ "$STEP_STATUS" = PASS ]; then STEP_STATUS=SKIP STEP_NOTE="$NO_GPU"; fi
record pytest "$STEP_STATUS" "$STEP_SECONDS" \
    "$(join_notes "$(last_match '[0-9]+ (passed|failed|skipped|error)')" "$STEP_NOTE")"

# 3b. The RoI layer inside the model's training step makes no host synchronisation.
if [ "$HAVE_CUDA" -eq 1 ]; then
    step sync 90 "$PYTHON" tools/check_roi_sync.py
    record sync "$STEP_STATUS" "$STEP_SECONDS" "$(join_notes "$(last_match 'synchronisation')" "$STEP_NOTE")"
else
    record sync SKIP 0 "$NO_GPU"
fi

# 4. compute-sanitizer (without PyTorch's caching allocator, so that an out-of-bounds access
# leaves its own allocation instead of landing in a neighbour's block of the same pool).
sanitize() {
    local name=$1 tool=$2 limit=$3
    shift 3
    if [ "$HAVE_CUDA" -ne 1 ]; then record "$name" SKIP 0 "$NO_GPU"; return; fi
    if [ -z "$SANITIZER" ]; then record "$name" SKIP 0 "compute-sanitizer not found"; return; fi
    step "$name" "$limit" env PYTORCH_NO_CUDA_MEMORY_CACHING=1 "$SANITIZER" --tool "$tool" --print-limit 50 \
        "$PYTHON" -m pytest -m cuda -q -p no:cacheprovider "$@"
    local summary errors
    summary=$(last_match 'ERROR SUMMARY')
    errors=$(echo "$summary" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
    if [ "$STEP_STATUS" = PASS ] && [ "${errors:-x}" != 0 ]; then STEP_STATUS=FAIL; fi
    record "$name" "$STEP_STATUS" "$STEP_SECONDS" \
        "$(join_notes "${summary:-no sanitizer summary}" "$(last_match '[0-9]+ (passed|failed)')" "$STEP_NOTE")"
}
# CUDA-graph capture needs the caching allocator, so the graph test is left out here.
sanitize memcheck memcheck 120 tests/ops/test_cuda_roi_align.py tests/ops/test_cuda_roi_pool.py \
    tests/ops/test_cuda_multilevel.py -k "(bad or multilevel) and not graph"
# The deterministic backward's shared-memory gather: the many-RoIs-per-tile case and three float32
# cases of the bitwise test (ids dtype16 / 19 / 22: NCHW avg sampling 2, NCHW max adaptive,
# channels_last max sampling 2; the ids count the parameter product of DTYPES x layout x mode x sampling).
sanitize racecheck racecheck 90 tests/ops/test_cuda_roi_align.py \
    -k "shared_list or (bitwise and (dtype16 or dtype19 or dtype22))"

# 5. Benchmarks against torchvision on the GPU.
if [ "$HAVE_CUDA" -eq 1 ]; then
    step bench_ops 120 "$PYTHON" tools/bench_ops.py --device cuda --json "$OUT/bench_ops.json"
    record bench_ops "$STEP_STATUS" "$STEP_SECONDS" "$STEP_NOTE"
    for amp in fp32 bf16; do
        flag=none
        [ "$amp" = bf16 ] && flag=bf16
        step "bench_model_$amp" 75 "$PYTHON" tools/bench_model.py --device cuda --iters 10 --amp "$flag" \
            --out "$OUT/bench_model_$amp.json"
        record "bench_model_$amp" "$STEP_STATUS" "$STEP_SECONDS" \
            "$(join_notes "$(grep -E '^(inference|train step) ' "$STEP_LOG" | tr -s ' ' | paste -sd ';' -)" "$STEP_NOTE")"
    done
else
    record bench_ops SKIP 0 "$NO_GPU"
    record bench_model SKIP 0 "$NO_GPU"
fi

# 6. A short training run of the demo on the GPU: generate the simple scenes, train, evaluate.
if [ "$HAVE_CUDA" -eq 1 ]; then
    step train 150 bash -c "'$PYTHON' tools/make_synthetic.py --out '$WORK/datasets/synthetic_simple' --format coco \
--scene simple --num-images 400 && '$PYTHON' tools/train.py experiment=demo device=cuda \
paths.data_root='$WORK/datasets' solver.max_iter=$TRAIN_ITERS trainer.num_workers=4 hydra.run.dir='$WORK/train'"
    cp "$WORK/train/metrics.json" "$OUT/train_metrics.json" 2>/dev/null
    record train "$STEP_STATUS" "$STEP_SECONDS" \
        "$(join_notes "$TRAIN_ITERS iterations: $(last_match 'final evaluation' | sed 's/.*final evaluation: //')" \
            "$STEP_NOTE")"
else
    record train SKIP 0 "$NO_GPU (the CPU demo is make demo)"
fi

finish
