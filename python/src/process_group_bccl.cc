// c10d::ProcessGroup on bccl's C API: how torch.distributed's collectives, tensors and Work map
// onto bccl communicators and streams. Every op is enqueued on the group's bccl stream (so the
// Python thread returns at once, as with gloo) and a completion thread per group turns the
// stream's progress into Work/Future completions.
#include "process_group_bccl.hpp"

#include <ATen/core/ivalue.h>
#include <Python.h>

#include <algorithm>
#include <climits>
#include <stdexcept>

namespace bccl_torch {
namespace {

// Inside a torch coalescing block (batch_isend_irecv) bccl only records ops until the outermost
// bcclGroupEnd, which is per thread; so is this.
struct Deferred {
  c10::intrusive_ptr<ProcessGroupBccl> group;
  c10::intrusive_ptr<BcclWork> work;
};
thread_local int tlsCoalescingDepth = 0;
thread_local std::vector<Deferred> tlsDeferred;

// Every live group, for drainAll at exit.
std::mutex registryMu;
std::vector<ProcessGroupBccl*> registry;

// A group that nobody waits on any more is given this long to finish before it is aborted.
constexpr std::chrono::milliseconds kDrainGrace{10000};

// Lets other threads take the GIL while this one blocks, if it holds the GIL. The completion
// thread may need it (dropping the last reference to a tensor Python knows frees its PyObject;
// a Python future callback runs there), and torch may destroy a group with the GIL held.
class WithoutGil {
 public:
  WithoutGil() : saved_(Py_IsInitialized() && PyGILState_Check() ? PyEval_SaveThread() : nullptr) {}
  ~WithoutGil() {
    if (saved_ != nullptr) PyEval_RestoreThread(saved_);
  }
  WithoutGil(const WithoutGil&) = delete;
  WithoutGil& operator=(const WithoutGil&) = delete;

 private:
  PyThreadState* saved_;
};

std::string lastError(bcclResult_t rc) {
  std::string text = bcclGetLastError(nullptr);  // this thread's failed call says what and why
  if (text.empty()) text = bcclGetErrorString(rc);
  return text;
}

[[noreturn]] void fail(const char* what, bcclResult_t rc) {
  throw std::runtime_error(std::string("bccl: ") + what + " failed: " + lastError(rc));
}

void checkTensor(const at::Tensor& t, const char* what) {
  TORCH_CHECK(t.defined(), "bccl: ", what, " is an undefined tensor");
  TORCH_CHECK(t.layout() == at::kStrided, "bccl: ", what, " must be a dense tensor, not ",
              t.layout());
  TORCH_CHECK(t.device().is_cpu(), "bccl: ", what,
              " must be a CPU tensor (bccl moves host memory), but it is on ", t.device());
  TORCH_CHECK(t.is_contiguous(), "bccl: ", what,
              " must be contiguous; call .contiguous() on it first");
}

// The one tensor torch passes in a list (a leftover of multi-GPU-per-process APIs).
at::Tensor& single(std::vector<at::Tensor>& tensors, const char* op) {
  TORCH_CHECK(tensors.size() == 1, "bccl: ", op, " takes exactly one tensor per process, got ",
              tensors.size());
  checkTensor(tensors[0], op);
  return tensors[0];
}

// bool moves as bytes but has no arithmetic bccl could reduce it with.
bcclDataType_t dtypeOf(const at::Tensor& t, bool reduces) {
  switch (t.scalar_type()) {
    case at::kFloat:
      return bcclFloat32;
    case at::kDouble:
      return bcclFloat64;
    case at::kHalf:
      return bcclFloat16;
    case at::kBFloat16:
      return bcclBfloat16;
    case at::kChar:
      return bcclInt8;
    case at::kByte:
      return bcclUint8;
    case at::kInt:
      return bcclInt32;
    case at::kLong:
      return bcclInt64;
    case at::kBool:
      if (!reduces) return bcclUint8;
      break;
    default:
      break;
  }
  TORCH_CHECK(false, "bccl: dtype ", t.scalar_type(),
              " is not supported (float32, float64, float16, bfloat16, int8, uint8, int32, int64",
              reduces ? ")" : ", and bool when nothing is reduced)");
}

bcclRedOp_t redOpOf(const c10d::ReduceOp& op) {
  switch (static_cast<c10d::ReduceOp::RedOpType>(op)) {
    case c10d::ReduceOp::SUM:
      return bcclSum;
    case c10d::ReduceOp::PRODUCT:
      return bcclProd;
    case c10d::ReduceOp::MIN:
      return bcclMin;
    case c10d::ReduceOp::MAX:
      return bcclMax;
    case c10d::ReduceOp::AVG:
      return bcclAvg;
    default:
      TORCH_CHECK(false, "bccl: reduce op ",
                  static_cast<int>(static_cast<c10d::ReduceOp::RedOpType>(op)),
                  " is not supported (SUM, PRODUCT, MIN, MAX and AVG are)");
  }
}

int rootOf(int64_t rootRank, int64_t rootTensor, int size, const char* op) {
  TORCH_CHECK(rootTensor == 0, "bccl: ", op, ": rootTensor must be 0 (one tensor per process)");
  TORCH_CHECK(rootRank >= 0 && rootRank < size, "bccl: ", op, ": root ", rootRank,
              " is not a rank of this group of ", size);
  return static_cast<int>(rootRank);
}

size_t count(const at::Tensor& t) { return static_cast<size_t>(t.numel()); }

// Element counts and offsets of alltoall's per-rank blocks along dim 0.
void splitsOf(const at::Tensor& t, std::vector<int64_t> splits, int size, const char* which,
              std::vector<size_t>* counts, std::vector<size_t>* offsets) {
  const int64_t rows = t.dim() == 0 ? 1 : t.size(0);
  const int64_t row = rows == 0 ? 0 : t.numel() / rows;
  if (splits.empty()) {
    TORCH_CHECK(rows % size == 0, "bccl: alltoall: ", which, " dim 0 (", rows,
                ") does not divide by the group size ", size);
    splits.assign(size, rows / size);
  }
  TORCH_CHECK(static_cast<int>(splits.size()) == size, "bccl: alltoall: ", which, " has ",
              splits.size(), " split sizes for a group of ", size);
  int64_t sum = 0;
  for (int64_t s : splits) {
    TORCH_CHECK(s >= 0, "bccl: alltoall: negative split size");
    sum += s;
  }
  TORCH_CHECK(sum == rows, "bccl: alltoall: ", which, " split sizes add up to ", sum,
              ", not dim 0 = ", rows);
  counts->clear();
  offsets->clear();
  size_t at = 0;
  for (int64_t s : splits) {
    counts->push_back(static_cast<size_t>(s * row));
    offsets->push_back(at);
    at += static_cast<size_t>(s * row);
  }
}

// One bccl group of point-to-point transfers, which bccl runs as a single exchange.
struct Transfer {
  bool send;
  int peer;
  void* data;
  size_t count;
};
bcclResult_t exchange(const std::vector<Transfer>& transfers, bcclDataType_t dt, bcclComm_t c,
                      bcclStream_t s) {
  bcclResult_t rc = bcclGroupStart();
  if (rc != bcclSuccess) return rc;
  for (const Transfer& t : transfers) {
    if (t.count == 0) continue;  // both sides skip an empty block
    rc = t.send ? bcclSend(t.data, t.count, dt, t.peer, c, s)
                : bcclRecv(t.data, t.count, dt, t.peer, c, s);
    if (rc != bcclSuccess) break;
  }
  bcclResult_t end = bcclGroupEnd();  // always closes the group, even after a refused op
  return rc != bcclSuccess ? rc : end;
}

// A list of `n` tensors, each checked and matching `like` in dtype and size.
void checkList(const std::vector<at::Tensor>& list, size_t n, const at::Tensor& like,
               const char* what) {
  TORCH_CHECK(list.size() == n, "bccl: ", what, " needs ", n, " tensors, got ", list.size());
  for (const at::Tensor& t : list) {
    checkTensor(t, what);
    TORCH_CHECK(t.scalar_type() == like.scalar_type() && t.numel() == like.numel(), "bccl: ", what,
                " tensors must all have the dtype and size of ", like.scalar_type(), "[",
                like.numel(), "]");
  }
}

}  // namespace

// ---- Work ----------------------------------------------------------------------------------

BcclWork::BcclWork(int rank, c10d::OpType type, std::vector<at::Tensor> outputs,
                   std::vector<at::Tensor> keepAlive, std::function<void()> onSuccess)
    : c10d::Work(rank, type),
      outputs_(std::move(outputs)),
      keepAlive_(std::move(keepAlive)),
      onSuccess_(std::move(onSuccess)),
      future_(
          c10::make_intrusive<c10::ivalue::Future>(c10::ListType::create(c10::TensorType::get()))) {
}

void BcclWork::complete(std::string error) {
  if (error.empty() && onSuccess_) {
    try {
      onSuccess_();
    } catch (const std::exception& e) {
      error = std::string("bccl: copying the result out failed: ") + e.what();
    }
  }
  onSuccess_ = nullptr;
  keepAlive_.clear();
  if (error.empty()) {
    finish();
    future_->markCompleted(c10::IValue(outputs_));
  } else {
    auto failure = std::make_exception_ptr(std::runtime_error(error));
    finish(failure);
    future_->setError(failure);
  }
}

// ---- construction --------------------------------------------------------------------------

ProcessGroupBccl::ProcessGroupBccl(const c10::intrusive_ptr<c10d::Store>& store, int rank, int size,
                                   std::chrono::milliseconds timeout)
    : c10d::ProcessGroup(rank, size) {
  // The store is only the way the id travels; bccl's own rendezvous does the rest.
  static const std::string kIdKey = "bccl/unique_id";
  bcclUniqueId id;
  if (rank == 0) {
    bcclResult_t rc = bcclGetUniqueId(&id);
    if (rc != bcclSuccess) fail("bcclGetUniqueId", rc);
    char text[BCCL_UNIQUE_ID_STRING_BYTES];
    rc = bcclUniqueIdToString(&id, text, sizeof text);
    if (rc != bcclSuccess) fail("bcclUniqueIdToString", rc);
    std::string s(text);
    store->set(kIdKey, std::vector<uint8_t>(s.begin(), s.end()));
  } else {
    std::vector<uint8_t> bytes =
        store->get(kIdKey);  // waits for rank 0, bounded by the store's timeout
    std::string s(bytes.begin(), bytes.end());
    bcclResult_t rc = bcclUniqueIdFromString(s.c_str(), &id);
    if (rc != bcclSuccess) fail("bcclUniqueIdFromString", rc);
  }
  bcclConfig_t config = BCCL_CONFIG_INITIALIZER;
  // torch's timeout (30 min by default) bounds every bccl wait; a dead peer is reported sooner
  // by bccl's failure detector, not by this deadline.
  if (timeout.count() > 0)
    config.timeoutMs = static_cast<int>(std::min<int64_t>(timeout.count(), INT_MAX));
  bcclResult_t rc = bcclCommInitRankConfig(&comm_, size, id, rank, &config);
  if (rc != bcclSuccess) fail("bcclCommInitRankConfig", rc);
  rc = bcclStreamCreate(&stream_);
  if (rc != bcclSuccess) {
    bcclCommDestroy(comm_);
    fail("bcclStreamCreate", rc);
  }
  init();  // torch's logging set-up; before the thread, so nothing after it can throw
  watcher_ = std::thread([this] { watch(); });
  std::lock_guard<std::mutex> lock(registryMu);
  registry.push_back(this);
}

ProcessGroupBccl::~ProcessGroupBccl() {
  WithoutGil nogil;
  {
    std::lock_guard<std::mutex> lock(registryMu);
    registry.erase(std::find(registry.begin(), registry.end(), this));
  }
  // Work nobody waited for may wait on peers that are gone: it gets a grace period, then an
  // abort, rather than the whole timeout. A clean group says goodbye instead (bcclCommDestroy),
  // so that its peers do not take its exit for a failure.
  drain(kDrainGrace);
  bool abort;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    abort = !aborted_ && !broken_.empty();
  }
  wake_.notify_all();
  if (abort) bcclCommAbort(comm_);
  watcher_.join();
  bcclStreamDestroy(stream_);
  if (!abort && !aborted_) bcclCommDestroy(comm_);
}

void ProcessGroupBccl::drain(std::chrono::milliseconds grace) {
  std::unique_lock<std::mutex> lock(mu_);
  if (idle_.wait_for(lock, grace, [this] { return quiet(); })) return;
  if (!aborted_) {
    aborted_ = true;  // from here on nothing touches comm_: launch refuses, the watcher skips it
    if (broken_.empty()) broken_ = "bccl: the process group was aborted with work still pending";
    lock.unlock();
    bcclCommAbort(comm_);
    lock.lock();
  }
  idle_.wait(lock, [this] { return quiet(); });  // prompt: aborted work fails at once
}

void ProcessGroupBccl::drainAll(std::chrono::milliseconds grace) {
  WithoutGil nogil;
  std::lock_guard<std::mutex> lock(registryMu);
  for (ProcessGroupBccl* group : registry) group->drain(grace);
}

// ---- the completion thread -----------------------------------------------------------------

void ProcessGroupBccl::watch() {
  at::NoGradGuard noGrad;  // copy-outs into tensors that require grad are not autograd ops
  std::unique_lock<std::mutex> lock(mu_);
  for (;;) {
    wake_.wait(lock, [this] { return stopping_ || !pending_.empty(); });
    if (pending_.empty()) return;  // stopping, and nothing left to complete
    // Everything taken here was enqueued before this point, so once the stream has drained
    // (bcclStreamSynchronize), all of it has run.
    std::deque<c10::intrusive_ptr<BcclWork>> batch;
    batch.swap(pending_);
    completing_ = true;
    lock.unlock();
    bcclResult_t rc = bcclStreamSynchronize(stream_);  // the stream outlives the comm: safe
    lock.lock();
    std::string failure;
    if (rc != bcclSuccess) {
      failure = "bccl: collective failed: " + lastError(rc);
    } else if (!broken_.empty()) {
      failure = broken_;
    } else if (!aborted_) {  // under mu_, so an abort cannot free comm_ meanwhile
      bcclResult_t async = bcclSuccess;
      bcclCommGetAsyncError(comm_, &async);
      if (async != bcclSuccess)
        failure = std::string("bccl: communicator failed: ") + bcclGetLastError(comm_);
    }
    // A failed stream cannot say which of its ops failed, and the communicator is left in an
    // unknown state: fail everything after it too, rather than report success wrongly.
    if (!failure.empty() && broken_.empty()) broken_ = failure;
    lock.unlock();
    for (auto& work : batch) work->complete(failure);
    batch.clear();
    lock.lock();
    completing_ = false;
    idle_.notify_all();
  }
}

void ProcessGroupBccl::trackNow(const c10::intrusive_ptr<BcclWork>& work) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    pending_.push_back(work);
  }
  wake_.notify_one();
}

void ProcessGroupBccl::track(const c10::intrusive_ptr<BcclWork>& work) {
  if (tlsCoalescingDepth > 0) {
    tlsDeferred.push_back(
        {c10::intrusive_ptr<ProcessGroupBccl>::unsafe_reclaim_from_nonowning(this), work});
  } else {
    trackNow(work);
  }
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::launch(c10d::OpType type,
                                                        std::vector<at::Tensor> outputs,
                                                        std::vector<at::Tensor> keepAlive,
                                                        const Issue& issue,
                                                        std::function<void()> onSuccess) {
  auto work = c10::make_intrusive<BcclWork>(rank_, type, std::move(outputs), std::move(keepAlive),
                                            std::move(onSuccess));
  {
    std::lock_guard<std::mutex> lock(mu_);
    TORCH_CHECK(broken_.empty(), broken_, " (this process group is unusable after that)");
    bcclResult_t rc = issue(comm_, stream_);
    if (rc != bcclSuccess) {
      throw std::runtime_error("bccl: " + c10d::opTypeToString(type) + " failed: " + lastError(rc));
    }
    if (tlsCoalescingDepth == 0) {
      pending_.push_back(work);
      wake_.notify_one();
      return work;
    }
  }
  track(work);
  return work;
}

// ---- collectives ---------------------------------------------------------------------------

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::broadcast(std::vector<at::Tensor>& tensors,
                                                           const c10d::BroadcastOptions& opts) {
  at::Tensor& t = single(tensors, "broadcast");
  const int root = rootOf(opts.rootRank, opts.rootTensor, size_, "broadcast");
  const bcclDataType_t dt = dtypeOf(t, false);
  return launch(c10d::OpType::BROADCAST, {t}, {}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclBroadcast(t.data_ptr(), t.data_ptr(), count(t), dt, root, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::allreduce(std::vector<at::Tensor>& tensors,
                                                           const c10d::AllreduceOptions& opts) {
  at::Tensor& t = single(tensors, "allreduce");
  const bcclDataType_t dt = dtypeOf(t, true);
  const bcclRedOp_t op = redOpOf(opts.reduceOp);
  return launch(c10d::OpType::ALLREDUCE, {t}, {}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclAllReduce(t.data_ptr(), t.data_ptr(), count(t), dt, op, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::reduce(std::vector<at::Tensor>& tensors,
                                                        const c10d::ReduceOptions& opts) {
  at::Tensor& t = single(tensors, "reduce");
  const int root = rootOf(opts.rootRank, opts.rootTensor, size_, "reduce");
  const bcclDataType_t dt = dtypeOf(t, true);
  const bcclRedOp_t op = redOpOf(opts.reduceOp);
  return launch(c10d::OpType::REDUCE, {t}, {}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclReduce(t.data_ptr(), t.data_ptr(), count(t), dt, op, root, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::allgather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::AllgatherOptions& /*opts*/) {
  at::Tensor& in = single(inputs, "allgather input");
  TORCH_CHECK(outputs.size() == 1 && static_cast<int>(outputs[0].size()) == size_,
              "bccl: allgather needs one list of ", size_, " output tensors");
  for (const at::Tensor& o : outputs[0]) {
    checkTensor(o, "allgather output");
    TORCH_CHECK(o.numel() == in.numel() && o.scalar_type() == in.scalar_type(),
                "bccl: allgather outputs must match the input's size and dtype");
  }
  const bcclDataType_t dt = dtypeOf(in, false);
  // bccl gathers into one buffer; the caller's separate tensors are filled from it on completion.
  at::Tensor flat = at::empty({static_cast<int64_t>(size_) * in.numel()}, in.options());
  std::vector<at::Tensor> outs = outputs[0];
  const int64_t n = in.numel();
  auto copyOut = [outs, flat, n]() {
    for (size_t i = 0; i < outs.size(); ++i)
      outs[i].copy_(flat.narrow(0, static_cast<int64_t>(i) * n, n).view(outs[i].sizes()));
  };
  return launch(
      c10d::OpType::ALLGATHER, outs, {in, flat},
      [&](bcclComm_t c, bcclStream_t s) {
        return bcclAllGather(in.data_ptr(), flat.data_ptr(), count(in), dt, c, s);
      },
      copyOut);
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::_allgather_base(
    at::Tensor& output, at::Tensor& input, const c10d::AllgatherOptions& /*opts*/) {
  checkTensor(input, "all_gather_into_tensor input");
  checkTensor(output, "all_gather_into_tensor output");
  TORCH_CHECK(output.scalar_type() == input.scalar_type(),
              "bccl: all_gather_into_tensor: dtypes differ");
  TORCH_CHECK(output.numel() == input.numel() * size_,
              "bccl: all_gather_into_tensor: the output must have ", size_, " x the input's ",
              input.numel(), " elements, not ", output.numel());
  const bcclDataType_t dt = dtypeOf(input, false);
  return launch(c10d::OpType::_ALLGATHER_BASE, {output}, {input},
                [&](bcclComm_t c, bcclStream_t s) {
                  return bcclAllGather(input.data_ptr(), output.data_ptr(), count(input), dt, c, s);
                });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::reduce_scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ReduceScatterOptions& opts) {
  at::Tensor& out = single(outputs, "reduce_scatter output");
  TORCH_CHECK(inputs.size() == 1 && static_cast<int>(inputs[0].size()) == size_,
              "bccl: reduce_scatter needs one list of ", size_, " input tensors");
  std::vector<at::Tensor> flatInputs;
  for (const at::Tensor& i : inputs[0]) {
    checkTensor(i, "reduce_scatter input");
    TORCH_CHECK(i.numel() == out.numel() && i.scalar_type() == out.scalar_type(),
                "bccl: reduce_scatter inputs must match the output's size and dtype");
    flatInputs.push_back(i.view(-1));
  }
  const bcclDataType_t dt = dtypeOf(out, true);
  const bcclRedOp_t op = redOpOf(opts.reduceOp);
  at::Tensor flat;
  {
    at::NoGradGuard noGrad;
    flat = at::cat(flatInputs);  // bccl reads one buffer; the inputs are ready now, so pack now
  }
  return launch(c10d::OpType::REDUCE_SCATTER, {out}, {flat}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclReduceScatter(flat.data_ptr(), out.data_ptr(), count(out), dt, op, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::_reduce_scatter_base(
    at::Tensor& output, at::Tensor& input, const c10d::ReduceScatterOptions& opts) {
  checkTensor(input, "reduce_scatter_tensor input");
  checkTensor(output, "reduce_scatter_tensor output");
  TORCH_CHECK(output.scalar_type() == input.scalar_type(),
              "bccl: reduce_scatter_tensor: dtypes differ");
  TORCH_CHECK(input.numel() == output.numel() * size_,
              "bccl: reduce_scatter_tensor: the input must have ", size_, " x the output's ",
              output.numel(), " elements, not ", input.numel());
  const bcclDataType_t dt = dtypeOf(input, true);
  const bcclRedOp_t op = redOpOf(opts.reduceOp);
  return launch(
      c10d::OpType::_REDUCE_SCATTER_BASE, {output}, {input}, [&](bcclComm_t c, bcclStream_t s) {
        return bcclReduceScatter(input.data_ptr(), output.data_ptr(), count(output), dt, op, c, s);
      });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::alltoall_base(
    at::Tensor& output, at::Tensor& input, std::vector<int64_t>& outputSplits,
    std::vector<int64_t>& inputSplits, const c10d::AllToAllOptions& /*opts*/) {
  checkTensor(input, "all_to_all_single input");
  checkTensor(output, "all_to_all_single output");
  TORCH_CHECK(output.scalar_type() == input.scalar_type(),
              "bccl: all_to_all_single: dtypes differ");
  const bcclDataType_t dt = dtypeOf(input, false);
  std::vector<size_t> inCounts, inOffsets, outCounts, outOffsets;
  splitsOf(input, inputSplits, size_, "input", &inCounts, &inOffsets);
  splitsOf(output, outputSplits, size_, "output", &outCounts, &outOffsets);
  const bool even =
      std::all_of(inCounts.begin(), inCounts.end(), [&](size_t n) { return n == inCounts[0]; }) &&
      outCounts == inCounts;
  if (even) {
    return launch(c10d::OpType::ALLTOALL_BASE, {output}, {input},
                  [&](bcclComm_t c, bcclStream_t s) {
                    return bcclAllToAll(input.data_ptr(), output.data_ptr(), inCounts[0], dt, c, s);
                  });
  }
  // Uneven splits: a block to and from every rank, in one group.
  const size_t elem = input.element_size();
  std::vector<Transfer> transfers;
  for (int p = 0; p < size_; ++p) {
    transfers.push_back(
        {true, p, static_cast<char*>(input.data_ptr()) + inOffsets[p] * elem, inCounts[p]});
    transfers.push_back(
        {false, p, static_cast<char*>(output.data_ptr()) + outOffsets[p] * elem, outCounts[p]});
  }
  return launch(c10d::OpType::ALLTOALL_BASE, {output}, {input},
                [&](bcclComm_t c, bcclStream_t s) { return exchange(transfers, dt, c, s); });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::alltoall(std::vector<at::Tensor>& outputs,
                                                          std::vector<at::Tensor>& inputs,
                                                          const c10d::AllToAllOptions& /*opts*/) {
  TORCH_CHECK(!inputs.empty(), "bccl: all_to_all needs ", size_, " input tensors");
  checkTensor(inputs[0], "all_to_all input");
  const bcclDataType_t dt = dtypeOf(inputs[0], false);
  TORCH_CHECK(static_cast<int>(inputs.size()) == size_ && static_cast<int>(outputs.size()) == size_,
              "bccl: all_to_all needs ", size_, " input and ", size_, " output tensors");
  std::vector<Transfer> transfers;
  for (int p = 0; p < size_; ++p) {
    checkTensor(inputs[p], "all_to_all input");
    checkTensor(outputs[p], "all_to_all output");
    TORCH_CHECK(inputs[p].scalar_type() == inputs[0].scalar_type() &&
                    outputs[p].scalar_type() == inputs[0].scalar_type(),
                "bccl: all_to_all tensors must share one dtype");
    transfers.push_back({true, p, inputs[p].data_ptr(), count(inputs[p])});
    transfers.push_back({false, p, outputs[p].data_ptr(), count(outputs[p])});
  }
  return launch(c10d::OpType::ALLTOALL, outputs, inputs,
                [&](bcclComm_t c, bcclStream_t s) { return exchange(transfers, dt, c, s); });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::gather(
    std::vector<std::vector<at::Tensor>>& outputs, std::vector<at::Tensor>& inputs,
    const c10d::GatherOptions& opts) {
  at::Tensor& in = single(inputs, "gather input");
  const int root = rootOf(opts.rootRank, 0, size_, "gather");
  const bcclDataType_t dt = dtypeOf(in, false);
  std::vector<Transfer> transfers{{true, root, in.data_ptr(), count(in)}};
  std::vector<at::Tensor> outs;
  if (rank_ == root) {
    TORCH_CHECK(outputs.size() == 1, "bccl: gather needs one list of output tensors on the root");
    checkList(outputs[0], size_, in, "gather output");
    outs = outputs[0];
    for (int p = 0; p < size_; ++p)
      transfers.push_back({false, p, outs[p].data_ptr(), count(outs[p])});
  } else {
    TORCH_CHECK(outputs.empty() || (outputs.size() == 1 && outputs[0].empty()),
                "bccl: gather takes output tensors on the root only");
  }
  return launch(c10d::OpType::GATHER, outs, {in},
                [&](bcclComm_t c, bcclStream_t s) { return exchange(transfers, dt, c, s); });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::scatter(
    std::vector<at::Tensor>& outputs, std::vector<std::vector<at::Tensor>>& inputs,
    const c10d::ScatterOptions& opts) {
  at::Tensor& out = single(outputs, "scatter output");
  const int root = rootOf(opts.rootRank, 0, size_, "scatter");
  const bcclDataType_t dt = dtypeOf(out, false);
  std::vector<Transfer> transfers{{false, root, out.data_ptr(), count(out)}};
  std::vector<at::Tensor> ins;
  if (rank_ == root) {
    TORCH_CHECK(inputs.size() == 1, "bccl: scatter needs one list of input tensors on the root");
    checkList(inputs[0], size_, out, "scatter input");
    ins = inputs[0];
    for (int p = 0; p < size_; ++p)
      transfers.push_back({true, p, ins[p].data_ptr(), count(ins[p])});
  } else {
    TORCH_CHECK(inputs.empty() || (inputs.size() == 1 && inputs[0].empty()),
                "bccl: scatter takes input tensors on the root only");
  }
  return launch(c10d::OpType::SCATTER, {out}, ins,
                [&](bcclComm_t c, bcclStream_t s) { return exchange(transfers, dt, c, s); });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::send(std::vector<at::Tensor>& tensors, int dstRank,
                                                      int /*tag*/) {
  // bccl has no tags: messages between two ranks arrive in the order they were sent.
  at::Tensor& t = single(tensors, "send");
  const bcclDataType_t dt = dtypeOf(t, false);
  return launch(c10d::OpType::SEND, {t}, {}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclSend(t.data_ptr(), count(t), dt, dstRank, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::recv(std::vector<at::Tensor>& tensors, int srcRank,
                                                      int /*tag*/) {
  at::Tensor& t = single(tensors, "recv");
  const bcclDataType_t dt = dtypeOf(t, false);
  return launch(c10d::OpType::RECV, {t}, {}, [&](bcclComm_t c, bcclStream_t s) {
    return bcclRecv(t.data_ptr(), count(t), dt, srcRank, c, s);
  });
}

c10::intrusive_ptr<c10d::Work> ProcessGroupBccl::barrier(const c10d::BarrierOptions& /*opts*/) {
  return launch(c10d::OpType::BARRIER, {}, {},
                [](bcclComm_t c, bcclStream_t s) { return bcclBarrier(c, s); });
}

// ---- coalescing ----------------------------------------------------------------------------

void ProcessGroupBccl::startCoalescing() {
  bcclResult_t rc = bcclGroupStart();
  if (rc != bcclSuccess) fail("bcclGroupStart", rc);
  ++tlsCoalescingDepth;
}

void ProcessGroupBccl::endCoalescing(std::vector<c10::intrusive_ptr<c10d::Work>>& /*reqs*/) {
  TORCH_CHECK(tlsCoalescingDepth > 0, "bccl: endCoalescing without startCoalescing");
  bcclResult_t rc = bcclGroupEnd();
  if (--tlsCoalescingDepth > 0) {
    if (rc != bcclSuccess) fail("bcclGroupEnd", rc);
    return;
  }
  std::vector<Deferred> deferred;
  deferred.swap(tlsDeferred);
  if (rc != bcclSuccess) {
    // Nothing of the block was enqueued: its works fail, and so does this call.
    std::string why = "bccl: a coalesced block failed: " + lastError(rc);
    for (Deferred& d : deferred) d.work->complete(why);
    throw std::runtime_error(why);
  }
  for (Deferred& d : deferred) d.group->trackNow(d.work);
}

}  // namespace bccl_torch
