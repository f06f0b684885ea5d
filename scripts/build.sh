#!/usr/bin/env bash
# Configures and builds one flavour of bccl: scripts/build.sh DIR [extra cmake args...]
# e.g. scripts/build.sh build-asan -DBCCL_SANITIZE=address,undefined
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
dir="$1"
shift
cmake -S "$root" -B "$root/$dir" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
ninja -C "$root/$dir" -j "$(nproc)"
