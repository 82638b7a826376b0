# sinkrep recipes. `just --list` shows them; README.md explains the two that matter:
# `just replicate-all` (the main job) and `just test` (what CI runs).

set shell := ["bash", "-euo", "pipefail", "-c"]
set positional-arguments

torch_version := "2.13.0"
cache := env("SINKREP_CACHE", env("XDG_CACHE_HOME", env("HOME") + "/.cache") + "/sinkrep")
venv := cache + "/venv/torch-" + torch_version

# torch-sys finds libtorch inside the venv's torch package (tech-notes: LIBTORCH_USE_PYTORCH).
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

# The test command CI runs: format check, clippy (warnings are errors), all tests.
# Everything builds with the release profile so libtorch bindings are compiled once.
test: _venv
    #!/usr/bin/env bash
    set -euo pipefail
    phase() { local name=$1; shift; local t0=$(date +%s); "$@"; echo "phase $name: $(( $(date +%s) - t0 ))s" >&2; }
    phase fetch just sinkrep fetch
    phase fmt cargo fmt --all --check
    phase clippy cargo clippy --release --workspace --all-targets --quiet -- -D warnings
    phase test cargo test --release --workspace --quiet

# Everything, end to end: set-up, every replication at the default scale (grows as they land).
replicate-all: setup
    just sinkrep env
