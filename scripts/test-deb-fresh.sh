#!/usr/bin/env bash
# Proves the .deb installs and works on a fresh Debian 12: builds the packages with cpack,
# makes a minimal Debian 12 root with debootstrap (cached under /var/cache/bccl-fresh after the
# first run), installs bccl_*.deb there with `apt-get install ./bccl_*.deb` (apt fetches its
# dependencies from Debian), then inside that root runs bccl_info, a 2-rank allreduce and
# allgather through the installed bcclrun and perf tools (checking results), and builds
# examples/allreduce.c with gcc and `pkg-config --cflags --libs bccl` and runs it on 2 ranks. With --with-torch it
# also installs python3-bccl-torch (which pulls in PyTorch: about 1 GB) and imports it.
#
#   scripts/test-deb-fresh.sh [BUILD_DIR] [--with-torch]
# Needs root and Debian's archive; exits 77 (skip) with the reason when either is missing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="$root/build"
with_torch=0
for arg in "$@"; do
  case "$arg" in
    --with-torch) with_torch=1 ;;
    /*) build="$arg" ;;
    *) build="$root/$arg" ;;
  esac
done
skip() { echo "SKIP: $*" >&2; exit 77; }
[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot)"
command -v debootstrap >/dev/null || skip "debootstrap is not installed (apt-get install debootstrap)"
[ -f "$build/CMakeCache.txt" ] || { echo "FAIL: $build is not a configured build" >&2; exit 1; }

cache=/var/cache/bccl-fresh
mkdir -p "$cache"
base="$cache/bookworm-minbase.tar"
if [ ! -f "$base" ]; then
  echo "debootstrap: a minimal Debian 12 root (first run only)"
  staging="$(mktemp -d)"
  debootstrap --variant=minbase bookworm "$staging" http://deb.debian.org/debian \
    >"$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log"; skip "debootstrap failed (no archive?)"; }
  tar -C "$staging" -cf "$base.tmp" . && mv "$base.tmp" "$base"
  rm -rf "$staging"
fi

(cd "$build" && cpack -G DEB >/dev/null)
fresh="$(mktemp -d /var/tmp/bccl-fresh.XXXXXX)"
cleanup() {
  for m in dev/shm proc sys; do umount "$fresh/$m" 2>/dev/null || true; done
  rm -rf "$fresh"
}
trap cleanup EXIT
tar -C "$fresh" -xf "$base"
mount -t proc proc "$fresh/proc"
mount -t sysfs sysfs "$fresh/sys"
mkdir -p "$fresh/dev/shm" && mount -t tmpfs tmpfs "$fresh/dev/shm"
cp /etc/resolv.conf "$fresh/etc/resolv.conf" 2>/dev/null || true
mkdir -p "$fresh/debs"
cp "$build"/bccl_*.deb "$fresh/debs/"
[ "$with_torch" -eq 1 ] && cp "$build"/python3-bccl-torch_*.deb "$fresh/debs/"
in_root() { chroot "$fresh" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"; }

echo "== apt-get install ./bccl_*.deb on a fresh Debian 12 root"
in_root apt-get update -qq
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./debs/*.deb' | tail -3
status=0
echo "== bccl_info"
# Captured first: piping straight into head would let head's early exit kill bccl_info with
# SIGPIPE, which pipefail turns into a spurious failure.
info="$(in_root bccl_info)" || { echo "FAIL: bccl_info exited with an error"; status=1; }
head -15 <<<"$info"
for tool in all_reduce_perf all_gather_perf; do
  echo "== bcclrun -n 2 $tool (installed)"
  out="$(in_root bcclrun -n 2 --timeout 120 "$tool" -b 8 -e 4M -f 64 -c 1 2>&1)" || { echo "FAIL: $tool exited with an error"; status=1; }
  grep -E "^\[0\] +[0-9]+ " <<<"$out" || true
  grep -q "Out of bounds values : 0 OK" <<<"$out" || { echo "FAIL: $tool results"; status=1; }
done
echo "== a C program built with pkg-config against the installed package, run on 2 ranks"
in_root sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends gcc libc6-dev pkg-config' | tail -1
cp "$root/examples/allreduce.c" "$fresh/tmp/allreduce.c"
if in_root sh -c 'gcc -std=c99 -Wall -Werror -o /tmp/allreduce /tmp/allreduce.c $(pkg-config --cflags --libs bccl)'; then
  in_root bcclrun -n 2 --timeout 60 /tmp/allreduce || { echo "FAIL: the example failed"; status=1; }
else
  echo "FAIL: the example does not build against the package"; status=1
fi
if [ "$with_torch" -eq 1 ]; then
  echo "== import bccl_torch"
  in_root python3 -c 'import torch, bccl_torch; print("bccl_torch imported, torch", torch.__version__)' || { echo "FAIL: bccl_torch does not import"; status=1; }
fi
[ $status -eq 0 ] && echo "PASS: the .deb installs on fresh Debian 12 and works" || echo "FAIL"
exit $status
