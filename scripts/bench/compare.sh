#!/usr/bin/env bash
# `just bench-compare [ARGS]`: sinkrep side by side with HF transformers and plain PyTorch on
# this machine, in one run with alternating runs; writes benchmarks/<kind of CPU>.md and the
# BENCHMARKS.md index at the repo root (scripts/bench/index.py).
#
# Builds what it times (release profile only: the sinkrep binary, sinkrep-subjects'
# `throughput` example, the criterion benches), sets up the peers venv
# (scripts/peers/setup.sh), fetches the pinned model, then runs scripts/bench/compare.py
# with the torch venv's python. ARGS go to compare.py (`--help` lists them), e.g.
# `just bench-compare --runs 5 --threads 1`. Takes several minutes on 2 cores.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
TORCH_VERSION="${SINKREP_TORCH_VERSION:-2.13.0}"
CACHE="${SINKREP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sinkrep}"
TORCH_VENV="$CACHE/venv/torch-$TORCH_VERSION"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

say() { printf 'bench-compare: %s\n' "$*" >&2; }
die() { printf 'bench-compare: error: %s\n' "$*" >&2; exit 1; }

cd "$ROOT"
bash scripts/setup.sh
export PATH="$TORCH_VENV/bin:$PATH" LIBTORCH_USE_PYTORCH=1 SINKREP_CACHE="$CACHE"
PEERS_PY="$(bash scripts/peers/setup.sh)" || die "peers venv set-up failed"

say "building (release)"
cargo build --release --quiet --bin sinkrep
"$TARGET/release/sinkrep" fetch smollm2-135m-instruct
MODEL="${SINKREP_BENCH_MODEL:-$CACHE/inputs/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf}"
[ -f "$MODEL" ] || die "model not found: $MODEL"

extra=()
# Row 3 needs sinkrep-subjects' throughput example; without it the row stays "pending".
if cargo build --release --quiet -p sinkrep-subjects --example throughput 2>"$TARGET/bench-compare-train-build.log"; then
    extra+=(--train-bin "$TARGET/release/examples/throughput")
else
    say "the throughput example does not build (see $TARGET/bench-compare-train-build.log): training row pending"
fi
if cargo build --release --quiet --example probe_overhead 2>"$TARGET/bench-compare-probe-build.log"; then
    extra+=(--probe-bin "$TARGET/release/examples/probe_overhead")
else
    say "the probe_overhead example does not build (see $TARGET/bench-compare-probe-build.log): its row is skipped"
fi
if ! cargo bench --no-run --quiet --bench model --bench dequant; then
    say "criterion benches do not build: skipping them"
    extra+=(--criterion skip)
fi

exec "$TORCH_VENV/bin/python" scripts/bench/compare.py \
    --sinkrep "$TARGET/release/sinkrep" \
    --peers-python "$PEERS_PY" \
    --torch-python "$TORCH_VENV/bin/python" \
    --model "$MODEL" \
    "${extra[@]}" "$@"
