#!/usr/bin/env bash
# Multipath TCP over real links: ranks in two network namespaces joined by several veth pairs
# (multipath_env.sh), one path per pair (BCCL_SOCKET_IFNAME=mp0,mp1,...). Cases:
#   correctness  every collective (the perf tools, results checked) over 2 and then 4 paths,
#                2 ranks per namespace (shared memory within, multipath TCP across)
#   rates        path 1 slowed to a quarter of path 0 mid-run: its share of the bytes drops from
#                about a half to about a fifth (counted on the interfaces), results correct
#   failover     path 1 cut mid-run (link down) and restored: every iteration's result correct,
#                a WARN names the path and why, and the path carries traffic again afterwards
#   allcut       every path cut: both ranks fail with an error naming the peer within the
#                failure detector's bound (BCCL_HEARTBEAT_TIMEOUT_MS), no hang
#
#   run_multipath_test.sh BUILD_DIR CASE    exit 0 passed, 1 failed, 77 skipped (not root, ...)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly BUILD=${1:?usage: run_multipath_test.sh BUILD_DIR CASE}
readonly CASE=${2:?usage: run_multipath_test.sh BUILD_DIR CASE}
readonly ENV=$HERE/multipath_env.sh
readonly PORT=29581
readonly LIMIT=${BCCL_NETNS_TIMEOUT:-120}  # seconds per rank process
# Fast enough for short runs, slow enough that a 32 MiB allreduce spans many chunks per path.
readonly RATE=${BCCL_MULTIPATH_TEST_RATE:-200mbit}

rc=0
"$ENV" check || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"
for tool in mp_allreduce all_reduce_perf; do
  [[ -x $BUILD/$tool ]] || { echo "FAIL: $BUILD/$tool not found (build it)" >&2; exit 1; }
done

OUT=$(mktemp -d /tmp/bccl-multipath.XXXXXX)
pids=()
# shellcheck disable=SC2317  # invoked by the trap
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  "$ENV" down || true
}
trap cleanup EXIT
trap 'exit 1' INT TERM

fail() {
  echo "FAIL ($CASE): $*" >&2
  echo "outputs in $OUT" >&2
  exit 1
}

ifnames() {
  local n=$1 p list=""
  for ((p = 0; p < n; p++)); do list+="${list:+,}mp$p"; done
  echo "$list"
}

# launch NAME PATHS PER_NS CMD...: starts PER_NS ranks in each namespace, in the background.
launch() {
  local name=$1 paths=$2 per=$3 r
  shift 3
  pids=()
  for ((r = 0; r < 2 * per; r++)); do
    local ns=$((r / per))
    timeout -k 5 "$LIMIT" ip netns exec "bmp-h$ns" env RANK=$r WORLD_SIZE=$((2 * per)) \
      BCCL_COMM_ID=10.78.0.1:$PORT BCCL_SOCKET_IFNAME="$(ifnames "$paths")" \
      BCCL_HOST_ID="bmp-h$ns" "$@" >"$OUT/$name.rank$r.out" 2>"$OUT/$name.rank$r.err" &
    pids+=($!)
  done
}

# wait_all NAME: 0 if every rank exited 0.
wait_all() {
  local name=$1 r code bad=0
  for ((r = 0; r < ${#pids[@]}; r++)); do
    code=0
    wait "${pids[$r]}" || code=$?
    if [[ $code -ne 0 ]]; then
      echo "  $name: rank $r exited $code$([[ $code -eq 124 ]] && echo " (timed out)")" >&2
      tail -3 "$OUT/$name.rank$r.err" >&2 || true
      bad=1
    fi
  done
  pids=()
  return $bad
}

txbytes() { "$ENV" txbytes 0 "$1"; }

case_correctness() {
  local paths tool
  for paths in 2 4; do
    "$ENV" up "$paths"
    for tool in all_reduce all_gather reduce_scatter broadcast reduce alltoall sendrecv; do
      [[ -x $BUILD/${tool}_perf ]] || fail "$BUILD/${tool}_perf not found"
      launch "$tool.p$paths" "$paths" 2 "$BUILD/${tool}_perf" -b 8 -e 8M -f 8 -n 2 -w 1 -c 1
      wait_all "$tool.p$paths" || fail "$tool over $paths paths"
      grep -q "Out of bounds values : 0 OK" "$OUT/$tool.p$paths.rank0.out" ||
        fail "$tool over $paths paths: wrong results (see $OUT/$tool.p$paths.rank0.out)"
      echo "ok: $tool over $paths paths, 4 ranks in 2 namespaces"
    done
    # Every path carried a fair part of the large messages.
    local p
    for ((p = 0; p < paths; p++)); do
      [[ $(txbytes "$p") -gt $((8 << 20)) ]] || fail "path $p carried almost nothing"
    done
  done
}

case_rates() {
  "$ENV" up 2 --rate "$RATE"
  local slow
  slow=$(awk -v r="$RATE" 'BEGIN { n = r + 0; sub(/^[0-9.]+/, "", r); print n / 4 r }')
  launch rates 2 1 "$BUILD/mp_allreduce" -b $((32 << 20)) -t 9
  sleep 3
  local a0 a1 b0 b1 c0 c1
  a0=$(txbytes 0) a1=$(txbytes 1)
  "$ENV" rate 1 "$slow"
  sleep 1  # the estimate needs a few time constants; the window starts one second later
  b0=$(txbytes 0) b1=$(txbytes 1)
  wait_all rates || fail "the run failed"
  c0=$(txbytes 0) c1=$(txbytes 1)
  grep -q "summary iters [0-9]* wrong 0 " "$OUT/rates.rank0.out" || fail "wrong results"
  # Before the change: from the start to 3 s; after: from 1 s after the change to the end.
  local before after
  before=$(awk -v x="$a1" -v y="$a0" 'BEGIN { printf "%.3f", x / (x + y) }')
  after=$(awk -v x="$((c1 - b1))" -v y="$((c0 - b0))" 'BEGIN { printf "%.3f", x / (x + y) }')
  echo "path 1's share of the bytes: $before at equal rates ($RATE), $after at $slow vs $RATE"
  awk -v s="$before" 'BEGIN { exit !(s > 0.40 && s < 0.60) }' || fail "equal paths not used equally"
  awk -v s="$after" 'BEGIN { exit !(s > 0.10 && s < 0.30) }' ||
    fail "share $after after the slow-down: expected about 0.2 (a static split gives 0.5)"
}

case_failover() {
  "$ENV" up 2 --rate "$RATE"
  launch failover 2 1 env BCCL_PATH_TIMEOUT_MS=1000 "$BUILD/mp_allreduce" -b $((32 << 20)) -t 12
  sleep 3
  "$ENV" cut 1
  echo "path 1 cut at $(date +%T.%3N)"
  sleep 4
  "$ENV" restore 1
  echo "path 1 restored at $(date +%T.%3N)"
  local restored
  restored=$(txbytes 1)
  wait_all failover || fail "the run failed: a path cut must not fail the collective"
  grep -q "summary iters [0-9]* wrong 0 " "$OUT/failover.rank0.out" || fail "wrong results"
  grep -h "WARN" "$OUT"/failover.rank*.err || true
  grep -q "path 1 (10.78.1.* failed: " "$OUT/failover.rank0.err" "$OUT/failover.rank1.err" ||
    fail "no WARN naming path 1 and why"
  grep -q "path 1 (10.78.1.* is back in use" "$OUT/failover.rank0.err" ||
    fail "path 1 was not reconnected"
  local after=$(($(txbytes 1) - restored))
  echo "path 1 carried $((after >> 20)) MiB after it came back"
  [[ $after -gt $((16 << 20)) ]] || fail "path 1 came back but carries (almost) nothing"
  grep "^iter" "$OUT/failover.rank0.out"
}

case_allcut() {
  "$ENV" up 2 --rate "$RATE"
  local bound=${BCCL_HEARTBEAT_TIMEOUT_MS:-3000}
  launch allcut 2 1 "$BUILD/mp_allreduce" -b $((32 << 20)) -t 60
  sleep 3
  "$ENV" cut 0
  "$ENV" cut 1
  local t0 r code
  t0=$(date +%s%N)
  for ((r = 0; r < 2; r++)); do
    code=0
    wait "${pids[$r]}" || code=$?
    local ms=$((($(date +%s%N) - t0) / 1000000))
    echo "rank $r exited $code ${ms} ms after the cut: $(grep -h "failed" "$OUT/allcut.rank$r.err" |
      tail -1)"
    [[ $code -ne 0 && $code -ne 124 ]] || fail "rank $r: expected a reported failure, got exit $code"
    # The detector's bound, plus a heartbeat period and scheduling slack on a busy machine.
    [[ $ms -le $((bound + 2000)) ]] || fail "rank $r took $ms ms to report its peer (bound $bound)"
    grep -q "rank $((1 - r)) " "$OUT/allcut.rank$r.err" || fail "rank $r's error does not name its peer"
  done
  pids=()
}

case $CASE in
  correctness) case_correctness ;;
  rates) case_rates ;;
  failover) case_failover ;;
  allcut) case_allcut ;;
  *) echo "unknown case $CASE" >&2; exit 2 ;;
esac
echo "PASS: multipath $CASE (outputs in $OUT)"
