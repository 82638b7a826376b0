#!/usr/bin/env bash
# check-runpath.sh BINARY DEVICE_TORCH_LIB: fails (one line per problem, exit 1) unless
# the device bundle's binary can start on the device image by itself:
#   - RUNPATH (not the old RPATH, which LD_LIBRARY_PATH cannot override) holds $ORIGIN
#     and the image's torch/lib, in that order;
#   - it NEEDs libtorch.so (kept by --no-as-needed: it is the library that NEEDs
#     libtorch_cuda.so in the CUDA wheel; without it CUDA is never seen, build/link-torch.rs),
#     libtorch_cpu.so and libc10.so;
#   - every library resolves here (ldd), libtorch_cuda.so among them, i.e. the local
#     2.11 venv is in the RUNPATH too.
set -uo pipefail

bin="${1:?usage: check-runpath.sh BINARY DEVICE_TORCH_LIB}"
device_lib="${2:?usage: check-runpath.sh BINARY DEVICE_TORCH_LIB}"
fail=0
bad() { printf 'check-runpath: %s: %s\n' "$bin" "$*" >&2; fail=1; }

[ -x "$bin" ] || { bad "not an executable file"; exit 1; }
dyn=$(readelf -d "$bin" 2>&1) || { bad "readelf failed: $dyn"; exit 1; }

runpath=$(printf '%s\n' "$dyn" | sed -n 's/.*(RUNPATH).*\[\(.*\)\]/\1/p')
[ -n "$runpath" ] || bad "no RUNPATH entry (an RPATH or nothing: $(printf '%s\n' "$dyn" | grep -c '(RPATH)') RPATH)"
IFS=: read -ra dirs <<<"$runpath"
index_of() {
    local i
    for i in "${!dirs[@]}"; do [ "${dirs[$i]}" = "$1" ] && { echo "$i"; return; }; done
    echo -1
}
origin=$(index_of '$ORIGIN')
image=$(index_of "$device_lib")
[ "$origin" -ge 0 ] || bad "RUNPATH lacks \$ORIGIN: $runpath"
[ "$image" -ge 0 ] || bad "RUNPATH lacks the device image's torch/lib ($device_lib): $runpath"
[ "$origin" -ge 0 ] && [ "$image" -ge 0 ] && [ "$origin" -gt "$image" ] &&
    bad "RUNPATH has the image's torch/lib before \$ORIGIN: $runpath"

for lib in libtorch.so libtorch_cpu.so libc10.so; do
    printf '%s\n' "$dyn" | grep -q "(NEEDED).*\[$lib\]" || bad "does not NEED $lib"
done

deps=$(env -u LD_LIBRARY_PATH ldd "$bin" 2>&1)
missing=$(printf '%s\n' "$deps" | grep 'not found')
[ -z "$missing" ] || bad "libraries not found here: $(echo "$missing" | tr -s ' \t\n' ' ')"
cuda=$(printf '%s\n' "$deps" | sed -n 's/^[[:space:]]*libtorch_cuda\.so => \([^ ]*\).*/\1/p')
[ -n "$cuda" ] || bad "libtorch_cuda.so is not among the libraries it loads (ldd)"

[ "$fail" = 0 ] || exit 1
echo "check-runpath: ok: RUNPATH $runpath; NEEDs libtorch, libtorch_cpu, libc10; loads libtorch_cuda ($cuda)"
