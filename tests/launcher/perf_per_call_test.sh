#!/usr/bin/env bash
# The perf tools' per-call spread (-P 1): one line per row and cell, its points in order
# (min <= p50 <= p90 <= max, all above zero), the table itself unchanged; and -P without
# blocking calls refused (a call on a stream returns once enqueued: its time means nothing);
# and -O 1 (out of place only): the in-place columns N/A, one per-call line per row.
# Usage: perf_per_call_test.sh BUILD_DIR
set -u
build=${1:?usage: $0 BUILD_DIR}
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

out=$("$build/bcclrun" -n 2 --timeout 120 "$build/all_reduce_perf" -b 8 -e 4K -f 8 -w 5 -n 50 \
  -z 1 -P 1 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "all_reduce_perf -z 1 -P 1 exited $rc"
grep -q "Out of bounds values : 0 OK" <<<"$out" || fail "wrong results with -P 1"
rows=$(grep -cE '^\[0\] +[0-9]+ ' <<<"$out")
spreads=$(grep -c '^\[0\] # per-call ' <<<"$out")
[ "$rows" -eq 4 ] || fail "expected 4 table rows (8 B to 4 KiB), got $rows"
[ "$spreads" -eq $((2 * rows)) ] || fail "expected $((2 * rows)) per-call lines, got $spreads"
bad=$(awk '/^\[0\] # per-call / {
  for (i = 1; i <= NF; ++i) v[$i] = $(i + 1)
  if (!(v["min"] > 0 && v["min"] <= v["p50"] && v["p50"] <= v["p90"] && v["p90"] <= v["max"]))
    print
}' <<<"$out")
[ -z "$bad" ] || fail "points out of order: $bad"

"$build/bcclrun" -n 2 --timeout 60 "$build/all_reduce_perf" -b 8 -e 8 -P 1 >/dev/null 2>&1
rc=$?
[ $rc -ne 0 ] || fail "-P 1 without -z 1 was accepted"

oop=$("$build/bcclrun" -n 2 --timeout 120 "$build/all_reduce_perf" -b 1K -e 4K -f 4 -w 2 -n 10 \
  -z 1 -P 1 -O 1 2>&1)
rc=$?
[ $rc -eq 0 ] || fail "all_reduce_perf -O 1 exited $rc"
grep -q "Out of bounds values : 0 OK" <<<"$oop" || fail "wrong results with -O 1"
oop_rows=$(grep -cE '^\[0\] +[0-9]+ .* 0 +N/A +N/A +N/A +N/A$' <<<"$oop")
[ "$oop_rows" -eq 2 ] || fail "expected 2 rows timed out of place only, got $oop_rows"
oop_spreads=$(grep -c '^\[0\] # per-call .*out-of-place' <<<"$oop")
[ "$(grep -c '^\[0\] # per-call ' <<<"$oop")" -eq 2 ] && [ "$oop_spreads" -eq 2 ] ||
  fail "expected one out-of-place per-call line per row with -O 1"

if [ $failures -eq 0 ]; then
  echo "ok: $spreads per-call lines for $rows rows; -P without -z refused; -O 1 times out of place only"
else
  printf '%s\n' "$out" "$oop" | tail -30
fi
exit $((failures > 0))
