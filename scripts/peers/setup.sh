#!/usr/bin/env bash
# Idempotent set-up of the PEERS venv: HF transformers (+ gguf, accelerate, numpy) used as an
# independent oracle for cross-checks. Not a project dependency; nothing in the Rust build uses it.
#
# It REUSES torch from the project's torch venv (made by scripts/setup.sh) through a .pth file,
# so the 4.7 GB torch wheel is not downloaded twice. The venv is keyed by the torch version
# and trusted only when its stamp matches the pins (sha256 of requirements.txt); the stamp is
# written last, so a killed or failed install is rebuilt from scratch on the next run.
#
# stdout: exactly one line, the peers venv's python (callers: PY=$(scripts/peers/setup.sh)).
# Everything else goes to stderr.
set -euo pipefail

TORCH_VERSION="${SINKREP_TORCH_VERSION:-2.13.0}"
CACHE="${SINKREP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sinkrep}"
TORCH_VENV="$CACHE/venv/torch-$TORCH_VERSION"
VENV="$CACHE/venv/peers-torch-$TORCH_VERSION"
STAMP="$VENV/.sinkrep-peers-ready"
REQS="$(cd "$(dirname "$0")" && pwd)/requirements.txt"

say() { printf 'peers-setup: %s\n' "$*" >&2; }
die() { printf 'peers-setup: error: %s\n' "$*" >&2; exit 1; }

[ -f "$REQS" ] || die "missing $REQS"
[ -f "$TORCH_VENV/.sinkrep-ready" ] && [ -x "$TORCH_VENV/bin/python" ] \
    || die "torch venv $TORCH_VENV is not ready: run scripts/setup.sh (or 'just setup') first"
want="torch-$TORCH_VERSION $(sha256sum "$REQS" | cut -d' ' -f1)"

# Same lock as scripts/setup.sh: never build on top of a torch venv that is being rebuilt.
exec 9>"$CACHE/venv/.lock"
flock 9 || die "cannot lock $CACHE/venv/.lock"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
    :
else
    say "installing the peers venv (transformers etc., pinned in $REQS) into $VENV (~40 s, ~300 MB)"
    rm -rf "$VENV"
    retry="the partial venv was removed; fix that and rerun scripts/peers/setup.sh"
    # The base interpreter of the torch venv: same Python minor version, so torch's
    # compiled extension modules import in the peers venv too.
    base=$("$TORCH_VENV/bin/python" -c 'import sys; print(sys._base_executable)') \
        || die "cannot run $TORCH_VENV/bin/python"
    "$base" -m venv "$VENV" || { rm -rf "$VENV"; die "could not create a virtualenv at $VENV; $retry"; }
    # Point the peers venv at the torch venv's site-packages. .pth dirs are appended after the
    # venv's own site-packages, so the pins below win over anything the torch venv also has.
    tsp=$("$TORCH_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    psp=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    echo "$tsp" > "$psp/zz-sinkrep-torch-venv.pth"
    # pip sees torch through the .pth and counts it as installed, so it is not fetched again.
    # (pip also refuses to uninstall anything outside this venv, so the torch venv stays intact.)
    if ! PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet -r "$REQS"; then
        rm -rf "$VENV"; die "pip could not install $REQS (network, registry or disk space?); $retry"
    fi
    got=$("$VENV/bin/python" -c 'import torch, transformers; print(torch.__version__.split("+")[0])' 2>/dev/null) \
        || got="(import of torch/transformers failed)"
    if [ "$got" != "$TORCH_VERSION" ]; then
        rm -rf "$VENV"; die "torch in $VENV reports $got, expected $TORCH_VERSION; $retry"
    fi
    case "$("$VENV/bin/python" -c 'import torch; print(torch.__file__)')" in
        "$tsp"/*) ;;
        *) rm -rf "$VENV"; die "pip installed a second torch into $VENV (pins need a torch other than $TORCH_VERSION?); $retry";;
    esac
    echo "$want" > "$STAMP"
    say "peers venv ready"
fi
echo "$VENV/bin/python"
