#!/usr/bin/env bash
# Assemble build/rootfs/: the files of the SPEEDY image (Dockerfile: FROM scratch + this tree),
# taken from this machine so nothing is pulled: the patched model (bin/speedy), its boundary
# files, the wrapper and the summer initial state, plus bash, awk and the few coreutils the
# wrapper calls, each with the shared libraries `ldd` lists (libnetcdff, libgfortran, ...).
# In the image: /opt/speedy/speedy_segment.sh, /opt/speedy/bin/{speedy,data/,summer_state.bin}.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${SPEEDY_OUT:-$here/bin}                 # the build's output (build.sh)
root=${SPEEDY_BUILD:-$here/build}/rootfs
[ -x "$out/speedy" ] || { echo "rootfs.sh: build the model first (bash build.sh)" >&2; exit 2; }
rm -rf "$root"
mkdir -p "$root/opt/speedy/bin" "$root/tmp" "$root/usr/bin"
cp "$here/speedy_segment.sh" "$root/opt/speedy/"
cp -r "$out/speedy" "$out/data" "$out/LICENSE.speedy" "$root/opt/speedy/bin/"
[ ! -f "$out/summer_state.bin" ] || cp "$out/summer_state.bin" "$root/opt/speedy/bin/"
progs=("$out/speedy")
for p in env bash sh awk cat ln rm mv stat tail dirname; do
  f=$(command -v "$p") || { echo "rootfs.sh: $p not found" >&2; exit 2; }
  f=$(readlink -f "$f")
  cp "$f" "$root/usr/bin/$p"
  progs+=("$f")
done
ln -s usr/bin "$root/bin"
for f in "${progs[@]}"; do
  ldd "$f" | awk '/=>/ { print $3 } /^\t\/lib/ { print $1 }' | while read -r lib; do
    [ -n "$lib" ] || continue
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
done
chmod 1777 "$root/tmp"
du -sh "$root" | awk '{print "rootfs: " $1}'
