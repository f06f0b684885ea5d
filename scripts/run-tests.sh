#!/usr/bin/env bash
# The whole test suite on a fresh machine (what CI runs): install what is missing, then build and
# run the suite three times: a warnings-as-errors release build, AddressSanitizer +
# UndefinedBehaviorSanitizer, and ThreadSanitizer over the threaded tests.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/install-deps.sh"
# The PyTorch backend's tests run when torch is installed; CI installs it so they always run.
"$root/scripts/install-torch-deps.sh"
start=$(date +%s)
status=0

run_suite() {  # name, build dir, ctest args...
  local name="$1" dir="$2"
  shift 2
  echo "=== $name: ctest $* ($(( $(date +%s) - start )) s elapsed)"
  if ! ctest --test-dir "$root/$dir" --output-on-failure -j 2 "$@"; then
    echo "=== $name: FAILED"
    status=1
  fi
}

"$root/scripts/build.sh" build
run_suite release build

"$root/scripts/build.sh" build-asan -DBCCL_SANITIZE=address,undefined -DBCCL_BUILD_BENCH=OFF
# hwloc's plugins leave allocations behind when hwloc unloads them at exit, which LeakSanitizer
# reports against an unloaded module; the built-in components alone give the same answer here.
# The schedule simulations sweep 1..9 ranks here (the release run does 1..17).
# UCX keeps a few allocations past its cleanup: tests/lsan.supp names its libraries (only).
# The soft-RoCE VM tier (label vm, minutes under emulation) runs once, in the release pass.
HWLOC_PLUGINS_PATH=/nonexistent BCCL_SIM_MAX_RANKS=9 LSAN_OPTIONS=suppressions=$root/tests/lsan.supp \
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  run_suite asan+ubsan build-asan -LE "slow|algo|vm"

# Without UCX: its memory hooks (ucm) crash ThreadSanitizer's runtime at start-up.
"$root/scripts/build.sh" build-tsan -DBCCL_SANITIZE=thread -DBCCL_BUILD_BENCH=OFF -DBCCL_BUILD_EXAMPLES=OFF \
  -DBCCL_WITH_UCX=OFF
BCCL_SIM_MAX_RANKS=5 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
  run_suite tsan build-tsan -L "threads|unit" -LE "slow|algo|ucx"

echo "=== all suites done in $(( $(date +%s) - start )) s: $([ $status -eq 0 ] && echo PASSED || echo FAILED)"
exit $status
