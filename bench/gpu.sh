#!/usr/bin/env bash
# What a GPU must still measure (issue 31): bench/perf.py's SD-1.5-size and SDXL-size presets on
# CUDA, random weights (nothing is downloaded), bf16, in one sitting of at most ~10 minutes.
#
#   bench/gpu.sh                 # on a CUDA machine: writes bench/results/perf-cuda-*.json
#   bench/gpu.sh --dry-run       # anywhere: the same commands on the CPU at tiny sizes, in a temp folder
#   DRY_RUN=1 bench/gpu.sh --out DIR
#
# Runs, in this order (each under its own timeout, the whole under TOTAL_S; what the deadline
# leaves no time for is skipped and logged):
#   1. timings, 8 frames: sd15-random at 512² and sdxl-random at 1024², T = 20, with --source
#      stored, then --source live where edit has that option (else stored only);
#   2. peak memory of one tune step and one edit (fresh processes) at 8, 16 and 24 frames, merged
#      into the timing files, SD-1.5 first, both source modes at each frame count.
# Files: perf-cuda-{sd15,sdxl}-{stored,live}.json (each with its `ratios`) and gpu-sh.log (every
# command, its exit status and seconds). Exit status 0 when every command ran and succeeded.
#
# Environment: PYTHON (default python), TOTAL_S (default 570), DRY_MEMORY_FRAMES (dry run: frame
# counts to probe, default none — each probe is a fresh interpreter), DRY_RUN=1 (as --dry-run).
set -u
cd "$(dirname "$0")/.."

DRY_RUN=${DRY_RUN:-0}
OUT_DIR=""
while (($#)); do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --out) OUT_DIR=$2; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "Error: unknown argument $1 (use --dry-run, --out DIR)" >&2; exit 2 ;;
    esac
    shift
done

PYTHON=${PYTHON:-python}
TOTAL_S=${TOTAL_S:-570}
MIN_S=20  # a run is not started with less than this left before the deadline

if [[ $DRY_RUN == 1 ]]; then
    OUT_DIR=${OUT_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/gpu-sh-dry.XXXXXX")}
    DEVICE=cpu
    DTYPE=fp32  # bf16 autocast is CUDA-only in tune's path (pipelines.tuning.autocast_for)
    declare -A MODEL=([sd15]=tiny-random [sdxl]=tiny-xl-random)
    declare -A SIZE=([sd15]=64 [sdxl]=64)
    FRAMES=2
    MEMORY_FRAMES=${DRY_MEMORY_FRAMES:-}
    EXTRA=(--steps 2 --repeats 1 --warmup 0 --step-repeats 1)
    # One thread: on a shared CPU, two threads per process stall at every op's barrier (a tiny
    # forward goes from ~0.03 s to ~2 s); the dry run checks the commands, not the timings.
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
    OUT_DIR=${OUT_DIR:-bench/results}
    DEVICE=cuda
    DTYPE=bf16
    declare -A MODEL=([sd15]=sd15-random [sdxl]=sdxl-random)
    declare -A SIZE=([sd15]=512 [sdxl]=1024)
    FRAMES=8
    MEMORY_FRAMES="8 16 24"
    EXTRA=(--steps 20)
    if ! "$PYTHON" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
        echo "Error: CUDA is not available here; bench/gpu.sh --dry-run runs the same commands on the CPU" >&2
        exit 2
    fi
fi
# Per-run limits in seconds (the deadline may cut them shorter).
declare -A TIMING_CAP=([sd15]=120 [sdxl]=180)
declare -A MEMORY_CAP=([sd15]=60 [sdxl]=120)

# Both source branches where edit has --source live|stored|auto; today's stored one otherwise.
if "$PYTHON" -c 'import dataclasses, sys
from contextedit.pipelines.edit_options import EditSettings
sys.exit(0 if "source" in {f.name for f in dataclasses.fields(EditSettings)} else 1)'; then
    SOURCES=(stored live)
else
    SOURCES=(stored)
fi

mkdir -p "$OUT_DIR"
LOG=$OUT_DIR/gpu-sh.log
: >"$LOG"
DEADLINE=$((SECONDS + TOTAL_S))
FAILED=0

log() { echo "$*" | tee -a "$LOG"; }

# run NAME CAP COMMAND...: COMMAND under min(CAP, time to the deadline); timeout signals the
# whole process group, so the memory probes' own subprocesses go with it.
run() {
    local name=$1 cap=$2 left t t0 rc
    shift 2
    left=$((DEADLINE - SECONDS))
    if ((left < MIN_S)); then
        log "SKIP $name: ${left} s left before the ${TOTAL_S} s deadline"
        FAILED=1
        return 1
    fi
    t=$((cap < left ? cap : left))
    t0=$SECONDS
    echo "+ $*" >>"$LOG"
    timeout -k 10 "$t" "$@" >>"$LOG" 2>&1
    rc=$?
    if ((rc == 0)); then
        log "OK   $name: $((SECONDS - t0)) s (limit $t s)"
    else
        log "FAIL $name: exit $rc after $((SECONDS - t0)) s (limit $t s$( ((rc == 124 || rc == 137)) && echo ', timed out'))"
        FAILED=1
    fi
    return $rc
}

out_file() { echo "$OUT_DIR/perf-cuda-$1-$2.json"; }  # KIND SOURCE

perf() {  # KIND SOURCE: PERF = bench/perf.py with the preset's model, size, frames, dtype and source
    PERF=("$PYTHON" bench/perf.py --device "$DEVICE" --model "${MODEL[$1]}" --size "${SIZE[$1]}" --frames "$FRAMES"
          --dtype "$DTYPE" --source "$2" "${EXTRA[@]}" --out "$(out_file "$1" "$2")")
}

log "bench/gpu.sh: device $DEVICE, dry run $DRY_RUN, sources ${SOURCES[*]}, memory frames ${MEMORY_FRAMES:-none}, out $OUT_DIR"

# 1. Timings (no memory probes: those follow, one frame count per command, so a slow 24-frame
#    probe cannot take the 8- and 16-frame figures with it).
for kind in sd15 sdxl; do
    for source in "${SOURCES[@]}"; do
        perf "$kind" "$source"
        run "timing $kind $source" "${TIMING_CAP[$kind]}" "${PERF[@]}" --no-memory
    done
done

# 2. Peak memory, merged into the timing files (--memory-frames).
for kind in sd15 sdxl; do
    for frames in $MEMORY_FRAMES; do
        for source in "${SOURCES[@]}"; do
            if [[ ! -f $(out_file "$kind" "$source") ]]; then
                log "SKIP memory $kind $source $frames: no timing file to merge into"
                FAILED=1
                continue
            fi
            perf "$kind" "$source"
            run "memory $kind $source $frames frames" "${MEMORY_CAP[$kind]}" "${PERF[@]}" --memory-frames "$frames"
        done
    done
done

# The ratios of every file written.
"$PYTHON" - "$OUT_DIR" <<'EOF' | tee -a "$LOG"
import json, sys
from pathlib import Path

for path in sorted(Path(sys.argv[1]).glob("perf-cuda-*.json")):
    doc = json.loads(path.read_text())
    r = doc["ratios"]
    print(f"{path.name}: tune {r['tune_over_floor_step']:.2f}, edit {r['edit_over_floor']:.2f}, "
          f"extra prompt {r['edit_extra_prompt_over_floor']:.2f} x floor; inversion {r['inversion']}, "
          f"source {r['source']}; peak GiB {doc.get('peak_gib', {})}")
EOF
log "done in $SECONDS s; files in $OUT_DIR"
exit $FAILED
