#!/usr/bin/env bash
# run_in_softroce_vm.sh BUILD_DIR: the verbs tests on a real RDMA stack. This machine's kernel
# has no RDMA, so one VM with soft-RoCE (softroce_vm.sh) boots once and runs the whole verbs
# tier (in_vm_tests.sh) inside, on the binaries in BUILD_DIR. CTest runs it as verbs_softroce_vm.
#
# Exit status: 0 all passed; 77 (CTest: skipped) when this machine cannot run the VM, with the
# reason printed (no qemu, no guest kernel or rdma_rxe module, no rxe provider, or a build
# without verbs); otherwise failure. SOFTROCE_VM_TIMEOUT (seconds, default 1500) bounds the VM.
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "${1:?usage: run_in_softroce_vm.sh BUILD_DIR}" && pwd)
for exe in tests/unit_verbs_transport_test tests/unit_verbs_failover_test \
           tests/unit_verbs_errors_test tests/bccl_collectives_test tests/bccl_process_test \
           tests/bccl_mixed_transport_test tests/unit_reduce_test bccl_info bcclrun \
           all_reduce_perf all_gather_perf; do
  if [ ! -x "$build/$exe" ]; then
    if [ "$exe" = tests/unit_verbs_transport_test ]; then
      echo "run_in_softroce_vm: SKIP: $build was configured without verbs (no libibverbs-dev)"
      exit 77
    fi
    echo "run_in_softroce_vm: $build/$exe is missing: build the tests first" >&2
    exit 1
  fi
done
# The shared directory is where the guest may write; the build tree is the natural one. The
# guest sees the host's files read-only except that it mounts its own /tmp, so a source tree
# under /tmp (a CI clone, say) is hidden there: the in-VM script travels in the build tree.
cd "$build" || exit 1
cp "$here/in_vm_tests.sh" "$build/verbs_in_vm_tests.sh" || exit 1
"$here/softroce_vm.sh" --timeout "${SOFTROCE_VM_TIMEOUT:-1500}" -- bash "$build/verbs_in_vm_tests.sh" "$build"
rc=$?
case $rc in
  0) echo "run_in_softroce_vm: all verbs tests passed on soft-RoCE" ;;
  77) ;;  # softroce_vm.sh said why
  124) echo "run_in_softroce_vm: the VM timed out" ;;
  125) echo "run_in_softroce_vm: the VM failed before the tests reported" ;;
  *) echo "run_in_softroce_vm: verbs tests FAILED (status $rc)" ;;
esac
exit $rc
