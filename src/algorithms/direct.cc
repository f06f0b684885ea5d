#include "algorithms/direct.h"

#include <algorithm>
#include <cstring>
#include <utility>

#include "algorithms/interleaved_copy.h"
#include "algorithms/polite_wait.h"
#include "core/bulk_copy.h"
#include "core/dtype.h"
#include "core/reduce.h"
#include "core/uncached_copy.h"
#include "transport/shm/shm_board.h"

namespace bccl {
namespace {

// Ranks in [from, nranks) that have not posted `seq`, scanning from the first still missing.
class Arrivals {
 public:
  Arrivals(const ShmBoard& board, uint64_t seq) : board_(board), seq_(seq) {}
  bool allFrom(int only = -1) {
    if (only >= 0) return board_.hasPosted(only, seq_);
    while (next_ < board_.nranks() && board_.hasPosted(next_, seq_)) ++next_;
    return next_ == board_.nranks();
  }
  // Whether every rank still missing (from the first, or `only`) runs on another CPU.
  bool missingOnlyElsewhere(const ExecContext& ctx, int only = -1) const {
    const int from = only >= 0 ? only : next_, to = only >= 0 ? only + 1 : board_.nranks();
    for (int r = from; r < to; ++r)
      if (!ctx.runsOnOtherCpu(r) && !board_.hasPosted(r, seq_)) return false;
    return true;
  }
  std::vector<int> missing(int only = -1) const {
    std::vector<int> out;
    for (int r = 0; r < board_.nranks(); ++r)
      if ((only < 0 || r == only) && !board_.hasPosted(r, seq_)) out.push_back(r);
    return out;
  }

 private:
  const ShmBoard& board_;
  uint64_t seq_;
  int next_ = 0;
};

// Waits until every rank (or just `only`) has posted `seq`.
Status awaitPosts(ExecContext* ctx, const ShmBoard& board, uint64_t seq, int only,
                  const char* what) {
  Arrivals arrivals(board, seq);
  return waitPolitely(
      ctx, [&] { return arrivals.allFrom(only); }, [&] { return arrivals.missing(only); },
      [&] { return arrivals.missingOnlyElsewhere(*ctx, only); }, kMaxSleepUs, what,
      board.groupBell());
}

// dst = combination, in rank order, of `count` elements of each rank's source (`sourceOf(r)`).
template <typename SourceOf>
void combineInRankOrder(SourceOf sourceOf, int n, size_t count, const OpArgs& a, char* dst) {
  reduceInto(dst, sourceOf(0), sourceOf(1), count, a.dtype, a.op);
  for (int r = 2; r < n; ++r) reduceInto(dst, dst, sourceOf(r), count, a.dtype, a.op);
  if (a.op == bcclAvg) scaleDivide(dst, dst, count, a.dtype, n);
}

// dst = combination, in rank order, of `a.count` elements at `offset` of every rank's post.
void combineInRankOrder(const ShmBoard& board, uint64_t seq, size_t offset, const OpArgs& a,
                        char* dst) {
  combineInRankOrder([&](int r) { return board.data(r, seq) + offset; }, board.nranks(), a.count, a,
                     dst);
}

// Takes the board's next operation number, once posting into its area is safe: the area of
// seq - 2 is free once everyone posted seq - 1 (shm_board.h).
StatusOr<uint64_t> beginBoardOp(ExecContext* ctx, ShmBoard& board) {
  const uint64_t seq = board.beginOp();
  if (seq > 1) BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq - 1, -1, "the previous operation"));
  return seq;
}

// An allgather of any size, a board area at a time: each round posts the next piece of every
// rank's block and copies the pieces out. Each piece is read from the cache of the CPU that
// wrote it a moment before, and each byte is copied twice (in, out), where a ring copies it
// twice per step it travels (into the next rank's slot, out of it).
//
// The copy in of round k + 1 runs interleaved with the copies out of round k
// (copyInterleaved). Posting round k + 1 into the area of k - 1 is safe once everyone posted k,
// which each did after it finished reading k - 1 (shm_board.h), and each posts k + 1 only
// after reading all of k.
Status runDirectAllGather(ExecContext* ctx, ShmBoard& board, const OpArgs& a) {
  const int me = ctx->rank(), n = board.nranks();
  const size_t bytes = a.count * dtypeSize(a.dtype);
  const size_t piece = directRoundBytes(a, n, board.capacity());
  if (piece == 0) return internalError("direct allgather: no room on the board");
  const char* send = static_cast<const char*>(a.sendbuf);
  char* recv = static_cast<char*>(a.recvbuf);
  const bool inPlace = send == recv + me * bytes;  // my block is where it belongs already
  // An output larger than this rank's share of the cache is not read back from the cache by
  // anyone: written around it, it costs no read for ownership (8 ranks on 2 cores, 64-256 MiB:
  // 1.3-1.5x the busbw of memcpy's stores).
  const bool uncached = directOutputStreams(bytes * n, ctx->cacheBytesPerRank());
  StatusOr<uint64_t> seq = beginBoardOp(ctx, board);
  if (!seq.isOk()) return seq.status();
  board.post(seq.value(), send, std::min(piece, bytes));
  for (size_t off = 0; off < bytes;) {
    const size_t len = std::min(piece, bytes - off);
    const size_t nextOff = off + len, nextLen = std::min(piece, bytes - nextOff);
    BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq.value(), -1, "allgather inputs from"));
    StatusOr<uint64_t> next = nextLen > 0 ? beginBoardOp(ctx, board) : StatusOr<uint64_t>(0);
    if (!next.isOk()) return next.status();
    auto nextIn = [&](int) {
      return CopySpan{const_cast<char*>(board.data(me, next.value())), send + nextOff, nextLen};
    };
    auto outOf = [&](int i) {  // every block but mine in place
      const int r = inPlace && i >= me ? i + 1 : i;
      return CopySpan{recv + r * bytes + off, board.data(r, seq.value()), len};
    };
    copyInterleaved(nextLen > 0 ? 1 : 0, nextIn, inPlace ? n - 1 : n, outOf, uncached);
    if (nextLen > 0) board.post(next.value(), nullptr, 0);
    seq = next;
    off = nextOff;
  }
  return Status::ok();
}

// One reduce-scatter round's posting: this rank copies its piece of every other rank's block
// (`piece(b)`: offset in its input and length) to offset b * stride of its board area and waits
// for everyone's. Its own block's piece it reads in place from its input, so it is not copied,
// unless `copyMine` (its output overlaps it: combining would overwrite it before reading it).
template <typename PieceOf>
StatusOr<uint64_t> postPieces(ExecContext* ctx, ShmBoard& board, const char* send, size_t stride,
                              PieceOf piece, bool copyMine, const char* what) {
  const int me = ctx->rank();
  StatusOr<uint64_t> seq = beginBoardOp(ctx, board);
  if (!seq.isOk()) return seq;
  char* area = const_cast<char*>(board.data(me, seq.value()));
  for (int b = 0; b < board.nranks(); ++b)
    if (b != me || copyMine) copyBulk(area + b * stride, send + piece(b).first, piece(b).second);
  board.post(seq.value(), nullptr, 0);
  BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq.value(), -1, what));
  return seq;
}

// dst = my block's piece of every post of `seq` combined in rank order, mine read at `own`.
void combineMyPieces(const ShmBoard& board, uint64_t seq, int me, const char* own, size_t stride,
                     size_t count, const OpArgs& a, char* dst) {
  auto source = [&](int r) { return r == me ? own : board.data(r, seq) + me * stride; };
  combineInRankOrder(source, board.nranks(), count, a, dst);
}

// A reduce-scatter larger than a board area, in rounds: each posts the next piece of every
// other rank's block (side by side), and each rank combines its own block's pieces into its
// output. Each input byte is copied into the board at most once and read from cache by the one
// rank that reduces it, where the ring moves every block through n - 1 slots.
Status runDirectReduceScatter(ExecContext* ctx, ShmBoard& board, const OpArgs& a) {
  const int me = ctx->rank();
  const size_t es = dtypeSize(a.dtype), bytes = a.count * es;
  const size_t piece = directRoundBytes(a, board.nranks(), board.capacity());
  if (piece == 0) return internalError("direct reduce-scatter: no room on the board");
  const char* send = static_cast<const char*>(a.sendbuf);
  char* recv = static_cast<char*>(a.recvbuf);
  const bool inPlace = recv == send + me * bytes;
  for (size_t off = 0; off < bytes;) {
    const size_t len = std::min(piece, bytes - off);
    auto pieceOf = [&](int b) { return std::make_pair(b * bytes + off, len); };
    StatusOr<uint64_t> seq =
        postPieces(ctx, board, send, len, pieceOf, inPlace, "reduce-scatter inputs from");
    if (!seq.isOk()) return seq.status();
    const char* mine = inPlace ? board.data(me, seq.value()) + me * len : send + me * bytes + off;
    combineMyPieces(board, seq.value(), me, mine, len, len / es, a, recv + off);
    off += len;
  }
  return Status::ok();
}

// Copies `bytes` to an output that nothing reads soon: around the cache when `uncached`.
void copyOut(char* dst, const char* src, size_t bytes, bool uncached) {
  if (uncached)
    copyUncached(dst, src, bytes);
  else
    copyBulk(dst, src, bytes);
}

// An allreduce larger than a board area: a reduce-scatter round then an allgather round over
// the boards, a board area at a time. Each rank posts the pieces the others reduce, reduces its
// own block's piece (its own input read in place) onto its board, and every rank copies the
// reduced pieces out, taking turns with posting the next round's pieces (copyInterleaved).
// Each input byte is read from memory once and each output byte written once, around the cache
// when the output outgrows this rank's share of it. The ring writes its reduced blocks through
// the cache because it sends them on from there, so out of place every output line is read in
// first; and every rank combining every post (one round, not two) does n times the reduction
// work. The next round's pieces go into the area of this round's inputs: everyone posted this
// round's result, so everyone has finished reading them.
Status runDirectAllReduce(ExecContext* ctx, ShmBoard& board, const OpArgs& a) {
  const int me = ctx->rank(), n = board.nranks();
  const size_t es = dtypeSize(a.dtype);
  const size_t stride = directRoundBytes(a, n, board.capacity()) / n;  // one block's piece
  if (stride == 0) return internalError("direct allreduce: no room on the board");
  const char* send = static_cast<const char*>(a.sendbuf);
  char* recv = static_cast<char*>(a.recvbuf);
  // In place, every output line was read in as input a moment before: a normal store hits the
  // cache, where a streaming one would throw the line out first.
  const bool uncached = send != recv && directOutputStreams(a.count * es, ctx->cacheBytesPerRank());
  const size_t perRound = stride / es * n;  // elements one round covers
  // Block b of the round starting at element `first`: its offset and length in bytes.
  auto blockOf = [&](size_t first, int b) {
    const size_t elems = std::min(perRound, a.count - first);
    const size_t at = (first + elems * b / n) * es;
    return std::make_pair(at, (first + elems * (b + 1) / n) * es - at);
  };
  // The pieces of the others' blocks of the round starting at `first`, into area `seq`: the
  // result goes to a board area first, so my own input is never overwritten early.
  auto piecesIn = [&](size_t first, uint64_t seq) {
    return [&, first, seq](int i) {
      const int b = i >= me ? i + 1 : i;
      return CopySpan{const_cast<char*>(board.data(me, seq)) + b * stride,
                      send + blockOf(first, b).first, blockOf(first, b).second};
    };
  };
  StatusOr<uint64_t> in = beginBoardOp(ctx, board);
  if (!in.isOk()) return in.status();
  copySpans(n - 1, piecesIn(0, in.value()));
  board.post(in.value(), nullptr, 0);
  for (size_t first = 0; first < a.count; first += perRound) {
    BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, in.value(), -1, "allreduce inputs from"));
    StatusOr<uint64_t> out = beginBoardOp(ctx, board);  // everyone posted `in`: no wait
    if (!out.isOk()) return out.status();
    char* mine = const_cast<char*>(board.data(me, out.value()));
    const auto myBlock = blockOf(first, me);
    combineMyPieces(board, in.value(), me, send + myBlock.first, stride, myBlock.second / es, a,
                    mine);
    copyOut(recv + myBlock.first, mine, myBlock.second, uncached);
    board.post(out.value(), nullptr, 0);
    BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, out.value(), -1, "allreduce results from"));
    const size_t nextFirst = first + perRound;
    const bool more = nextFirst < a.count;
    StatusOr<uint64_t> next = more ? beginBoardOp(ctx, board) : StatusOr<uint64_t>(0);
    if (!next.isOk()) return next.status();
    auto resultOf = [&](int i) {
      const int r = i >= me ? i + 1 : i;
      return CopySpan{recv + blockOf(first, r).first, board.data(r, out.value()),
                      blockOf(first, r).second};
    };
    copyInterleaved(more ? n - 1 : 0, piecesIn(more ? nextFirst : first, next.value()), n - 1,
                    resultOf, uncached);
    if (!more) break;
    board.post(next.value(), nullptr, 0);
    in = next;
  }
  return Status::ok();
}

Status runDirect(ExecContext* ctx, ShmBoard& board, const OpArgs& a, bool inRounds) {
  if (a.kind == CollKind::kAllGather) return runDirectAllGather(ctx, board, a);
  if (a.kind == CollKind::kAllReduce &&
      (inRounds || directPostBytes(a, board.nranks()) > board.capacity()))
    return runDirectAllReduce(ctx, board, a);
  if (a.kind == CollKind::kReduceScatter && directPostBytes(a, board.nranks()) > board.capacity())
    return runDirectReduceScatter(ctx, board, a);
  const int me = ctx->rank(), n = board.nranks();
  const size_t es = dtypeSize(a.dtype), bytes = a.count * es;
  StatusOr<uint64_t> begun = beginBoardOp(ctx, board);
  if (!begun.isOk()) return begun.status();
  const uint64_t seq = begun.value();
  char* recv = static_cast<char*>(a.recvbuf);
  switch (a.kind) {
    case CollKind::kAllReduce:
      board.post(seq, a.sendbuf, bytes);
      BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq, -1, "allreduce inputs from"));
      combineInRankOrder(board, seq, 0, a, recv);
      return Status::ok();
    case CollKind::kReduceScatter:
      board.post(seq, a.sendbuf, bytes * n);
      BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq, -1, "reduce-scatter inputs from"));
      combineInRankOrder(board, seq, me * bytes, a, recv);
      return Status::ok();
    case CollKind::kReduce:
      board.post(seq, a.sendbuf, bytes);
      if (me != a.root) return Status::ok();
      BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq, -1, "reduce inputs from"));
      combineInRankOrder(board, seq, 0, a, recv);
      return Status::ok();
    case CollKind::kBroadcast:
      if (me == a.root) {
        board.post(seq, a.sendbuf, bytes, /*wakeAlways=*/true);
        if (a.sendbuf != recv) copyBulk(recv, a.sendbuf, bytes);
        return Status::ok();
      }
      BCCL_RETURN_IF_ERROR(awaitPosts(ctx, board, seq, a.root, "the broadcast root"));
      copyBulk(recv, board.data(a.root, seq), bytes);
      board.post(seq, nullptr, 0);  // "done reading": lets the root reuse its area
      return Status::ok();
    case CollKind::kBarrier:
      board.post(seq, nullptr, 0);
      return awaitPosts(ctx, board, seq, -1, "barrier arrivals from");
    default:
      return internalError(std::string("no direct algorithm for ") + collName(a.kind));
  }
}

}  // namespace

size_t directRoundBytes(const OpArgs& a, int nranks, size_t capacity) {
  const size_t es = dtypeSize(a.dtype);
  switch (a.kind) {
    case CollKind::kAllGather:
      return capacity;
    case CollKind::kAllReduce:  // a piece of every block, side by side, as a reduce-scatter's
      return capacity / static_cast<size_t>(std::max(nranks, 1)) / es * es *
             static_cast<size_t>(std::max(nranks, 1));
    case CollKind::kReduceScatter:
      return capacity / static_cast<size_t>(std::max(nranks, 1)) / es * es;
    default:
      return 0;
  }
}

bool directOutputStreams(size_t outputBytes, size_t cacheBytesPerRank) {
  return cacheBytesPerRank > 0 && outputBytes > cacheBytesPerRank;
}

size_t directPostBytes(const OpArgs& a, int nranks) {
  const size_t bytes = a.count * dtypeSize(a.dtype);
  return a.kind == CollKind::kReduceScatter ? bytes * nranks : bytes;
}

Status runDirectPlan(Plan* plan) {
  ExecContext* ctx = plan->ctx;
  Status st = waitPolitely(
      ctx, [&] { return ctx->isTurn(plan->ticket); }, [] { return std::vector<int>{}; }, kTurnNapUs,
      "an earlier operation on this communicator");
  ShmBoard* board = ctx->board();
  if (st.isOk()) st = ctx->health();
  if (st.isOk() && board == nullptr) st = internalError("direct algorithm without a board");
  if (st.isOk()) st = runDirect(ctx, *board, plan->args, plan->compiled->directInRounds);
  plan->status = st;
  if (!st.isOk()) ctx->recordError(st);
  ctx->endTurn(plan->ticket);
  return st;
}

}  // namespace bccl
