#!/usr/bin/env bash
# Ranks bound round robin to the CPUs (bcclrun --bind core) get a ring ordered by CPU, not by
# rank: the ring collectives, forced, must still give every rank the right result over shared
# memory and TCP, in and out of place (the perf tools check every element).
# Usage: ring_order_test.sh BUILD_DIR
set -u
build=${1:?usage: $0 BUILD_DIR}
if [ "$(nproc)" -lt 2 ]; then
  echo "SKIP: one CPU, so binding cannot reorder the ring"
  exit 0
fi
# bcclrun gives rank r the (r mod P)-th CPU: the ring takes the ranks CPU by CPU.
cpus=$(nproc)
want=""
for ((c = 0; c < cpus; ++c)); do
  for ((r = c; r < 5; r += cpus)); do want+="${want:+ }$r"; done
done
failures=0
for transport in shm tcp; do
  for tool in all_reduce_perf reduce_scatter_perf all_gather_perf; do
    out=$(env BCCL_DEBUG=INFO BCCL_ALGO=ring BCCL_TRANSPORT="$transport" \
      "$build/bcclrun" -n 5 --bind core --timeout 120 \
      "$build/$tool" -b 8 -e 1M -f 32 -n 1 -w 1 -c 1 2>&1)
    rc=$?
    what="$tool over $transport"
    if [ $rc -ne 0 ] || ! grep -q "Out of bounds values : 0 OK" <<<"$out"; then
      echo "FAIL: $what: exit $rc or wrong results"; printf '%s\n' "$out" | tail -20
      failures=$((failures + 1))
    elif ! grep -q "ring order $want (" <<<"$out"; then
      echo "FAIL: $what: the ring was not reordered by CPU"
      printf '%s\n' "$out" | grep -E "ring order|bound" | head
      failures=$((failures + 1))
    else
      echo "ok: $what (ring order $want)"
    fi
  done
done
exit $((failures > 0))
