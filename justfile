# sinkrep recipes. `just --list` shows them; README.md explains the two that matter:
# `just replicate-all` (the main job) and `just test` (what CI runs).

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

torch_version := "2.13.0"
cache := env("SINKREP_CACHE", env("XDG_CACHE_HOME", env("HOME") + "/.cache") + "/sinkrep")
venv := cache + "/venv/torch-" + torch_version

# torch-sys finds libtorch inside the venv's torch package (torch-sys's LIBTORCH_USE_PYTORCH).
export LIBTORCH_USE_PYTORCH := "1"
export PATH := venv + "/bin:" + env("PATH")
export SINKREP_CACHE := cache
export SINKREP_PYTHON := venv + "/bin/python"

# List the recipes.
default:
    @just --list

# Install libtorch (torch==2.13.0 venv in the cache) and just, if not done yet; fetch pinned inputs.
setup: _venv
    just sinkrep fetch

_venv:
    @bash scripts/setup.sh

# Build the release binary (when needed) and run it: `just sinkrep analyze --text "..."`.
[no-cd]
sinkrep *ARGS: _venv
    @cd "{{justfile_directory()}}" && cargo build --release --quiet --bin sinkrep
    @"${CARGO_TARGET_DIR:-{{justfile_directory()}}/target}/release/sinkrep" "$@"

# Fetch and verify the pinned inputs (data/inputs.toml) into the cache.
fetch: _venv
    just sinkrep fetch

# The test command CI runs: format check, clippy (warnings are errors), all tests, the
# benchmarks once in test mode, and every replication at smoke scale against its baselines.
# Everything builds with the release profile so libtorch bindings are compiled once.
test: _venv
    #!/usr/bin/env bash
    set -euo pipefail
    phase() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "phase $name: $(( $(date +%s) - t0 ))s" >&2; }
    phase fetch just sinkrep fetch
    phase fmt cargo fmt --all --check
    phase clippy cargo clippy --release --workspace --all-targets --quiet -- -D warnings
    phase test cargo test --release --workspace --quiet
    # Each criterion benchmark once, untimed (`cargo bench` measures).
    phase benches cargo test --release --benches --quiet
    # BENCHMARKS.md is generated from benchmarks/*.md; a hand edit or a stale index fails here.
    phase bench-index python3 scripts/bench/index.py --check
    # Every replication at smoke scale, judged against the committed smoke baselines.
    runs=$(mktemp -d)
    trap 'rm -rf "$runs"' EXIT
    # One libtorch thread: with two, its workers spin whenever another process holds a
    # core, which made runs up to 8x slower on a busy 2-core machine (same numbers).
    phase smoke-run just sinkrep run all --scale smoke --threads 1 --out "$runs"
    phase smoke-verify just sinkrep verify --scale smoke --runs "$runs"
    phase drift-detect just _drift-detected "$runs"

# Proves the drift check bites: a baseline moved beyond tolerance must fail `verify`
# with a readable drift table naming the metric.
_drift-detected RUNS:
    #!/usr/bin/env bash
    set -euo pipefail
    base=$(mktemp -d)
    trap 'rm -rf "$base"' EXIT
    cp -r data/baselines/. "$base/"
    metric=$(python3 scripts/perturb_baseline.py "$base/smoke")
    if out=$(just sinkrep verify --scale smoke --runs "$1" --baseline "$base" 2>&1); then
        echo "drift check did not fail after moving $metric:"; echo "$out"; exit 1
    fi
    echo "$out" | grep -q "$metric" || { echo "drift table does not name $metric:"; echo "$out"; exit 1; }
    echo "drift of $metric detected, as it must be"

# Everything, end to end: set-up, every replication at the default scale (cpu, or gpu
# with CUDA; pass --scale S to choose), figures, REPORT.md, drift check against the
# committed baselines.
# Every argument goes to `sinkrep run` (e.g. --scale smoke --threads 1); --scale also
# to figures, report and verify.
# Each phase's wall time goes to <runs>/replicate-all-timing.json (with the CPU model, ISA
# flags and git revision; scripts/replicate_timing.py), which `just bench-compare` reads.
replicate-all *ARGS:
    #!/usr/bin/env bash
    set -euo pipefail
    started=$(date -u +%Y-%m-%dT%H:%M:%SZ)
    # The tree as the run found it (the run itself rewrites REPORT.md and figures/).
    export SINKREP_TIMING_GIT_REV=$(git rev-parse HEAD 2>/dev/null || true)
    export SINKREP_TIMING_GIT_DIRTY=$(git status --porcelain 2>/dev/null | head -c1 | wc -c)
    scale=(); scale_name=""; runs="{{justfile_directory()}}/runs"; prev=""
    for a in "$@"; do
        [ "$prev" = "--scale" ] && { scale=(--scale "$a"); scale_name=$a; }
        [ "$prev" = "--out" ] && runs=$a
        case "$a" in --scale=*) scale=("$a"); scale_name=${a#--scale=};; --out=*) runs=${a#--out=};; esac
        prev=$a
    done
    timed=()
    phase() {
        local name=$1; shift; local t0; t0=$(date +%s%N); local rc=0
        "$@" || rc=$?
        local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
        timed+=("$name=$((ms / 1000)).$(printf %03d $((ms % 1000)))")
        return $rc
    }
    phase setup just setup
    phase build cargo build --release --quiet --bin sinkrep
    just sinkrep env
    phase run just sinkrep run all "$@"
    phase figures just sinkrep figures "${scale[@]}"
    phase report just sinkrep report "${scale[@]}"
    # A drifted verify still leaves its timing record, then fails the recipe.
    rc=0; phase verify just sinkrep verify "${scale[@]}" || rc=$?
    SINKREP_TIMING_VERIFY_RC=$rc python3 scripts/replicate_timing.py "$runs" "$scale_name" "$started" "$*" "${timed[@]}"
    exit $rc

# Rewrite the committed baselines of a scale from its latest run (say why in the commit).
update-baselines SCALE="smoke":
    just sinkrep verify --scale {{SCALE}} --update

# Seeded corruption fuzz of the GGUF reader over both pinned files' headers, metadata and
# tensor tables: N corruptions per file (default 50,000, so 10^5 in all; CI's test runs a
# few hundred). Under a 3 GiB address-space limit, so an allocation sized from a corrupt
# count (anything near the file sizes or beyond) aborts the run instead of passing.
fuzz N="50000": _venv
    just sinkrep fetch smollm2-135m-instruct gemma3-270m
    cargo test --release -p sinkrep-gguf --test gguf --no-run --quiet
    ulimit -v 3145728 && SINKREP_FUZZ_N={{N}} cargo test --release -p sinkrep-gguf --test gguf pinned_headers_survive_seeded_corruption -- --nocapture

# The synthetic-subject search (issue 14): a grid of task x start token x depth x lr x
# weight decay, each run measured along training; writes docs/research/synthetic-search/
# (curves.csv, summary.csv/.md, sink_vs_steps figure, manifest.json). About 25 CPU-minutes.
# Options: --jobs N, --only SUBSTR, --steps N, --out DIR.
synthetic-search *ARGS: _venv
    cargo run --release --quiet -p sinkrep-subjects --example synthetic_search -- "$@"

# Criterion benchmarks (`just bench -- --save-baseline X` to compare later).
bench *ARGS: _venv
    cargo bench --bench model "$@"

# Side by side with HF transformers and plain PyTorch on this machine (alternating runs):
# load, Gu et al.'s sink protocol, a training step, peak memory; writes benchmarks/<kind of
# CPU>.md (AMX, AVX512-BF16 without AMX, ...) and regenerates the BENCHMARKS.md index.
# `just bench-compare --help` lists the options (e.g. --runs 5 --threads 1).
bench-compare *ARGS: _venv
    bash scripts/bench/compare.sh "$@"

# The device bundle: sinkrep built against libtorch 2.11 (the lent GPU machine's image),
# with the pinned inputs and CPU reference reports, in bundle/ (README: "GPU / device bundle").
device-bundle:
    bash scripts/device/bundle.sh

# The bundle on this machine, against the local 2.11 venv: its RUNPATH (and that the check
# rejects a binary without one), every replication at smoke scale run from it and verified
# against data/baselines/smoke, and the report comparator's self-test. Not part of `just
# test`: a cold machine adds a second libtorch (~5 GB) and a second release build.
device-bundle-check: device-bundle _venv
    #!/usr/bin/env bash
    set -euo pipefail
    phase() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "phase $name: $(( $(date +%s) - t0 ))s" >&2; }
    bin=bundle/bin/sinkrep
    cmp -s "$bin" <(gzip -dc bundle/run/sinkrep.gz) || { echo "bundle/run/sinkrep.gz is not bundle/bin/sinkrep"; exit 1; }
    image_lib=/opt/torch/.venv/lib/python3.12/site-packages/torch/lib
    phase runpath bash scripts/device/check-runpath.sh "$bin" "$image_lib"
    # The check must bite: the 2.13 build has no $ORIGIN nor the image's folder.
    plain="${CARGO_TARGET_DIR:-{{justfile_directory()}}/target}/release/sinkrep"
    cargo build --release --quiet --bin sinkrep
    if bash scripts/device/check-runpath.sh "$plain" "$image_lib" 2>/dev/null; then
        echo "check-runpath.sh accepted $plain, which lacks the device RUNPATH"; exit 1
    fi
    env -u LD_LIBRARY_PATH "$bin" env --json | python3 -c 'import json,sys; v=json.load(sys.stdin); assert v["libtorch_version"].startswith("2.11.0"), v; assert v["tch_version"] == "0.24.0", v'
    runs=$(mktemp -d)
    trap 'rm -rf "$runs"' EXIT
    phase smoke-run env -u LD_LIBRARY_PATH "$bin" run all --scale smoke --threads 1 --device cpu --out "$runs"
    phase smoke-verify "$bin" verify --scale smoke --runs "$runs" --baseline data/baselines
    phase comparator python3 scripts/device/test_compare_reports.py bundle/run/cpu-reports

# scripts/device/gpu-check.sh end to end on this CPU (every stage part, then run with
# SINKREP_GPU_CHECK_DEVICE=cpu, no gpu scale); its $OUT lands in OUT or a temporary folder.
gpu-check-dry: device-bundle
    #!/usr/bin/env bash
    set -uo pipefail
    export OUT="${OUT:-$(mktemp -d)}" SINKREP_STAGE_DIR="$(mktemp -d)" SINKREP_GPU_CHECK_WORK="$(mktemp -d)"
    export SINKREP_GPU_CHECK_DEVICE=cpu SINKREP_GPU_CHECK_BUDGET_S="${SINKREP_GPU_CHECK_BUDGET_S:-900}"
    for d in bundle/stage-*; do
        [ -d "$d" ] || continue
        bash scripts/device/gpu-check.sh stage "${d#bundle/stage-}" >/dev/null || { echo "gpu-check-dry: staging $d failed"; exit 1; }
    done
    bash scripts/device/gpu-check.sh run; rc=$?
    rm -rf "$SINKREP_STAGE_DIR" "$SINKREP_GPU_CHECK_WORK"
    echo "gpu-check-dry: exit $rc; files in $OUT:"; ls -l "$OUT"
    exit $rc
