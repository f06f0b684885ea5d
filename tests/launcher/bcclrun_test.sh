#!/usr/bin/env bash
# Checks bcclrun's process handling with plain shell ranks, so the launcher is tested without
# depending on collectives working: output prefixing, failure reporting, the grace period,
# timeouts, signal forwarding and argument errors.
# Usage: bcclrun_test.sh BUILD_DIR   (the directory holding the bcclrun binary)

# The single-quoted commands below are expanded by each rank's shell, not this one.
# shellcheck disable=SC2016
set -u
BCCLRUN="${1:?usage: $0 BUILD_DIR}/bcclrun"
[ -x "$BCCLRUN" ] || { echo "FAIL: no executable $BCCLRUN"; exit 1; }
unset BCCL_RUN_GRACE_MS BCCL_SOCKET_IFNAME
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
failures=0

now_ms() { echo $(($(date +%s%N) / 1000000)); }

# run CMD... : sets RC and ELAPSED_MS, leaves output in $TMP/out and $TMP/err.
run() {
  local start
  start=$(now_ms)
  "$@" >"$TMP/out" 2>"$TMP/err"
  RC=$?
  ELAPSED_MS=$(($(now_ms) - start))
}

fail() {
  echo "FAIL: $1"
  echo "--- stdout"; cat "$TMP/out"
  echo "--- stderr"; cat "$TMP/err"
  failures=$((failures + 1))
}

expect_rc() { [ "$RC" -eq "$2" ] || fail "$1: exit status $RC, wanted $2"; }
expect_fast() { [ "$ELAPSED_MS" -lt "$2" ] || fail "$1: took ${ELAPSED_MS} ms, wanted < $2"; }
expect_grep() { grep -qE -- "$3" "$TMP/$2" || fail "$1: $2 lacks /$3/"; }

# Three ranks each print one line; every line carries its rank.
run "$BCCLRUN" -n 3 sh -c 'echo hi from $BCCL_RANK'
expect_rc "three ranks" 0
sort "$TMP/out" >"$TMP/sorted"
printf '[0] hi from 0\n[1] hi from 1\n[2] hi from 2\n' | cmp -s - "$TMP/sorted" ||
  fail "three ranks: wrong output"

# The identity variables, -x, loopback default, stderr prefixing and an unterminated last line.
run env KEEP=kept "$BCCLRUN" -n 2 -x FOO=bar -x KEEP sh -c \
  'echo "$BCCL_RANK/$BCCL_NRANKS $BCCL_LOCAL_RANK/$BCCL_LOCAL_SIZE $FOO $KEEP $BCCL_SOCKET_IFNAME";
   [ -n "$BCCL_UNIQUE_ID" ] || echo "no id"; echo oops >&2; printf tail'
expect_rc "environment" 0
expect_grep "environment" out '^\[1\] 1/2 1/2 bar kept lo$'
expect_grep "environment" out '^\[0\] tail$'
expect_grep "environment" err '^\[0\] oops$'
grep -q "no id" "$TMP/out" && fail "environment: BCCL_UNIQUE_ID is empty"

# A user's own interface choice is kept.
run "$BCCLRUN" -n 1 -x BCCL_SOCKET_IFNAME=eth9 sh -c 'echo $BCCL_SOCKET_IFNAME'
expect_grep "ifname override" out '^\[0\] eth9$'

# A rank exiting 3 is named; the sleeping others are ended after the grace period.
run "$BCCLRUN" -n 3 --grace-ms 200 sh -c '[ "$BCCL_RANK" = 1 ] && exit 3; exec sleep 30'
expect_rc "rank exits 3" 1
expect_grep "rank exits 3" err 'rank 1 \(pid [0-9]+\) exited with status 3'
expect_fast "rank exits 3" 2500

# A rank killed by SIGKILL is named with the signal, and the exit status reflects it.
run "$BCCLRUN" -n 3 --grace-ms 200 sh -c '[ "$BCCL_RANK" = 2 ] && kill -9 $$; exec sleep 30'
expect_rc "rank SIGKILLed" 137
expect_grep "rank SIGKILLed" err 'rank 2 \(pid [0-9]+\) killed by signal 9'
expect_fast "rank SIGKILLed" 2500

# Ranks that ignore SIGTERM are SIGKILLed a second later.
run "$BCCLRUN" -n 2 --grace-ms 100 sh -c \
  '[ "$BCCL_RANK" = 0 ] && exit 1; trap "" TERM; while :; do sleep 0.1; done'
expect_rc "SIGTERM ignored" 1
expect_grep "SIGTERM ignored" err 'killing ranks 1'
expect_fast "SIGTERM ignored" 3000

# --timeout ends a hung job with 124.
run "$BCCLRUN" -n 2 --timeout 1 sleep 30
expect_rc "timeout" 124
expect_grep "timeout" err 'timeout'
expect_fast "timeout" 3000

# SIGTERM to bcclrun reaches the ranks.
"$BCCLRUN" -n 2 sh -c 'sleep 30 & trap "kill \$!; echo got TERM; exit 0" TERM; echo armed; wait' \
  >"$TMP/out" 2>"$TMP/err" &
pid=$!
# Signal only once both ranks have set their trap: on a loaded machine 0.3 s may not be enough.
for _ in $(seq 1 100); do
  [ "$(grep -c armed "$TMP/out" 2>/dev/null)" -ge 2 ] && break
  sleep 0.1
done
start=$(now_ms)
kill -TERM "$pid"
wait "$pid"
RC=$?
ELAPSED_MS=$(($(now_ms) - start))
expect_rc "forward SIGTERM" 0
[ "$(grep -c 'got TERM' "$TMP/out")" -eq 2 ] || fail "forward SIGTERM: not every rank got it"
expect_fast "forward SIGTERM" 2500

# A program that cannot be executed.
run "$BCCLRUN" -n 1 ./no-such-program-here
expect_rc "exec failure" 1
expect_grep "exec failure" err 'cannot execute ./no-such-program-here'
expect_grep "exec failure" err 'exited with status 127'

# --bind core: each rank runs on one CPU, the ranks spread round robin over the allowed ones.
allowed=$(nproc)
run "$BCCLRUN" -n $((allowed + 1)) --bind core sh -c 'echo "cpus $BCCL_RANK $(nproc)"'
expect_rc "--bind core" 0
[ "$(grep -c 'cpus [0-9]* 1$' "$TMP/out")" -eq $((allowed + 1)) ] ||
  fail "--bind core: every rank should see exactly one CPU"
run "$BCCLRUN" -n 2 --bind none sh -c 'echo "cpus $BCCL_RANK $(nproc)"'
[ "$(grep -c "cpus [0-9]* $allowed\$" "$TMP/out")" -eq 2 ] || fail "--bind none: ranks keep every CPU"

# Bad arguments exit 2 with a usage message.
for args in "" "true" "-n 0 true" "-n -1 true" "-n x true" "-n 2" "-n 2 --bogus true" \
  "-n 2 --grace-ms" "-n 2 --timeout 0 true" "-n 2 --bind socket true"; do
  # shellcheck disable=SC2086  # word splitting is the point
  run "$BCCLRUN" $args
  expect_rc "bad arguments '$args'" 2
  expect_grep "bad arguments '$args'" err '^usage: bcclrun'
done

if [ "$failures" -ne 0 ]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all bcclrun checks passed"
