#include "transport/verbs/verbs_qp.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <random>

#include "core/params.h"

namespace bccl {
namespace {

const IntParam kIbTimeout("BCCL_IB_TIMEOUT", 14,
                          "Verbs QP local ACK timeout exponent: 4.096 us * 2^N before a retry "
                          "(14: 67 ms)");
const IntParam kIbRetryCnt("BCCL_IB_RETRY_CNT", 7,
                           "Verbs QP transport retries before a send fails with RETRY_EXC_ERR");
// RoCE v2 packets are routed; a hop limit of 1 would stop at the first router.
constexpr uint8_t kHopLimit = 64;

Status modifyError(const char* step, const std::string& peerName, ibv_qp* qp, int rc) {
  return systemError("verbs: cannot move QP " + std::to_string(qp->qp_num) + " towards " +
                     peerName + " to " + step + ": " + strerror(rc));
}

}  // namespace

uint32_t randomPsn() {
  static thread_local std::mt19937 gen(std::random_device{}());
  return gen() & 0xFFFFFFu;
}

namespace {

// RESET -> INIT with remote-write access on the port.
int initRcQp(ibv_qp* qp, const VerbsPort& port) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_INIT;
  a.pkey_index = 0;
  a.port_num = static_cast<uint8_t>(port.port);
  a.qp_access_flags = IBV_ACCESS_REMOTE_WRITE | IBV_ACCESS_LOCAL_WRITE;
  return ibv_modify_qp(qp, &a,
                       IBV_QP_STATE | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_ACCESS_FLAGS);
}

}  // namespace

StatusOr<ibv_qp*> createRcQp(const VerbsPort& port, ibv_pd* pd, ibv_cq* cq,
                             const VerbsQpCaps& caps) {
  ibv_qp_init_attr init{};
  init.send_cq = cq;
  init.recv_cq = cq;
  init.qp_type = IBV_QPT_RC;
  init.sq_sig_all = 0;
  init.cap.max_send_wr = caps.sendWr;
  init.cap.max_recv_wr = caps.recvWr;
  init.cap.max_send_sge = 1;
  init.cap.max_recv_sge = 1;
  ibv_qp* qp = ibv_create_qp(pd, &init);
  if (qp == nullptr)
    return systemError("verbs: cannot create a QP on " + port.device + " (" + strerror(errno) +
                       "; " + std::to_string(caps.sendWr) + " send / " +
                       std::to_string(caps.recvWr) + " receive entries)");
  int rc = initRcQp(qp, port);
  if (rc != 0) {
    Status st = modifyError("INIT", "its peer", qp, rc);
    ibv_destroy_qp(qp);
    return st;
  }
  return qp;
}

VerbsAddress addressOf(const VerbsPort& port) {
  VerbsAddress a;
  a.mtu = static_cast<uint32_t>(port.activeMtu);
  a.lid = port.lid;
  a.linkLayer = port.linkLayer;
  a.hasGid = port.gidIndex >= 0 ? 1 : 0;
  memcpy(a.gid, port.gid.raw, sizeof(a.gid));
  return a;
}

Status connectRcQp(ibv_qp* qp, const VerbsPort& port, uint32_t localPsn,
                   const VerbsQpBlob& remoteQp, const std::string& peerName) {
  const VerbsAddress& remote = remoteQp.addr;
  const bool ethernet = port.linkLayer == IBV_LINK_LAYER_ETHERNET;
  if (remote.linkLayer != port.linkLayer)
    return invalidArgument(
        "verbs: " + peerName + "'s port is " +
        (remote.linkLayer == IBV_LINK_LAYER_ETHERNET ? "Ethernet" : "InfiniBand") +
        " but this rank's (" + port.device + ") is not: they cannot connect");
  if (ethernet && (!remote.hasGid || port.gidIndex < 0))
    return invalidArgument("verbs: RoCE needs a GID on both ends (" + peerName + ")");
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RTR;
  // The smaller of the two ports' active MTUs: a larger one would be dropped along the path.
  a.path_mtu = std::min(port.activeMtu, static_cast<ibv_mtu>(remote.mtu));
  a.dest_qp_num = remoteQp.qpn;
  a.rq_psn = remoteQp.psn;
  a.max_dest_rd_atomic = 1;
  a.min_rnr_timer = 12;
  a.ah_attr.port_num = static_cast<uint8_t>(port.port);
  a.ah_attr.dlid = remote.lid;
  a.ah_attr.sl = 0;
  if (remote.hasGid && port.gidIndex >= 0) {
    a.ah_attr.is_global = 1;
    memcpy(a.ah_attr.grh.dgid.raw, remote.gid, sizeof(remote.gid));
    a.ah_attr.grh.sgid_index = static_cast<uint8_t>(port.gidIndex);
    a.ah_attr.grh.hop_limit = kHopLimit;
    a.ah_attr.grh.traffic_class = 0;
  }
  int rc = ibv_modify_qp(qp, &a,
                         IBV_QP_STATE | IBV_QP_AV | IBV_QP_PATH_MTU | IBV_QP_DEST_QPN |
                             IBV_QP_RQ_PSN | IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_MIN_RNR_TIMER);
  if (rc != 0) return modifyError("RTR", peerName, qp, rc);
  ibv_qp_attr s{};
  s.qp_state = IBV_QPS_RTS;
  s.timeout = static_cast<uint8_t>(kIbTimeout.get());
  s.retry_cnt = static_cast<uint8_t>(kIbRetryCnt.get());
  s.rnr_retry = 7;  // "infinite": receive entries are always posted ahead (see the credits)
  s.sq_psn = localPsn;
  s.max_rd_atomic = 1;
  rc = ibv_modify_qp(qp, &s,
                     IBV_QP_STATE | IBV_QP_TIMEOUT | IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY |
                         IBV_QP_SQ_PSN | IBV_QP_MAX_QP_RD_ATOMIC);
  if (rc != 0) return modifyError("RTS", peerName, qp, rc);
  return Status::ok();
}

Status resetRcQp(ibv_qp* qp, const VerbsPort& port, const std::string& peerName) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_RESET;
  int rc = ibv_modify_qp(qp, &a, IBV_QP_STATE);
  if (rc != 0) return modifyError("RESET", peerName, qp, rc);
  rc = initRcQp(qp, port);
  if (rc != 0) return modifyError("INIT", peerName, qp, rc);
  return Status::ok();
}

void errorRcQp(ibv_qp* qp) {
  ibv_qp_attr a{};
  a.qp_state = IBV_QPS_ERR;
  ibv_modify_qp(qp, &a, IBV_QP_STATE);
}

}  // namespace bccl
