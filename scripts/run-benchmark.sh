#!/usr/bin/env bash
# The main job on a fresh machine: install what is missing, build, and run the 4-rank allreduce
# benchmark on this host (shared memory between the ranks).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh" build
cd "$root/build"
./bcclrun -n "${NRANKS:-4}" ./all_reduce_perf -b 8 -e 64M -f 4 -c 1 "$@"
