#!/usr/bin/env bash
# Independent check of sinkrep's Gemma-3 (scripts/peers, never a project dependency):
# HF transformers loads the pinned Gemma-3-270M GGUF itself (`gguf_file=`, de-quantised
# to f32, eager attention) and computes the same per-layer sink report and the last
# position's logits (scripts/peers/hf_sink_report.py); scripts/peers/compare_reports.py
# prints the largest differences and fails beyond --rtol.
#
# usage: scripts/peers/gemma_hf_check.sh [--rtol R]   (run from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
rtol=1e-3
[ "${1:-}" = "--rtol" ] && rtol=$2
PY=$(bash scripts/peers/setup.sh)
just sinkrep fetch gemma3-270m
gguf=$(just sinkrep env --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["inputs_dir"])')/gemma3-270m/gemma-3-270m-q4_k_m.gguf
[ -f "$gguf" ] || { echo "gemma_hf_check: $gguf not found" >&2; exit 1; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
status=0
texts=(
    "The capital of France is"
    "Shall I compare thee to a summer's day? Thou art more lovely and more temperate: Rough winds do shake the darling buds of May, And summer's lease hath all too short a date."
)
for i in "${!texts[@]}"; do
    t=${texts[$i]}
    echo "== text $i: ${t:0:60}"
    just sinkrep analyze --model gemma3-270m --text "$t" --device cpu --json > "$out/sinkrep-$i.json"
    "$PY" scripts/peers/hf_sink_report.py --model "$gguf" --text "$t" --out "$out/hf-$i.json"
    "$PY" scripts/peers/compare_reports.py "$out/sinkrep-$i.json" "$out/hf-$i.json" --rtol "$rtol" || status=1
done
exit $status
