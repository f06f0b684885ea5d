#!/usr/bin/env bash
# The verbs tier, run inside the soft-RoCE VM (see run_in_softroce_vm.sh): every step once,
# each reported as PASS/FAIL with its time, and the exit status says whether all passed.
# BCCL_TEST_REQUIRE_VERBS=1 turns "no RDMA device" from a skip into a failure, so this run
# cannot pass without having exercised rxe0.
#
# Under emulation a byte moves ~100x slower than on the host, so the matrix's large case uses a
# smaller prime count and the rings smaller slots (still several chunks per message; the
# conformance test runs with the default geometry and its own small ones): a few minutes in all.
set -u
build=${1:?usage: in_vm_tests.sh BUILD_DIR}
export BCCL_TEST_REQUIRE_VERBS=1
export BCCL_TEST_LARGE_COUNT=${BCCL_TEST_LARGE_COUNT:-10007}
small_slots=BCCL_IB_SLOT_BYTES=${VM_TEST_SLOT_BYTES:-16384}
export GTEST_COLOR=no
status=0
summary=""

step() {  # name, command...
  local name=$1 t0 rc
  shift
  echo "=== $name: $*"
  t0=$(date +%s)
  "$@"
  rc=$?
  local line
  line=$(printf '%-4s %4ss  %s' "$([ $rc -eq 0 ] && echo PASS || echo FAIL)" "$(( $(date +%s) - t0 ))" "$name")
  echo "=== $line"
  summary+="$line"$'\n'
  [ $rc -eq 0 ] || status=1
}

# A gtest run that must have run at least $1 tests (a filter matching nothing passes vacuously).
atLeast() {
  local want=$1 out rc
  shift
  out=$("$@" 2>&1)
  rc=$?
  # All of it when something failed (what CI shows), else the totals.
  if [ $rc -ne 0 ]; then printf '%s\n' "$out"; else printf '%s\n' "$out" | tail -n 3; fi
  local ran
  ran=$(printf '%s\n' "$out" | sed -n 's/^\[==========\] \([0-9]*\) tests\{0,1\} from.*ran.*/\1/p')
  [ "${ran:-0}" -ge "$want" ] || { echo "only ${ran:-0} tests ran, want at least $want"; return 1; }
  return $rc
}
info() {
  "$build/bccl_info" > /tmp/bccl_info.txt || return 1
  sed -n '/^transports/,/^topology/p' /tmp/bccl_info.txt | grep -v '^topology'
  grep -q 'verbs  built, usable: rxe0' /tmp/bccl_info.txt
}

step "bccl_info shows rxe0's port, GID and MTU" info
# The reduction kernels pick AVX2 at run time: the emulated CPU (qemu -cpu max) offers it, so
# prove the AVX2 kernels are right there (the whole matrix of the scalar kernels is not needed).
step "AVX2 reduction kernels on the emulated CPU" atLeast 50 "$build/tests/unit_reduce_test" \
  --gtest_brief=1 '--gtest_filter=Reduce.*:AllTypesAndOps/ReduceMatrix.*/avx2_*'
# As root (the guest runs as the caller), the port-down case takes rxe0's link down and up.
step "verbs transport conformance: data path" atLeast 10 \
  "$build/tests/unit_verbs_transport_test" --gtest_brief=1
step "verbs transport conformance: failover" atLeast 7 "$build/tests/unit_verbs_failover_test" \
  --gtest_brief=1
step "verbs transport conformance: errors" atLeast 5 env BCCL_TEST_PORT_DOWN=veth0 \
  "$build/tests/unit_verbs_errors_test" --gtest_brief=1
for n in 2 3 4; do
  step "collectives matrix over verbs, $n ranks" atLeast 8 env "$small_slots" "$build/tests/bccl_collectives_test" \
    --gtest_brief=1 "--gtest_filter=All/CollectivesMatrix.Run/verbs_n${n}_*"
done
step "a rank SIGKILLed mid-collective over verbs" atLeast 2 env "$small_slots" "$build/tests/bccl_process_test" \
  --gtest_brief=1 '--gtest_filter=Kill/RankDeath.*/verbs_*'
# Shm within feigned hosts and verbs between them; and no transport list: soft-RoCE is not
# chosen automatically, so the hosts use TCP.
step "shm + verbs in one communicator; default choice stays TCP on soft-RoCE" atLeast 2 \
  "$build/tests/bccl_mixed_transport_test" --gtest_brief=1 '--gtest_filter=*Verbs*:*Default*'
# Several QPs per peer, one forced into the error state on each rank mid-run (fault injection,
# ibv_modify_qp to ERR): the results are checked and every broken QP must be cut out at both
# ends, with the run going on over the rest.
qp_failover() {  # perf tool [VAR=value...]
  local out cut tool=$1
  shift
  # bccl's own deadline (BCCL_TIMEOUT_MS) before the launcher's: a stall shows as bccl's
  # error naming what it waited for.
  out=$(env BCCL_TRANSPORT=verbs BCCL_IB_QPS_PER_PEER=4 BCCL_TIMEOUT_MS=120000 "$small_slots" "$@" \
    BCCL_FAULT_INJECT="rank=0,op=12,action=path;rank=1,op=30,action=path" \
    "$build/bcclrun" -n 2 --timeout 240 "$build/$tool" -b 64K -e 1M -f 4 -c 1 -n 8 -w 1 2>&1)
  printf '%s\n' "$out" | grep -E "^\[0\] +[0-9]|cut out" | cut -c1-200
  local why=""
  grep -q "Out of bounds values : 0 OK" <<<"$out" || why="wrong results or no result line"
  cut=$(grep -c "cut out" <<<"$out")
  [ -n "$why" ] || [ "$cut" -ge 4 ] || why="$cut QP ends cut out; want 4 (2 QPs, each at both ends)"
  [ -z "$why" ] && return 0
  # The whole run's tail, so a failure in CI can be read without rerunning the VM.
  echo "$why; the run's last 60 lines:"
  printf '%s\n' "$out" | tail -n 60 | cut -c1-300
  return 1
}
for tool in all_reduce_perf all_gather_perf; do
  step "a QP forced into error mid-run fails over to the other 3 ($tool)" qp_failover "$tool"
done
step "the same with the 4 QPs on two devices (rxe0, rxe1)" qp_failover all_reduce_perf \
  "BCCL_IB_HCA=$SOFTROCE_DEV,$SOFTROCE_DEV2"
echo "=== summary"
printf '%s' "$summary"
exit $status
