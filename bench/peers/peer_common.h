/* peer_common.h: what the peer benchmarks (MPI, Gloo) share with each other and with bccl's perf
 * tools: sizes, input values, expected results, bus factors and the RESULT line.
 * Plain C so that mpi_coll_bench.c and gloo_coll_bench.cc both include it. */
#ifndef BCCL_PEER_COMMON_H
#define BCCL_PEER_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <string.h>

enum peer_coll { PEER_ALLREDUCE, PEER_ALLGATHER, PEER_REDUCESCATTER, PEER_BAD };

static inline enum peer_coll peer_parse_coll(const char* s) {
  if (strcmp(s, "allreduce") == 0) return PEER_ALLREDUCE;
  if (strcmp(s, "allgather") == 0) return PEER_ALLGATHER;
  if (strcmp(s, "reducescatter") == 0) return PEER_REDUCESCATTER;
  return PEER_BAD;
}

static inline const char* peer_coll_name(enum peer_coll c) {
  return c == PEER_ALLREDUCE ? "allreduce" : c == PEER_ALLGATHER ? "allgather" : "reducescatter";
}

/* Per-rank element count for a requested size, rounded as bccl's perf tools (and nccl-tests) do:
 * the size is the allreduce buffer, the gathered total or the scattered total. */
static inline size_t peer_count(enum peer_coll c, size_t req_bytes, int nranks) {
  const size_t unit = sizeof(float) * (c == PEER_ALLREDUCE ? 1u : (size_t)nranks);
  const size_t n = req_bytes / unit;
  return n ? n : 1;
}

static inline size_t peer_bytes(enum peer_coll c, size_t count, int nranks) {
  return count * sizeof(float) * (c == PEER_ALLREDUCE ? 1u : (size_t)nranks);
}

static inline double peer_bus_factor(enum peer_coll c, int n) {
  return c == PEER_ALLREDUCE ? 2.0 * (n - 1) / n : (double)(n - 1) / n;
}

/* Input element i of rank r. A hashed byte keeps neighbouring elements distinct, so a misplaced
 * block shows; the 1000*(r+1) term makes every rank's contribution visible in a sum. All values
 * and partial sums are integers below 2^24, so float sums are exact in any order. */
static inline float peer_value(int r, size_t i) {
  const uint32_t h = (uint32_t)((uint32_t)i * 2654435761u) >> 24;
  return (float)((int)h - 128 + 1000 * (r + 1));
}

static inline float peer_sum(int nranks, size_t i) {
  const uint32_t h = (uint32_t)((uint32_t)i * 2654435761u) >> 24;
  return (float)(nranks * ((int)h - 128) + 1000 * nranks * (nranks + 1) / 2);
}

/* Never an expected value (those are all positive), so an element left unwritten is caught. */
#define PEER_POISON (-1.0f)

/* Rank `rank`'s send buffer: count elements (allreduce, allgather) or nranks*count. */
static inline void peer_fill(float* send, size_t elems, int rank) {
  for (size_t i = 0; i < elems; ++i) send[i] = peer_value(rank, i);
}

/* Output element j of rank `rank`. */
static inline float peer_expected(enum peer_coll c, int rank, int nranks, size_t count, size_t j) {
  switch (c) {
    case PEER_ALLREDUCE:
      return peer_sum(nranks, j);
    case PEER_ALLGATHER:
      return peer_value((int)(j / count), j % count);
    default:
      return peer_sum(nranks, (size_t)rank * count + j);
  }
}

/* Counts wrong elements of this rank's output; prints the first few to stderr. */
static inline long long peer_check(enum peer_coll c, int rank, int nranks, size_t count,
                                   const float* out) {
  const size_t n = c == PEER_ALLGATHER ? count * (size_t)nranks : count;
  long long wrong = 0;
  for (size_t j = 0; j < n; ++j) {
    const float e = peer_expected(c, rank, nranks, count, j);
    if (out[j] != e && wrong++ < 3)
      fprintf(stderr, "# rank %d: %s wrong at [%zu]: got %g expected %g\n", rank, peer_coll_name(c),
              j, (double)out[j], (double)e);
  }
  return wrong;
}

/* Elements each rank sends and receives. */
static inline size_t peer_send_elems(enum peer_coll c, size_t count, int nranks) {
  return c == PEER_REDUCESCATTER ? count * (size_t)nranks : count;
}
static inline size_t peer_recv_elems(enum peer_coll c, size_t count, int nranks) {
  return c == PEER_ALLGATHER ? count * (size_t)nranks : count;
}

/* Timed iterations: at most max_iters, fewer when one iteration (probe_s, the slowest rank's
 * last warm-up) says they would take longer than max_seconds (0: no limit), and at least 3 (or
 * max_iters if smaller). A peer that crawls (MPICH oversubscribed) thus finishes with a number
 * instead of running into the script's timeout. */
static inline int peer_iters(int max_iters, double max_seconds, double probe_s) {
  if (max_seconds <= 0 || probe_s <= 0) return max_iters;
  const double fit = max_seconds / probe_s;
  const int floor_iters = max_iters < 3 ? max_iters : 3;
  if (fit >= max_iters) return max_iters;
  return fit < floor_iters ? floor_iters : (int)fit;
}

static inline void peer_print_result(const char* lib, enum peer_coll c, int nranks, size_t req,
                                     size_t count, int iters, double time_us, long long wrong) {
  const size_t bytes = peer_bytes(c, count, nranks);
  const double algbw = time_us > 0 ? (double)bytes / 1e3 / time_us : 0.0;
  printf(
      "RESULT lib=%s coll=%s nranks=%d req=%zu bytes=%zu count=%zu iters=%d time_us=%.2f "
      "algbw=%.3f busbw=%.3f wrong=%lld\n",
      lib, peer_coll_name(c), nranks, req, bytes, count, iters, time_us, algbw,
      algbw * peer_bus_factor(c, nranks), wrong);
  fflush(stdout);
}

#endif
