#!/usr/bin/env bash
# The multipath benchmark of issue 8, in one run: 2 ranks in 2 network namespaces joined by two
# paths, each shaped with tbf to the same rate R per direction (tests/netns/multipath_env.sh),
# 64 MiB float32 allreduce (mp_allreduce: every iteration's result checked), measuring
#   1. busbw over 1 path and over 2 paths                      bar: 2 paths >= 1.8 x 1 path
#   2. path 1 shaped to R/4                                     bar: >= 85% of (R + R/4)
#   3. path 1 cut mid-run (link down, for good)                 bar: finishes, zero errors,
#                                                                    busbw after within 10% of 1 path
#   4. one-way delay 5 and 15 ms (10 and 30 ms round trip) on both paths, against the same
#      topology without delay (TUN + delay_switch.py: this kernel has no netem)
#                                                               bar: >= 90% of no delay
# busbw of a 2-rank allreduce equals the bytes each rank sends per second, so the rate a path
# allows is R/8 bytes/s (tbf counts whole frames, headers included, so ~3-4% of R is overhead).
#
#   run_bench.sh BUILD_DIR [RATE]     RATE defaults to 400mbit; prints a table, exit 1 if a bar fails
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
readonly HERE
readonly BUILD=${1:?usage: run_bench.sh BUILD_DIR [RATE]}
readonly RATE=${2:-400mbit}
readonly ENV=$HERE/../../tests/netns/multipath_env.sh
readonly BYTES=$((64 << 20)) PORT=29591
readonly ITERS=${BCCL_BENCH_ITERS:-6}

rc=0
"$ENV" check || rc=$?
[[ $rc -eq 0 ]] || exit "$rc"
[[ -x $BUILD/mp_allreduce ]] || { echo "build mp_allreduce first" >&2; exit 1; }
OUT=$(mktemp -d /tmp/bccl-mpbench.XXXXXX)
trap '"$ENV" down >/dev/null 2>&1 || true' EXIT
rate_num=$(awk -v r="$RATE" 'BEGIN { n = r + 0; u = r; sub(/^[0-9.]+/, "", u);
  m = (u ~ /^g/) ? 1e9 : (u ~ /^m/) ? 1e6 : (u ~ /^k/) ? 1e3 : 1; print n * m }')
readonly LINK_GBS=$(awk -v b="$rate_num" 'BEGIN { printf "%.4f", b / 8 / 1e9 }')  # GB/s per path

# run NAME PATHS ARGS...: 2 ranks, one per namespace; rank 0's output in $OUT/NAME.out.
run() {
  local name=$1 paths=$2 r ifs="mp0"
  shift 2
  [[ $paths -ge 2 ]] && ifs="mp0,mp1"
  local pids=()
  for r in 0 1; do
    timeout -k 5 300 ip netns exec "bmp-h$r" env RANK=$r WORLD_SIZE=2 \
      BCCL_COMM_ID=10.78.0.1:$PORT BCCL_SOCKET_IFNAME=$ifs BCCL_NUM_PATHS="$paths" \
      BCCL_HOST_ID="bmp-h$r" "$BUILD/mp_allreduce" -b $BYTES "$@" \
      >"$OUT/$name.rank$r.out" 2>"$OUT/$name.rank$r.err" &
    pids+=($!)
  done
  local bad=0
  for r in 0 1; do wait "${pids[$r]}" || bad=1; done
  cp "$OUT/$name.rank0.out" "$OUT/$name.out"
  return $bad
}
avg() { awk '/^summary/ { print $7 }' "$OUT/$1.out"; }
wrong() { awk '/^summary/ { print $5 }' "$OUT/$1.out"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", a / b }'; }
verdict() { awk -v v="$1" -v bar="$2" 'BEGIN { print (v >= bar) ? "PASS" : "FAIL" }'; }

status=0
results=()
record() {  # record LABEL VALUE BAR_TEXT VERDICT
  results+=("$(printf '%-44s %-26s %-24s %s' "$1" "$2" "$3" "$4")")
  [[ $4 == PASS ]] || status=1
}

echo "== setup: 2 paths, tbf $RATE each way (${LINK_GBS} GB/s per path nominal), $((BYTES >> 20)) MiB allreduce"
"$ENV" up 2 --rate "$RATE"
run one 1 -n "$ITERS" || status=1
run two 2 -n "$ITERS" || status=1
b1=$(avg one) b2=$(avg two)
r12=$(ratio "$b2" "$b1")
record "1 path -> 2 paths (busbw GB/s)" "$b1 -> $b2 = ${r12}x" ">= 1.8x" "$(verdict "$r12" 1.8)"

"$ENV" rate 1 "$(awk -v b="$rate_num" 'BEGIN { printf "%dkbit", b / 4 / 1000 }')"
run quarter 2 -n "$ITERS" || status=1
bq=$(avg quarter)
allow=$(awk -v l="$LINK_GBS" 'BEGIN { printf "%.4f", 1.25 * l }')
rq=$(ratio "$bq" "$allow")
record "path 1 at R/4: busbw vs R + R/4 = $allow" "$bq = $rq" ">= 0.85" "$(verdict "$rq" 0.85)"
"$ENV" rate 1 "$RATE"

# Cut path 1 ~4 s into the timed loop, for good; judge iterations starting 2 s after the cut
# (detection takes BCCL_PATH_TIMEOUT_MS, 1 s by default).
run cut 2 -t 16 &
runner=$!
for _ in $(seq 200); do grep -q start_epoch "$OUT/cut.rank0.out" 2>/dev/null && break; sleep 0.1; done
start=$(awk '/start_epoch/ { print $NF }' "$OUT/cut.rank0.out")
sleep 4
"$ENV" cut 1
cut_at=$(date +%s.%N)
cut_ok=0
wait "$runner" || cut_ok=1
after=$(awk -v s="$start" -v c="$cut_at" '/^iter/ && $4 + s >= c + 2 { t += $6; n++ } END {
  if (n) printf "%.4f", 64 * 1048576 * n / (t / 1000) / 1e9; else print 0 }' "$OUT/cut.out")
cw=$(wrong cut)
rc1=$(ratio "$after" "$b1")
cut_verdict=PASS
[[ $cut_ok -eq 0 && $cw == 0 ]] || cut_verdict=FAIL
awk -v r="$rc1" 'BEGIN { exit !(r >= 0.9 && r <= 1.1) }' || cut_verdict=FAIL
record "path 1 cut: busbw after vs 1 path ($b1)" "$after = $rc1, wrong $cw" "finishes, 0 wrong, 0.9-1.1" "$cut_verdict"
# The detecting side's line says why; the other side's says its peer gave the path up.
failover=$({ grep -h "path 1 (10.78.1.* failed: no ack" "$OUT"/cut.rank*.err
  grep -h "path 1 (10.78.1.* failed" "$OUT"/cut.rank*.err; } | awk 'NR == 1 { sub(/.*WARN /, ""); print }')
# (awk, not head: head's early exit would end grep with SIGPIPE, which pipefail and set -e turn
# into the end of this script.)

echo "== delays: TUN + delay_switch.py on both paths (no netem in this kernel), tbf $RATE"
"$ENV" up 2 --rate "$RATE" --tun >/dev/null
run d0 2 -n "$ITERS" || status=1
for d in 5 15; do
  "$ENV" up 2 --rate "$RATE" --delay-ms "$d" >/dev/null
  run "d$d" 2 -n "$ITERS" || status=1
done
bd0=$(avg d0)
for d in 5 15; do
  bd=$(avg "d$d")
  rd=$(ratio "$bd" "$bd0")
  record "RTT $((2 * d)) ms: busbw vs no delay ($bd0)" "$bd = $rd" ">= 0.90" "$(verdict "$rd" 0.9)"
done
for name in one two quarter cut d0 d5 d15; do
  [[ $(wrong "$name") == 0 ]] || { echo "wrong results in $name" >&2; status=1; }
done

echo
echo "== results (rate R = $RATE per path and direction; outputs in $OUT)"
printf '%-44s %-26s %-24s %s\n' "measurement" "value" "bar" "verdict"
printf '%s\n' "${results[@]}"
echo "failover WARN: $failover"
exit $status
