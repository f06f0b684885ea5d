#!/usr/bin/env bash
# 8 ranks as 2 real network endpoints x 4 ranks: each "host" is a network namespace (see
# netns_env.sh), its 4 ranks share memory, and the two hosts reach each other only over TCP
# through veth (or the delay switch). bcclrun cannot span namespaces, so this starts each rank
# itself with torchrun-style variables (RANK, WORLD_SIZE, BCCL_COMM_ID at host 0's address) and
# BCCL_HOST_ID per namespace: namespaces share the hostname and boot id, which would otherwise
# make all 8 ranks one host. Runs all_reduce_perf with checking, once as is and once with a
# 5 ms one-way delay between the hosts, prints rank 0's tables and checks every rank.
#
#   run_hier_test.sh BUILD_DIR      exit 0 passed, 1 failed, 77 skipped (not root, no netns)
# BCCL_ALGO defaults to allreduce=hier, the algorithm this exists for; set it empty to let the
# cost model choose. Other BCCL_* variables in the environment reach every rank too.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly BUILD=${1:?usage: run_hier_test.sh BUILD_DIR}
readonly PERF=$BUILD/all_reduce_perf
readonly HOSTS=2 PER_HOST=4 PORT=29577
readonly LIMIT=${BCCL_NETNS_TIMEOUT:-300}  # seconds per run, for every rank
readonly DELAY_MS=${BCCL_NETNS_DELAY_MS:-5}
export BCCL_ALGO=${BCCL_ALGO-allreduce=hier}

[[ -x $PERF ]] || { echo "FAIL: $PERF not found (build the all_reduce_perf target)" >&2; exit 1; }
rc=0
"$HERE/netns_env.sh" check || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"

OUT=$(mktemp -d /tmp/bccl-netns.XXXXXX)
pids=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$HERE/netns_env.sh" down || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

# run NAME [netns_env.sh up options]: one all_reduce_perf job across the namespaces.
run() {
  local name=$1 r
  shift
  "$HERE/netns_env.sh" up "$HOSTS" "$@"
  pids=()
  for ((r = 0; r < HOSTS * PER_HOST; r++)); do
    local host=$((r / PER_HOST))
    timeout -k 10 "$LIMIT" ip netns exec "bccl-h$host" env \
      RANK=$r WORLD_SIZE=$((HOSTS * PER_HOST)) BCCL_COMM_ID=10.77.0.1:$PORT \
      BCCL_SOCKET_IFNAME=bccl0 BCCL_HOST_ID="bccl-h$host" \
      "$PERF" -b 8 -e 16M -f 8 -c 1 >"$OUT/$name.rank$r.out" 2>"$OUT/$name.rank$r.err" &
    pids+=($!)
  done
  local failed=0 code
  for ((r = 0; r < ${#pids[@]}; r++)); do
    code=0
    wait "${pids[$r]}" || code=$?
    if [[ $code -ne 0 ]]; then
      local why=""
      [[ $code -eq 124 ]] && why=" (timed out after ${LIMIT}s)"
      echo "FAIL ($name): rank $r exited $code$why" >&2
      tail -5 "$OUT/$name.rank$r.err" >&2 || true
      failed=1
    fi
  done
  pids=()
  # all_reduce_perf exits non-zero on any wrong element; also insist on rank 0's verdict.
  grep -q "Out of bounds values : 0 OK" "$OUT/$name.rank0.out" || failed=1
  echo "== $name: 8 ranks = ${HOSTS} namespaces x ${PER_HOST} ranks (shm within, tcp across)," \
    "BCCL_ALGO=${BCCL_ALGO:-(cost model)}"
  grep -v "^#  Rank" "$OUT/$name.rank0.out" || true
  "$HERE/netns_env.sh" down
  return $failed
}

status=0
run "no delay" || status=1
run "${DELAY_MS} ms delay" --delay-ms "$DELAY_MS" || status=1
if [[ $status -eq 0 ]]; then
  echo "PASS: every rank exited 0 with 0 wrong elements (outputs in $OUT)"
else
  echo "FAIL: see $OUT" >&2
fi
exit $status
