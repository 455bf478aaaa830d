#!/usr/bin/env bash
# The emulated CUDA kernels under sanitizers, the compute-sanitizer of a CPU machine
# (`make sanitize-cuda-emulation`; docs/ops.md, "CUDA kernels and their device emulation"):
#   asan  AddressSanitizer + UndefinedBehaviorSanitizer: out-of-bounds reads and writes, signed
#         overflow, bad shifts; the first report fails the run.
#   tsan  ThreadSanitizer: data races between the threads of a block (each CUDA thread is a TSan
#         fiber, ordered only by barriers and atomics, so a missing __syncthreads() is a race).
# Each variant is built into build/sanitize-<name>/ (not in place: maskrcnn/_C_cuda_emu*.so stays the
# plain build), then the emulated variants of the CUDA op tests run against it through
# MASKRCNN_CUDA_EMULATION_LIB, with the sanitizer's runtime preloaded into the uninstrumented Python
# (pytest -s: a report is printed before the sanitizer ends the process).
#
#   bash tools/sanitize_cuda_emulation.sh PYTHON TEST_FILE...
# Environment: SANITIZERS (default "asan tsan"); ASAN_TESTS / TSAN_TESTS, the pytest -k selection of
# each (default: every emulated op test but the training steps, which run in child processes).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=$1
shift
TESTS=("$@")
SANITIZERS=${SANITIZERS:-asan tsan}
JOBS=${MAX_JOBS:-2}
STATUS=0

runtime() { gcc -print-file-name="$1"; }

for name in $SANITIZERS; do
    case $name in
        asan)
            flags=address,undefined
            selection=${ASAN_TESTS:-emulated and not training}
            preload="$(runtime libasan.so) $(runtime libubsan.so)"
            ;;
        tsan)
            flags=thread
            selection=${TSAN_TESTS:-emulated and not training}
            preload=$(runtime libtsan.so)
            ;;
        *) echo "unknown sanitizer $name (asan or tsan)" >&2; exit 2 ;;
    esac
    dir=build/sanitize-$name
    echo "== $name: building the emulated kernels with -fsanitize=$flags into $dir"
    MASKRCNN_BUILD=cuda-emulation MASKRCNN_SANITIZE=$flags MAX_JOBS=$JOBS "$PY" setup.py -q build_ext \
        --build-lib "$dir" --build-temp "$dir/temp"
    lib=$(ls "$dir"/maskrcnn/_C_cuda_emu*.so)
    echo "== $name: running the emulated CUDA op tests"
    t0=$SECONDS
    # One OS thread for torch too (OpenMP is not instrumented); ASLR off for TSan's shadow memory
    # layout (setarch -R), harmless for ASan; leaks are not this check's subject.
    if ! env LD_PRELOAD="$preload" MASKRCNN_CUDA_EMULATION_LIB="$lib" OMP_NUM_THREADS=1 \
        ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 \
        UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
        TSAN_OPTIONS=halt_on_error=1:report_signal_unsafe=0:ignore_noninstrumented_modules=1 \
        setarch "$(uname -m)" -R "$PY" -m pytest -q -s -p no:cacheprovider -k "$selection" "${TESTS[@]}"; then
        echo "== $name: FAILED" >&2
        STATUS=1
    else
        echo "== $name: passed, 0 sanitizer reports ($((SECONDS - t0)) s)"
    fi
done
exit $STATUS
