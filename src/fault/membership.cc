#include "fault/membership.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "core/logging.h"

namespace bccl {
namespace {

struct JoinMsg {
  uint32_t op;
  int32_t flag;
  int32_t color;
  int32_t key;
  uint32_t failedCount;
};

struct ReplyHeader {
  int32_t code;  // bcclResult_t
  int32_t flag;
  int32_t newRank;
  int32_t newNranks;
  uint32_t failedCount;
  uint32_t textBytes;
};

struct Outcome {
  Membership membership;  // rank -1 when this rank gets no communicator
  int flag = 1;
  std::vector<int> failed;
};

struct Joiner {
  int fd = -1;
  JoinMsg msg{};
  PeerInfo info;
};

constexpr int kSliceMs = 20;

Status sendReply(int fd, const ReplyHeader& h, const std::vector<int>& failed,
                 const std::vector<PeerInfo>& group, const std::string& text, Deadline d) {
  BCCL_RETURN_IF_ERROR(sendAll(fd, &h, sizeof(h), d, nullptr));
  std::vector<int32_t> f(failed.begin(), failed.end());
  if (!f.empty())
    BCCL_RETURN_IF_ERROR(sendAll(fd, f.data(), f.size() * sizeof(int32_t), d, nullptr));
  if (!group.empty())
    BCCL_RETURN_IF_ERROR(sendAll(fd, group.data(), group.size() * sizeof(PeerInfo), d, nullptr));
  if (!text.empty()) BCCL_RETURN_IF_ERROR(sendAll(fd, text.data(), text.size(), d, nullptr));
  return Status::ok();
}

// Reads one joiner; false for strangers and stale rounds.
bool admit(Communicator& parent, uint32_t seq, int fd, Joiner* out, std::vector<int>* theirFailed) {
  Deadline d = Deadline::afterMs(2000);
  Hello h;
  if (!recvAll(fd, &h, sizeof(h), d, nullptr).isOk() || h.magic != kHelloMagic ||
      h.kind != ConnKind::kChild || !secretMatches(h, parent.secret()) ||
      h.commId != parent.commId() || h.channel != static_cast<int32_t>(seq) || h.rank < 0 ||
      h.rank >= parent.nranks())
    return false;
  if (!recvAll(fd, &out->msg, sizeof(out->msg), d, nullptr).isOk() ||
      out->msg.failedCount > 1u << 20)
    return false;
  std::vector<int32_t> f(out->msg.failedCount);
  if (!f.empty() && !recvAll(fd, f.data(), f.size() * sizeof(int32_t), d, nullptr).isOk())
    return false;
  if (!recvAll(fd, &out->info, sizeof(PeerInfo), d, nullptr).isOk()) return false;
  theirFailed->assign(f.begin(), f.end());
  out->fd = fd;
  out->info.rank = h.rank;  // parent rank, until the new order is settled
  return true;
}

std::vector<int> knownFailed(Communicator& parent, const std::set<int>& extra) {
  std::set<int> all(extra.begin(), extra.end());
  for (int r : parent.failedRanks()) all.insert(r);
  return std::vector<int>(all.begin(), all.end());
}

// The coordinator: collects every live member's join, settles membership, answers everyone.
StatusOr<Outcome> coordinate(Communicator& parent, uint32_t seq, const ChildRequest& req,
                             const PeerInfo& mine, std::set<int> failed, Deadline deadline) {
  const int me = parent.rank(), n = parent.nranks();
  std::map<int, Joiner> joined;
  joined[me] =
      Joiner{-1, JoinMsg{static_cast<uint32_t>(req.op), req.flag, req.color, req.key, 0}, mine};
  auto dropJoiner = [&](int r) {
    auto it = joined.find(r);
    if (it != joined.end() && it->first != me) {
      if (it->second.fd >= 0) close(it->second.fd);
      joined.erase(it);
    }
  };
  for (;;) {
    for (int r : parent.failedRanks()) failed.insert(r);
    for (int r : failed) dropJoiner(r);
    std::vector<int> missing;
    for (int r = 0; r < n; ++r)
      if (!failed.count(r) && !joined.count(r)) missing.push_back(r);
    if (missing.empty()) break;
    if (deadline.expired()) {
      std::string who;
      for (int r : missing) who += (who.empty() ? "" : ", ") + parent.peerName(r);
      std::string text = "ranks did not join in time: " + who;
      for (auto& kv : joined)
        if (kv.second.fd >= 0) {
          ReplyHeader h{bcclTimeout, 0, -1, 0, 0, static_cast<uint32_t>(text.size())};
          sendReply(kv.second.fd, h, {}, {}, text, Deadline::afterMs(1000));
          close(kv.second.fd);
        }
      return timeoutError(text);
    }
    std::vector<pollfd> fds{{parent.listenFd(), POLLIN, 0}};
    std::vector<int> owners{-1};
    for (auto& kv : joined)
      if (kv.second.fd >= 0) {
        fds.push_back({kv.second.fd, POLLIN, 0});
        owners.push_back(kv.first);
      }
    if (poll(fds.data(), fds.size(), deadline.remainingMs(kSliceMs)) <= 0) continue;
    // A joined member's socket turns readable only when it closes: it died while waiting.
    for (size_t i = 1; i < fds.size(); ++i)
      if (fds[i].revents != 0) {
        failed.insert(owners[i]);
        parent.markFailed(owners[i],
                          parent.peerName(owners[i]) + " failed during a membership change");
      }
    if ((fds[0].revents & POLLIN) == 0) continue;
    StatusOr<int> fd = acceptTcp(parent.listenFd(), Deadline::afterMs(100), nullptr);
    if (!fd.isOk()) continue;
    Joiner j;
    std::vector<int> theirFailed;
    if (!admit(parent, seq, fd.value(), &j, &theirFailed)) {
      close(fd.value());
      continue;
    }
    const int who = j.info.rank;
    std::string refusal;
    if (j.msg.op != static_cast<uint32_t>(req.op))
      refusal = "ranks called different membership operations (shrink, split, agree) at once";
    else if (failed.count(who))
      refusal = parent.peerName(who) + " was excluded from the new communicator";
    if (!refusal.empty()) {
      ReplyHeader h{bcclInvalidUsage, 0, -1, 0, 0, static_cast<uint32_t>(refusal.size())};
      sendReply(j.fd, h, {}, {}, refusal, Deadline::afterMs(1000));
      close(j.fd);
      continue;
    }
    for (int r : theirFailed)
      if (r >= 0 && r < n && r != me) failed.insert(r);
    dropJoiner(who);
    joined[who] = j;
  }

  // Settle: groups (one for shrink and agree, one per color for split), ordered members.
  int flag = 1;
  for (auto& kv : joined) flag = flag && kv.second.msg.flag != 0;
  std::vector<int> failedList(failed.begin(), failed.end());
  std::map<int, std::vector<int>> groups;  // color -> parent ranks in new order
  for (auto& kv : joined) {
    int color = req.op == ChildOp::kSplit ? kv.second.msg.color : 0;
    if (color >= 0) groups[color].push_back(kv.first);
  }
  for (auto& g : groups)
    std::stable_sort(g.second.begin(), g.second.end(), [&](int a, int b) {
      return std::make_pair(joined[a].msg.key, a) < std::make_pair(joined[b].msg.key, b);
    });
  Outcome mineOut;
  Status firstError;
  for (auto& kv : joined) {
    const int color = req.op == ChildOp::kSplit ? kv.second.msg.color : 0;
    std::vector<PeerInfo> table;
    int newRank = -1;
    if (color >= 0 && req.op != ChildOp::kAgree) {
      const std::vector<int>& g = groups[color];
      for (size_t i = 0; i < g.size(); ++i) {
        table.push_back(joined[g[i]].info);
        if (g[i] == kv.first) newRank = static_cast<int>(i);
      }
    }
    if (kv.first == me) {
      mineOut.membership.rank = newRank;
      mineOut.membership.peers = table;
      mineOut.flag = flag;
      mineOut.failed = failedList;
      continue;
    }
    ReplyHeader h{bcclSuccess,
                  flag,
                  newRank,
                  static_cast<int32_t>(table.size()),
                  static_cast<uint32_t>(failedList.size()),
                  0};
    Status st = sendReply(kv.second.fd, h, failedList, table, "", deadline);
    close(kv.second.fd);
    if (!st.isOk() && firstError.isOk())
      firstError = st.withContext("answering " + parent.peerName(kv.first));
  }
  if (!firstError.isOk()) BCCL_WARN("membership change: %s", firstError.message().c_str());
  return mineOut;
}

// A member: sends its join to the coordinator and waits for the answer. Returns kInProgress
// when the coordinator failed meanwhile (the caller retries with the next one).
StatusOr<Outcome> joinCoordinator(Communicator& parent, uint32_t seq, const ChildRequest& req,
                                  const PeerInfo& mine, int root, const std::vector<int>& failed,
                                  Deadline deadline) {
  const Status retry(bcclInProgress, "coordinator failed");
  auto rootFailed = [&] {
    std::vector<int> now = parent.failedRanks();
    return std::find(now.begin(), now.end(), root) != now.end();
  };
  // This rank may have chosen a coordinator that is dead although the news has not reached it
  // yet. Every member listens on the parent's port for as long as the parent lives, so a refused
  // connection means the rank is gone; other retriable errors (unreachable, reset) are retried
  // while watching for the news, until the deadline.
  StatusOr<int> fd = timeoutError("not connected");
  for (int backoffMs = 1;; backoffMs = std::min(2 * backoffMs, kSliceMs)) {
    int err = 0;
    const Deadline slice = Deadline::afterMs(deadline.remainingMs(10 * kSliceMs));
    fd = connectTcpOnce(parent.peer(root).listenAddr, slice, nullptr, nullptr, &err);
    if (fd.isOk()) break;
    if (rootFailed()) return retry;
    const bool sliceEnded = err == 0 && fd.status().code() == bcclTimeout;
    const bool worthRetrying = sliceEnded || (err != 0 && err != ECONNREFUSED);
    if (!worthRetrying || deadline.expired()) {
      parent.markFailed(root, parent.peerName(root) +
                                  (err == ECONNREFUSED ? " refuses connections: it exited "
                                                         "or destroyed its communicator ("
                                                       : " is unreachable (") +
                                  fd.status().message() + ")");
      return retry;
    }
    if (!sliceEnded)
      usleep(static_cast<useconds_t>(std::min(backoffMs, deadline.remainingMs(kSliceMs))) * 1000);
  }
  Hello h;
  h.magic = kHelloMagic;
  h.kind = ConnKind::kChild;
  memcpy(h.secret, parent.secret(), kSecretBytes);
  h.commId = parent.commId();
  h.rank = parent.rank();
  h.nranks = parent.nranks();
  h.channel = static_cast<int32_t>(seq);
  JoinMsg j{static_cast<uint32_t>(req.op), req.flag, req.color, req.key,
            static_cast<uint32_t>(failed.size())};
  std::vector<int32_t> f(failed.begin(), failed.end());
  Status st = sendAll(fd.value(), &h, sizeof(h), deadline, nullptr);
  if (st.isOk()) st = sendAll(fd.value(), &j, sizeof(j), deadline, nullptr);
  if (st.isOk() && !f.empty())
    st = sendAll(fd.value(), f.data(), f.size() * sizeof(int32_t), deadline, nullptr);
  if (st.isOk()) st = sendAll(fd.value(), &mine, sizeof(mine), deadline, nullptr);
  // Wait for the answer in slices, watching for the coordinator's failure. On this machine its
  // process is also looked up: a connection can sit unanswered in a listener's queue (one that
  // outlived it, or a stranger that took its port), and the wait must not outlast the process.
  while (st.isOk()) {
    pollfd p{fd.value(), POLLIN, 0};
    if (poll(&p, 1, deadline.remainingMs(kSliceMs)) > 0) break;
    Status alive = parent.checkPeerAlive(root);
    if (!alive.isOk()) parent.markFailed(root, alive.message());
    if (rootFailed()) {
      close(fd.value());
      return retry;
    }
    if (deadline.expired())
      st = timeoutError("no answer from the coordinator " + parent.peerName(root) +
                        (parent.sharesMachineWith(root) ? " (its process is alive)" : ""));
  }
  ReplyHeader r{};
  if (st.isOk()) st = recvAll(fd.value(), &r, sizeof(r), deadline, nullptr);
  if (!st.isOk()) {
    close(fd.value());
    if (st.code() == bcclTimeout) return st;
    parent.markFailed(root,
                      parent.peerName(root) + " failed while coordinating a membership change");
    return retry;
  }
  Outcome out;
  std::vector<int32_t> failedBack(r.failedCount);
  std::vector<PeerInfo> table(static_cast<size_t>(std::max(0, r.newNranks)));
  std::string text(r.textBytes, '\0');
  if (r.failedCount > 1u << 20 || r.newNranks > 1 << 20 || r.textBytes > 1u << 16)
    st = internalError("malformed answer");
  if (st.isOk() && !failedBack.empty())
    st = recvAll(fd.value(), failedBack.data(), failedBack.size() * sizeof(int32_t), deadline,
                 nullptr);
  if (st.isOk() && !table.empty())
    st = recvAll(fd.value(), table.data(), table.size() * sizeof(PeerInfo), deadline, nullptr);
  if (st.isOk() && !text.empty())
    st = recvAll(fd.value(), &text[0], text.size(), deadline, nullptr);
  close(fd.value());
  if (!st.isOk()) return st.withContext("reading the coordinator's answer");
  if (r.code != bcclSuccess) return Status(static_cast<bcclResult_t>(r.code), text);
  out.membership.rank = r.newRank;
  out.membership.peers = std::move(table);
  out.flag = r.flag;
  out.failed.assign(failedBack.begin(), failedBack.end());
  return out;
}

StatusOr<Outcome> negotiate(Communicator& parent, uint32_t seq, const ChildRequest& req,
                            const PeerInfo& mine, Deadline deadline) {
  std::set<int> extra(req.exclude.begin(), req.exclude.end());
  for (;;) {
    std::vector<int> failed = knownFailed(parent, extra);
    int root = -1;
    for (int r = 0; r < parent.nranks() && root < 0; ++r)
      if (!std::binary_search(failed.begin(), failed.end(), r)) root = r;
    if (root < 0 || std::binary_search(failed.begin(), failed.end(), parent.rank()))
      return invalidUsage("this rank is itself excluded from the new communicator");
    if (root == parent.rank())
      return coordinate(parent, seq, req, mine, std::set<int>(failed.begin(), failed.end()),
                        deadline);
    StatusOr<Outcome> out = joinCoordinator(parent, seq, req, mine, root, failed, deadline);
    if (out.isOk() || out.status().code() != bcclInProgress) return out;
    BCCL_INFO("membership change: coordinator %s failed, trying the next",
              parent.peerName(root).c_str());
    if (deadline.expired())
      return timeoutError("membership change did not settle before the deadline");
  }
}

// Every member derives the same secret for the new communicator from the parent's.
void childSecret(const Communicator& parent, uint32_t seq, int color, uint8_t* out) {
  uint64_t salt[2] = {seq, static_cast<uint64_t>(static_cast<int64_t>(color))};
  uint64_t a = digest64(parent.secret(), kSecretBytes, digest64(salt, sizeof(salt)));
  uint64_t b = digest64(parent.secret(), kSecretBytes, a);
  memcpy(out, &a, 8);
  memcpy(out + 8, &b, 8);
}

}  // namespace

StatusOr<ChildResult> runChildOp(Communicator& parent, const ChildRequest& req,
                                 const CommConfig& config) {
  const uint32_t seq = parent.nextChildSeq();
  const Deadline deadline = Deadline::afterMs(config.timeoutMs);
  ChildResult result;
  Outcome settled;
  auto exchange = [&](const PeerInfo& mine, Deadline) -> StatusOr<Membership> {
    StatusOr<Outcome> out = negotiate(parent, seq, req, mine, deadline);
    if (!out.isOk()) return out.status();
    settled = out.value();
    return settled.membership;
  };
  const bool wantsComm = req.op != ChildOp::kAgree && !(req.op == ChildOp::kSplit && req.color < 0);
  if (wantsComm) {
    uint8_t secret[kSecretBytes];
    childSecret(parent, seq, req.op == ChildOp::kSplit ? req.color : 0, secret);
    StatusOr<std::unique_ptr<Communicator>> comm = Communicator::createFromExchange(
        secret, parent.rank(), parent.peer(parent.rank()).listenAddr, config, exchange,
        &parent.selection());
    if (!comm.isOk()) return comm.status();
    result.comm = std::move(comm.value());
  } else {
    PeerInfo none;
    StatusOr<Membership> m = exchange(none, deadline);
    if (!m.isOk()) return m.status();
  }
  result.agreedFlag = settled.flag;
  result.failed = settled.failed;
  // What the survivors agreed on becomes what this rank knows, too.
  for (int r : result.failed)
    if (r != parent.rank())
      parent.markFailed(r, parent.peerName(r) + " was agreed failed or excluded by the survivors");
  return result;
}

}  // namespace bccl
