#!/usr/bin/env bash
# scripts/device/gpu-check.sh [stage N|run]: the CUDA check for one 15-minute device lease.
#
# Runs on the lent GPU machine (torch 2.11.0+cu130 image, no Rust, no network) from the
# repository root, with bundle/ built here by `just device-bundle` and carried along.
# The pinned inputs (327 MiB; Gemma 3's GGUF alone is 242) cannot travel in one call
# (64 MiB per call, the repository included), so the bundle splits them into parts and
# the check takes one call per part on the same warm machine (it stays warm 30 s after a
# call; make each call at once), then the run call:
#
#   calls 1..K: carry ["bundle/stage-N"]; command: bash scripts/device/gpu-check.sh stage N
#               (copies part N to /tmp/sinkrep-device; seconds; K = the bundle's stage folders)
#   last call:  carry ["bundle/run"]; command: bash scripts/device/gpu-check.sh run
#               (timeout_s 600; the script itself stops at SINKREP_GPU_CHECK_BUDGET_S, 510 s)
#
# If a stage call did not run on this machine (it went back in between), the inputs are
# incomplete: the steps that need them are skipped with a one-line reason and the rest
# still runs. `run`, in one call:
#   1. nvidia-smi; `sinkrep env` (CUDA must be available: the binary opens libtorch_cuda
#      at start-up; if that fails, LD_PRELOAD of the image's copy, marked FAILED); `sinkrep env --matmul-peak`
#      (f32 and bf16 rates; the f32-vs-f64 error shows TF32 is off);
#   2. every replication at smoke scale on CUDA, then `sinkrep verify` against
#      data/baselines/smoke;
#   3. the claim-1..3 analyses of SmolLM2 (`analyze`/`intervene --json`, the commands in
#      bundle/run/cpu-reports/*.args) on CUDA, compared field by field with the CPU
#      reports computed here (scripts/device/compare_reports.py: rtol 1e-3, atol 1e-6);
#   4. Gu et al.'s protocol timed (`analyze --random 100 --seq-len 64`, f32 and bf16,
#      3 runs each, model load included);
#   4b. claim 4's gpu-scale training with 1, 4 and 16 runs sharing the GPU, 50 s each
#      (SINKREP_GPU_CHECK_JOBS_PROBE_S; 0 skips it): aggregate and per-run steps;
#   5. each replication at gpu scale, one after another, until the budget is spent (the
#      one running then is stopped; its partial folder, training timing.csv included,
#      is kept);
#   6. writes $OUT (6 files): gpu-check.log (everything), summary.md (step table and a
#      BENCHMARKS section), runs.tar.gz (runs and reports, no checkpoints), env.json,
#      compare.txt, verify-smoke.txt.
# Every step has a time limit, a failed step never stops the script, and the summary is
# printed last. Exit status: 0 when every step but the gpu scale ran and passed, 1 otherwise.
#
# A dry run here, on CPU: `just gpu-check-dry` (SINKREP_GPU_CHECK_DEVICE=cpu; no gpu scale).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
MODE="${1:-run}"
BUNDLE="${SINKREP_BUNDLE_DIR:-$ROOT/bundle}"
STAGE="${SINKREP_STAGE_DIR:-/tmp/sinkrep-device}"
DEVICE="${SINKREP_GPU_CHECK_DEVICE:-cuda}"
BUDGET_S="${SINKREP_GPU_CHECK_BUDGET_S:-510}"
GPU_SCALE="${SINKREP_GPU_CHECK_GPU_SCALE:-$([ "$DEVICE" = cuda ] && echo 1 || echo 0)}"
# Step limits are sized for the H200; a dry run on a CPU gets SLOW times as long.
SLOW="${SINKREP_GPU_CHECK_SLOW:-$([ "$DEVICE" = cuda ] && echo 1 || echo 4)}"
WORK="${SINKREP_GPU_CHECK_WORK:-/tmp/sinkrep-gpu-check}"
T0=$(date +%s)

die() { printf 'gpu-check: error: %s\n' "$*" >&2; exit 1; }

case "$MODE" in
stage)
    n="${2:-1}"
    src="$BUNDLE/stage-$n"
    [ -d "$src" ] || die "$src not found: carry [\"bundle/stage-$n\"] in this call (built by 'just device-bundle')"
    mkdir -p "$STAGE" || die "cannot create $STAGE"
    cp "$src"/* "$STAGE/" || die "cannot copy $src to $STAGE"
    (cd "$STAGE" && ls -l) && echo "gpu-check: staged part $n; $(du -sh "$STAGE" | cut -f1) in $STAGE; next call at once on this warm machine"
    exit 0
    ;;
run) ;;
*) die "usage: gpu-check.sh stage N | run" ;;
esac

[ -n "${OUT:-}" ] || die "OUT is not set (the device tool sets it; for a dry run: OUT=/tmp/x just gpu-check-dry)"
mkdir -p "$OUT" "$WORK" || die "cannot create $OUT or $WORK"
PART2="$BUNDLE/run"
LOG="$OUT/gpu-check.log"
STEPS="$WORK/steps.tsv"
: >"$LOG"
: >"$STEPS"
# PIP_NO_INDEX: the device has no network, so a dry run here must not fetch a missing input either.
export SINKREP_CACHE="$WORK/cache" NVIDIA_TF32_OVERRIDE=0 PYTHONUNBUFFERED=1 PIP_NO_INDEX=1
BIN="$WORK/sinkrep"
RUNS="$WORK/runs"
REPORTS="$WORK/reports"
mkdir -p "$RUNS" "$REPORTS"

log() { printf '%s\n' "$*" | tee -a "$LOG"; }
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
# tmo CMD...: CMD under the current step's deadline.
tmo() {
    local rest=$((STEP_DEADLINE - $(date +%s)))
    [ "$rest" -ge 1 ] || { echo "gpu-check: no time left in this step for: $*"; return 124; }
    timeout -k 5 "$rest" "$@"
}
# step NAME LIMIT_S FUNCTION|CMD...: runs it with output to the log and the terminal,
# records (name, status, seconds) and never stops the script.
step() {
    local name=$1 limit=$(($2 * SLOW)) t0 rc status secs
    shift 2
    [ "$limit" -le "$(left)" ] || limit=$(left)
    if [ "$limit" -lt 5 ]; then
        log "=== $name: skipped, the ${BUDGET_S}s budget is spent"
        printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$STEPS"
        return 1
    fi
    STEP_DEADLINE=$(($(date +%s) + limit))
    log "=== $name (limit ${limit}s, $(left)s of the budget left)"
    t0=$(date +%s.%N)
    "$@" 2>&1 | tee -a "$LOG"
    rc=${PIPESTATUS[0]}
    secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    case $rc in
    0) status=ok ;;
    124 | 137) status="TIMED OUT after ${limit}s" ;;
    *) status="FAILED (exit $rc)" ;;
    esac
    log "=== $name: $status, ${secs}s"
    printf '%s\t%s\t%s\n' "$name" "$status" "$secs" >>"$STEPS"
    return "$rc"
}
skip() {
    log "=== $1: skipped ($2)"
    printf '%s\tskipped (%s)\t0\n' "$1" "$2" >>"$STEPS"
}

# --- 0. unpack: binary, reports, inputs (part 0 from this call, parts 1..K from the stage calls).
unpack() {
    [ -d "$PART2" ] || { echo "$PART2 not found: carry [\"bundle/run\"] ('just device-bundle' builds it)"; return 1; }
    if [ -f "$PART2/sinkrep.gz" ]; then gzip -dc "$PART2/sinkrep.gz" >"$BIN"; else cp "$PART2/sinkrep" "$BIN"; fi &&
        chmod +x "$BIN" || return 1
    mkdir -p "$SINKREP_CACHE" || return 1
    # run/inputs.txt: number of stage parts, the archive's size and sha256.
    local n size sha i parts=("$PART2/inputs.part0") missing=()
    { read -r n && read -r size && read -r sha; } <"$PART2/inputs.txt" || return 1
    for ((i = 1; i <= n; i++)); do
        if [ -f "$STAGE/inputs.part$i" ]; then parts+=("$STAGE/inputs.part$i"); else missing+=("$i"); fi
    done
    [ "${#missing[@]}" = 0 ] || { echo "input parts ${missing[*]} of $n not in $STAGE: those stage calls did not run on this machine"; return 1; }
    cat "${parts[@]}" >"$WORK/inputs.tar.gz" || return 1
    [ "$(stat -c %s "$WORK/inputs.tar.gz")" = "$size" ] || { echo "joined inputs are $(stat -c %s "$WORK/inputs.tar.gz") bytes, expected $size"; return 1; }
    [ "$(sha256sum "$WORK/inputs.tar.gz" | cut -c1-64)" = "$sha" ] || { echo "joined inputs' sha256 differs from the bundle's $sha"; return 1; }
    tar -xzf "$WORK/inputs.tar.gz" -C "$SINKREP_CACHE" && rm "$WORK/inputs.tar.gz" &&
        echo "inputs joined from $((n + 1)) parts, verified and unpacked: $(ls "$SINKREP_CACHE/inputs" | tr '\n' ' ')"
}
MODEL_OK=0
step "unpack bundle" 60 unpack && MODEL_OK=1
[ -x "$BIN" ] || { log "gpu-check: no sinkrep binary: nothing else can run"; }

# --- 1. the machine.
if [ "$DEVICE" = cuda ]; then step "nvidia-smi" 20 nvidia-smi; else skip "nvidia-smi" "device $DEVICE"; fi
env_json() { tmo "$BIN" env && tmo "$BIN" env --json >"$WORK/env.json"; }
step "sinkrep env" 30 env_json
env_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1])).get(sys.argv[2]))' "$1" "$2" 2>/dev/null; }
cuda_ok=0
[ "$(env_field "$WORK/env.json" cuda_available)" = True ] && cuda_ok=1
# The binary opens libtorch_cuda.so at start-up where an NVIDIA driver exists (as every
# sinkrep build does). If that fails here, LD_PRELOAD of the image's libtorch_cuda.so (the
# build-time link's equivalent) lets the CUDA steps still run, and the step says so.
if [ "$DEVICE" = cuda ]; then
    how=$(env_field "$WORK/env.json" cuda_library)
    if [ "$cuda_ok" = 1 ]; then
        log "gpu-check: CUDA available; $how"
        printf 'cuda run-time load\tok (%s)\t0\n' "$how" >>"$STEPS"
    else
        log "gpu-check: CUDA is NOT available to sinkrep: $how"
        torch_lib=$(python3 -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))' 2>/dev/null)
        [ -f "$torch_lib/libtorch_cuda.so" ] || torch_lib=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
        if [ -f "$torch_lib/libtorch_cuda.so" ] &&
            LD_PRELOAD="$torch_lib/libtorch_cuda.so" timeout 30 "$BIN" env --json >"$WORK/env-preload.json" &&
            [ "$(env_field "$WORK/env-preload.json" cuda_available)" = True ]; then
            # Only sinkrep gets the preload (a wrapper), not every tool the script runs.
            printf '#!/bin/sh\nLD_PRELOAD="%s" exec "%s" "$@"\n' "$torch_lib/libtorch_cuda.so" "$BIN" >"$BIN-preload" &&
                chmod +x "$BIN-preload" && BIN="$BIN-preload"
            cp "$WORK/env-preload.json" "$WORK/env.json"
            cuda_ok=1
            log "gpu-check: with LD_PRELOAD=$torch_lib/libtorch_cuda.so CUDA is available: the CUDA steps run with it ($BIN)"
            printf 'cuda run-time load\tFAILED (%s); LD_PRELOAD fallback used\t0\n' "$how" >>"$STEPS"
        else
            log "gpu-check: LD_PRELOAD of ${torch_lib:-?}/libtorch_cuda.so did not help either: the CUDA steps will fail"
            printf 'cuda available\tFAILED (%s; LD_PRELOAD fallback failed too)\t0\n' "$how" >>"$STEPS"
        fi
    fi
fi
peak() { tmo "$BIN" env --matmul-peak --device "$DEVICE" && tmo "$BIN" env --matmul-peak --device "$DEVICE" --json >"$WORK/matmul.json"; }
step "matmul peak ($DEVICE)" 60 peak

need_model() { [ "$MODEL_OK" = 1 ] || { skip "$1" "inputs incomplete: a stage call did not run on this machine"; return 1; }; }

# --- 2. smoke scale on the device, verified against the committed baselines.
if need_model "smoke run ($DEVICE)"; then
    step "smoke run ($DEVICE)" 180 tmo "$BIN" run all --scale smoke --device "$DEVICE" --out "$RUNS"
    verify_smoke() { tmo "$BIN" verify --scale smoke --runs "$RUNS" --baseline "$ROOT/data/baselines" | tee "$OUT/verify-smoke.txt"; }
    step "smoke verify" 30 verify_smoke
fi

# --- 3. claim-1..3 analyses of SmolLM2 on the device against the CPU reports.
compare_all() {
    local rc=0 args name
    : >"$OUT/compare.txt"
    for args in "$PART2"/cpu-reports/*.args; do
        name=$(basename "$args" .args)
        mapfile -t argv < <(sed "s|@INPUTS@|$SINKREP_CACHE/inputs|g" "$args")
        echo "--- $name: sinkrep ${argv[*]} --device $DEVICE --json" | tee -a "$OUT/compare.txt"
        tmo "$BIN" "${argv[@]}" --device "$DEVICE" --json >"$REPORTS/$name.json"
        local got=$?
        if [ "$got" != 0 ]; then
            echo "$name: the $DEVICE run failed (exit $got$([ "$got" = 124 ] && echo ', time limit'))" | tee -a "$OUT/compare.txt"
            rc=$got
            continue
        fi
        cp "$PART2/cpu-reports/$name.json" "$REPORTS/$name.cpu.json"
        python3 "$ROOT/scripts/device/compare_reports.py" "$REPORTS/$name.cpu.json" "$REPORTS/$name.json" 2>&1 |
            tee -a "$OUT/compare.txt"
        [ "${PIPESTATUS[0]}" = 0 ] || rc=1
    done
    return $rc
}
need_model "claims 1-3 vs CPU" && step "claims 1-3 vs CPU" 120 compare_all

# --- 4. Gu et al.'s protocol, timed (wall clock of the whole command, model load included).
gu_timing() {
    local p i t0 t1
    for p in f32 bf16; do
        for i in 1 2 3; do
            t0=$(date +%s.%N)
            tmo "$BIN" analyze --random 100 --seq-len 64 --seed 0 --precision "$p" --device "$DEVICE" --json \
                >"$REPORTS/gu-100x64-$p.json" || return
            t1=$(date +%s.%N)
            printf '%s\t%s\t%s\n' "$p" "$i" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" | tee -a "$WORK/gu.tsv"
        done
    done
}
: >"$WORK/gu.tsv"
need_model "Gu protocol timing" && step "Gu protocol timing (100x64)" 90 gu_timing

# --- 4b. concurrent training on one GPU: claim 4's gpu-scale subject trained by the runner
#         with 1, 4 and 16 runs at a time (--threads), JOBS_PROBE_S seconds each, then stopped.
#         The first lease (2026-12-04) saw 16 at a time give ~2.5x one run's tokens/s in
#         aggregate, shared very unevenly (some runs stalled for minutes): these numbers are
#         for choosing how many runs share a GPU and for sizing the gpu scale. Each run's
#         timing.csv (one row a step) gives its steps; summary.py adds them up.
JOBS_PROBE_S="${SINKREP_GPU_CHECK_JOBS_PROBE_S:-50}"
jobs_probe() {
    local j rc bad=0 rest lim
    for j in 1 4 16; do
        rest=$((STEP_DEADLINE - $(date +%s)))
        [ "$rest" -ge 5 ] || { echo "jobs $j: no time left in this step"; return 124; }
        lim=$((rest < JOBS_PROBE_S ? rest : JOBS_PROBE_S))
        rm -rf "$WORK/jobs-$j"
        timeout -k 5 "$lim" "$BIN" run headwise-rmsnorm --scale gpu --device "$DEVICE" --threads "$j" \
            --out "$WORK/jobs-$j" >"$WORK/jobs-$j.log" 2>&1
        rc=$?
        echo "jobs $j: stopped after ${lim}s (exit $rc); $(find "$WORK/jobs-$j" -name timing.csv | wc -l) run(s) started"
        # 124: stopped by the time limit, as meant; anything else is a failure (see the log).
        [ "$rc" = 124 ] || [ "$rc" = 0 ] || { bad=1; tail -3 "$WORK/jobs-$j.log"; }
    done
    return $bad
}
if [ "$GPU_SCALE" = 1 ] && [ "$JOBS_PROBE_S" -gt 0 ]; then
    need_model "training jobs probe" && step "training jobs probe (1, 4, 16 at a time)" $((3 * JOBS_PROBE_S + 30)) jobs_probe
fi

# --- 5. the gpu scale, one replication after another, until the budget is spent. The
#        last 45 s are kept for packing.
if [ "$GPU_SCALE" = 1 ] && need_model "gpu scale"; then
    ids=$("$BIN" list 2>/dev/null | awk 'NR > 2 && $1 ~ /^[a-z0-9-]+$/ {print $1}')
    [ -n "$ids" ] || ids="variance-discrepancy super-neurons arbitrary-sinks headwise-rmsnorm"
    for id in $ids; do
        step "gpu scale: $id" $((($(left) - 45) / SLOW)) tmo "$BIN" run "$id" --scale gpu --device "$DEVICE" --out "$RUNS"
    done
elif [ "$GPU_SCALE" != 1 ]; then
    skip "gpu scale" "SINKREP_GPU_CHECK_GPU_SCALE=$GPU_SCALE"
fi

# --- 6. pack. Checkpoints stay behind; if the tarball is still over 15 MiB, only the
#        JSON/CSV/TXT files go.
pack() {
    cp "$WORK/env.json" "$OUT/env.json" 2>/dev/null
    cp "$WORK"/gu.tsv "$WORK"/matmul.json "$WORK"/steps.tsv "$REPORTS"/ 2>/dev/null
    tar -czf "$OUT/runs.tar.gz" -C "$WORK" --exclude='*.safetensors' runs reports || return 1
    if [ "$(stat -c %s "$OUT/runs.tar.gz")" -gt $((15 * 1048576)) ]; then
        echo "runs.tar.gz over 15 MiB: keeping only .json, .csv and .txt files"
        (cd "$WORK" && find runs reports -type f \( -name '*.json' -o -name '*.csv' -o -name '*.txt' -o -name '*.tsv' \) -size -2M |
            tar -czf "$OUT/runs.tar.gz" -T -)
    fi
    ls -l "$OUT"
}
BUDGET_S=$((BUDGET_S + 60)) # packing may use the reserve
step "pack \$OUT" 40 pack

python3 "$ROOT/scripts/device/summary.py" --work "$WORK" --out "$OUT" --device "$DEVICE" \
    --seconds "$(($(date +%s) - T0))" >"$OUT/summary.md" 2>>"$LOG" ||
    log "gpu-check: summary.py failed (see above); steps: $(tr '\t\n' ' ;' <"$STEPS")"
cat "$OUT/summary.md" | tee -a "$LOG"
# Failed, timed out, or skipped for a missing model or a spent budget; a step skipped
# by choice (nvidia-smi in a CPU dry run) is not a failure, and the gpu scale, sized
# elsewhere, is reported in the summary but not judged here.
if awk -F'\t' '$1 !~ /^gpu scale/ && $2 ~ /^(FAILED|TIMED OUT|skipped \((inputs|budget))/ { bad = 1 } END { exit !bad }' "$STEPS"; then
    exit 1
fi
exit 0
