#!/usr/bin/env bash
# check-runpath.sh BINARY DEVICE_TORCH_LIB: fails (one line per problem, exit 1) unless
# the device bundle's binary can start on the device image by itself:
#   - RUNPATH (not the old RPATH, which LD_LIBRARY_PATH cannot override) holds $ORIGIN
#     and the image's torch/lib, in that order;
#   - it NEEDs libtorch_cpu.so and libc10.so, and every library it NEEDs resolves here
#     (ldd);
#   - libtorch_cuda.so, which the binary opens at start-up where an NVIDIA driver exists
#     (dlopen, searched with the binary's RUNPATH: sinkrep_model::cuda), is in one of its
#     RUNPATH folders here (the local 2.11 venv; on the device, the image's torch/lib),
#     or, in a build that links it (SINKREP_LINK_TORCH_CUDA=1), among what ldd loads.
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

for lib in libtorch_cpu.so libc10.so; do
    printf '%s\n' "$dyn" | grep -q "(NEEDED).*\[$lib\]" || bad "does not NEED $lib"
done

deps=$(env -u LD_LIBRARY_PATH ldd "$bin" 2>&1)
missing=$(printf '%s\n' "$deps" | grep 'not found')
[ -z "$missing" ] || bad "libraries not found here: $(echo "$missing" | tr -s ' \t\n' ' ')"
cuda=$(printf '%s\n' "$deps" | sed -n 's/^[[:space:]]*libtorch_cuda\.so => \([^ ]*\).*/\1/p')
how="linked"
if [ -z "$cuda" ]; then
    how="opened at start-up"
    for d in "${dirs[@]}"; do
        d=${d//\$ORIGIN/$(dirname "$bin")}
        [ -f "$d/libtorch_cuda.so" ] && { cuda="$d/libtorch_cuda.so"; break; }
    done
fi
[ -n "$cuda" ] || bad "libtorch_cuda.so is in none of its RUNPATH folders here, nor linked: CUDA could never load"

[ "$fail" = 0 ] || exit 1
echo "check-runpath: ok: RUNPATH $runpath; NEEDs libtorch_cpu, libc10; libtorch_cuda $how ($cuda)"
