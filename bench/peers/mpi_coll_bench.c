/* mpi_coll_bench: one MPI collective at one size, measured as bccl's perf tools measure theirs
 * (warm-ups, barrier, mean time of the timed loop, slowest rank), then checked on every rank with
 * one more call into a poisoned output. Built once per MPI (Open MPI, MPICH).
 *
 *   mpirun -n N mpi_coll_bench LIB allreduce|allgather|reducescatter BYTES WARMUP ITERS [MAX_S]
 *
 * ITERS is an upper bound: with MAX_S, the timed loop is cut to fit MAX_S seconds (peer_iters).
 * Rank 0 prints one RESULT line (see peer_common.h). */
#include <mpi.h>
#include <stdlib.h>

#include "peer_common.h"

static void run(enum peer_coll c, const float* send, float* recv, size_t count) {
  const int n = (int)count; /* sizes here stay far below INT_MAX elements */
  switch (c) {
    case PEER_ALLREDUCE:
      MPI_Allreduce(send, recv, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      break;
    case PEER_ALLGATHER:
      MPI_Allgather(send, n, MPI_FLOAT, recv, n, MPI_FLOAT, MPI_COMM_WORLD);
      break;
    default:
      MPI_Reduce_scatter_block(send, recv, n, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
      break;
  }
}

static void poison(float* p, size_t n) {
  for (size_t i = 0; i < n; ++i) p[i] = PEER_POISON;
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, nranks = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &nranks);
  const enum peer_coll c = argc == 6 || argc == 7 ? peer_parse_coll(argv[2]) : PEER_BAD;
  if (c == PEER_BAD) {
    if (rank == 0)
      fprintf(stderr,
              "usage: %s LIB allreduce|allgather|reducescatter BYTES WARMUP ITERS [MAX_S]\n",
              argv[0]);
    MPI_Abort(MPI_COMM_WORLD, 2);
  }
  const char* lib = argv[1];
  const size_t req = strtoull(argv[3], NULL, 10);
  const int warmup = atoi(argv[4]);
  const int max_iters = atoi(argv[5]) > 0 ? atoi(argv[5]) : 1;
  const double max_s = argc == 7 ? atof(argv[6]) : 0.0;

  const size_t count = peer_count(c, req, nranks);
  const size_t ns = peer_send_elems(c, count, nranks), nr = peer_recv_elems(c, count, nranks);
  float* send = malloc(ns * sizeof(float));
  float* recv = malloc(nr * sizeof(float));
  if (!send || !recv) {
    fprintf(stderr, "# rank %d: out of memory for %zu bytes\n", rank, req);
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  /* Writing both buffers first keeps page faults out of the timed loop. */
  peer_fill(send, ns, rank);
  poison(recv, nr);

  for (int i = 0; i < warmup - 1; ++i) run(c, send, recv, count);
  /* The last warm-up (or a probe without warm-ups) sizes the timed loop; every rank must agree. */
  double probe = MPI_Wtime();
  run(c, send, recv, count);
  probe = MPI_Wtime() - probe;
  MPI_Allreduce(MPI_IN_PLACE, &probe, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  const int iters = peer_iters(max_iters, max_s, probe);
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) run(c, send, recv, count);
  double time_us = (MPI_Wtime() - t0) * 1e6 / iters;

  /* A fresh call into a poisoned output: the timed loop's last result could be a stale copy. */
  poison(recv, nr);
  run(c, send, recv, count);
  long long wrong = peer_check(c, rank, nranks, count, recv);

  MPI_Reduce(rank == 0 ? MPI_IN_PLACE : &time_us, &time_us, 1, MPI_DOUBLE, MPI_MAX, 0,
             MPI_COMM_WORLD);
  MPI_Reduce(rank == 0 ? MPI_IN_PLACE : &wrong, &wrong, 1, MPI_LONG_LONG, MPI_SUM, 0,
             MPI_COMM_WORLD);
  if (rank == 0) peer_print_result(lib, c, nranks, req, count, iters, time_us, wrong);
  free(send);
  free(recv);
  MPI_Finalize();
  return 0;
}
