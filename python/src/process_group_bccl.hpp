// The torch.distributed backend on bccl, declared apart from its Python binding so that the
// binding's translation unit and the implementation's stay two small, separately compiled files.
// Only bccl's public C API is used: the backend is a consumer of the library like any other.
#pragma once

#include <bccl/bccl.h>

#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>
#include <vector>

namespace bccl_torch {

// One collective in flight. torch waits on it (wait/isCompleted, from the base class) or on its
// future (DDP); both are completed by the owning group's completion thread.
class BcclWork : public c10d::Work {
 public:
  BcclWork(int rank, c10d::OpType type, std::vector<at::Tensor> outputs,
           std::vector<at::Tensor> keepAlive, std::function<void()> onSuccess);

  std::vector<at::Tensor> result() override { return outputs_; }
  c10::intrusive_ptr<c10::ivalue::Future> getFuture() override { return future_; }

  // Marks the work done: `error` empty for success, else the text the exception carries.
  void complete(std::string error);

 private:
  std::vector<at::Tensor> outputs_;
  std::vector<at::Tensor> keepAlive_;  // inputs and scratch the stream reads until completion
  std::function<void()> onSuccess_;    // copy-out of scratch into the caller's tensors
  c10::intrusive_ptr<c10::ivalue::Future> future_;
};

class ProcessGroupBccl : public c10d::ProcessGroup {
 public:
  // Collective: every rank of the group constructs it with the same store (torch hands each
  // group its own prefixed store, so the id key below never collides between groups).
  ProcessGroupBccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                   std::chrono::milliseconds timeout);
  ~ProcessGroupBccl() override;

  const std::string getBackendName() const override { return "bccl"; }

  c10::intrusive_ptr<c10d::Work> broadcast(std::vector<at::Tensor>& tensors,
                                           const c10d::BroadcastOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allreduce(std::vector<at::Tensor>& tensors,
                                           const c10d::AllreduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce(std::vector<at::Tensor>& tensors,
                                        const c10d::ReduceOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> allgather(std::vector<std::vector<at::Tensor>>& outputs,
                                           std::vector<at::Tensor>& inputs,
                                           const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _allgather_base(at::Tensor& output, at::Tensor& input,
                                                 const c10d::AllgatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> reduce_scatter(std::vector<at::Tensor>& outputs,
                                                std::vector<std::vector<at::Tensor>>& inputs,
                                                const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> _reduce_scatter_base(
      at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> alltoall_base(at::Tensor& output, at::Tensor& input,
                                               std::vector<int64_t>& outputSplits,
                                               std::vector<int64_t>& inputSplits,
                                               const c10d::AllToAllOptions& opts) override;
  // These three have no bccl collective: each is one bccl group of sends and receives.
  c10::intrusive_ptr<c10d::Work> alltoall(std::vector<at::Tensor>& outputs,
                                          std::vector<at::Tensor>& inputs,
                                          const c10d::AllToAllOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> gather(std::vector<std::vector<at::Tensor>>& outputs,
                                        std::vector<at::Tensor>& inputs,
                                        const c10d::GatherOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> scatter(std::vector<at::Tensor>& outputs,
                                         std::vector<std::vector<at::Tensor>>& inputs,
                                         const c10d::ScatterOptions& opts) override;
  c10::intrusive_ptr<c10d::Work> send(std::vector<at::Tensor>& tensors, int dstRank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> recv(std::vector<at::Tensor>& tensors, int srcRank,
                                      int tag) override;
  c10::intrusive_ptr<c10d::Work> barrier(const c10d::BarrierOptions& opts) override;

  // batch_isend_irecv brackets its ops with these: they become one bccl group, so matching
  // sends and receives cannot deadlock each other.
  void startCoalescing() override;
  void endCoalescing(std::vector<c10::intrusive_ptr<c10d::Work>>& reqs) override;

 private:
  using Issue = std::function<bcclResult_t(bcclComm_t, bcclStream_t)>;
  // Enqueues `issue` on the stream and returns its work; throws at once if bccl refuses it.
  c10::intrusive_ptr<c10d::Work> launch(c10d::OpType type, std::vector<at::Tensor> outputs,
                                        std::vector<at::Tensor> keepAlive, const Issue& issue,
                                        std::function<void()> onSuccess = {});
  // Hands a launched work to the completion thread, or, inside a coalescing block, holds it
  // until the block's bcclGroupEnd has actually enqueued it.
  void track(const c10::intrusive_ptr<BcclWork>& work);
  void trackNow(const c10::intrusive_ptr<BcclWork>& work);
  void watch();  // the completion thread
  // Waits up to `grace` for launched work to complete, then aborts the communicator so that
  // whatever is left fails at once. Leaves the completion thread idle.
  void drain(std::chrono::milliseconds grace);
  bool quiet() const { return pending_.empty() && !completing_; }

 public:
  // At interpreter exit, before Python tears itself down: the completion thread must not run a
  // Python callback or free a Python-owned tensor after that. Drains every live group.
  static void drainAll(std::chrono::milliseconds grace);

 private:
  bcclComm_t comm_ = nullptr;
  bcclStream_t stream_ = nullptr;

  std::mutex mu_;
  std::condition_variable wake_;                      // to the completion thread: work, or stop
  std::condition_variable idle_;                      // from it: a batch is done
  std::deque<c10::intrusive_ptr<BcclWork>> pending_;  // launched, not yet known complete
  bool completing_ = false;                           // the completion thread holds a batch
  std::string broken_;    // first failure seen; every later op fails with it (the comm is unusable)
  bool aborted_ = false;  // comm_ was aborted (and so freed)
  bool stopping_ = false;
  std::thread watcher_;
};

}  // namespace bccl_torch
