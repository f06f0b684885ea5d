// The Python face of the backend: one factory torch.distributed calls through the creator that
// bccl_torch/__init__.py registers. The group is returned as a plain c10d::ProcessGroup, which
// torch's own bindings already know, so no class of ours needs registering with pybind11.
#include <pybind11/chrono.h>
#include <torch/csrc/utils/pybind.h>

#include "process_group_bccl.hpp"

namespace py = pybind11;

PYBIND11_MODULE(_C, m) {
  m.doc() = "bccl's c10d ProcessGroup (use it through torch.distributed after `import bccl_torch`)";
  m.def(
      "create_process_group",
      [](const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
         std::chrono::milliseconds timeout) {
        return c10::intrusive_ptr<c10d::ProcessGroup>(
            c10::make_intrusive<bccl_torch::ProcessGroupBccl>(store, rank, size, timeout));
      },
      py::arg("store"), py::arg("rank"), py::arg("size"), py::arg("timeout"),
      // Construction waits on the store and on every rank's bccl rendezvous: other Python
      // threads (and torch's store server) must run meanwhile.
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "drain_at_exit",
      [](double graceSeconds) {
        bccl_torch::ProcessGroupBccl::drainAll(
            std::chrono::milliseconds(static_cast<int64_t>(graceSeconds * 1000)));
      },
      py::arg("grace_seconds") = 10.0);
  m.def("version", [] {
    int v = 0;
    bcclGetVersion(&v);
    return v;
  });
}
