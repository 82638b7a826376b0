#!/usr/bin/env bash
# Idempotent machine set-up for sinkrep: the libtorch virtualenv (PyPI's torch wheel
# carries libtorch) and `just`. Fast when already done: it checks a stamp and exits.
#
# The venv lives in the per-machine cache, keyed by the torch version, so fresh clones
# and CI reuse it. It is trusted only when its stamp exists; the stamp is written last,
# after torch imports with the pinned version, so a killed or failed install is never
# trusted and is rebuilt from scratch on the next run.
set -euo pipefail

TORCH_VERSION="${SINKREP_TORCH_VERSION:-2.13.0}"
CACHE="${SINKREP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sinkrep}"
VENV="$CACHE/venv/torch-$TORCH_VERSION"
STAMP="$VENV/.sinkrep-ready"
PY="${SINKREP_BOOTSTRAP_PYTHON:-python3}"

say() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$CACHE/venv" || die "cannot create cache folder $CACHE/venv"

# One installer at a time per machine (CI and a user may start together).
exec 9>"$CACHE/venv/.lock"
flock 9 || die "cannot lock $CACHE/venv/.lock"

if [ -f "$STAMP" ] && [ -x "$VENV/bin/python" ]; then
    :
else
    command -v "$PY" >/dev/null || die "$PY not found: sinkrep needs Python 3 to install libtorch (torch==$TORCH_VERSION from PyPI)"
    say "installing libtorch: torch==$TORCH_VERSION into $VENV (about 1 minute and 4.7 GB, once per machine)"
    rm -rf "$VENV"
    start=$(date +%s)
    if ! "$PY" -m venv "$VENV"; then
        rm -rf "$VENV"
        die "could not create a virtualenv at $VENV (is python3-venv installed?); fix that and rerun 'just setup'"
    fi
    if ! "$VENV/bin/python" -m pip install --quiet "torch==$TORCH_VERSION" rust-just; then
        rm -rf "$VENV"
        die "pip could not install torch==$TORCH_VERSION (network, registry or disk space?); the partial venv was removed, rerun 'just setup' to retry"
    fi
    got=$("$VENV/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null) || got="(import failed)"
    if [ "$got" != "$TORCH_VERSION" ]; then
        rm -rf "$VENV"
        die "torch in $VENV reports version $got, expected $TORCH_VERSION; the venv was removed, rerun 'just setup'"
    fi
    echo "$TORCH_VERSION" > "$STAMP"
    say "libtorch ready in $(( $(date +%s) - start ))s"
fi

# `just` itself (the README's command installs it with pip; this keeps the venv's copy too).
if ! command -v just >/dev/null && [ ! -x "$VENV/bin/just" ]; then
    "$VENV/bin/python" -m pip install --quiet rust-just || die "could not install rust-just from PyPI"
fi
