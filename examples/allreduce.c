/*
 * The smallest complete bccl program, and the one to copy: every rank sums a gradient-sized
 * buffer with every other rank, as data-parallel training does after each backward pass.
 * It is plain C99 to show that the public header needs nothing else.
 *
 *   bcclrun -n 4 ./example_allreduce [COUNT]
 */
#define _POSIX_C_SOURCE 199309L /* clock_gettime */

#include <bccl/bccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static double nowSeconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* The result code says what kind of failure; the last-error text says what actually happened. */
static int report(const char* what, bcclResult_t res, bcclComm_t comm) {
  fprintf(stderr, "%s failed: %s: %s\n", what, bcclGetErrorString(res), bcclGetLastError(comm));
  return 1;
}

/* Returns the index of the first element that is not `expected`, or `count` if none. */
static size_t firstMismatch(const float* data, size_t count, float expected) {
  size_t i;
  for (i = 0; i < count; ++i) {
    if (data[i] != expected) break;
  }
  return i;
}

int main(int argc, char** argv) {
  /* 4M floats (16 MiB) is a typical gradient bucket. */
  size_t count = argc > 1 ? (size_t)strtoull(argv[1], NULL, 10) : (size_t)4 << 20;
  if (count == 0) {
    fprintf(stderr, "usage: %s [COUNT >= 1]\n", argv[0]);
    return 2;
  }
  bcclConfig_t config = BCCL_CONFIG_INITIALIZER;
  bcclComm_t comm = NULL;
  bcclResult_t res = bcclCommInitFromEnv(&comm, &config);
  if (res != bcclSuccess) return report("bcclCommInitFromEnv", res, NULL);

  int rank = 0, nranks = 0;
  bcclCommUserRank(comm, &rank);
  bcclCommCount(comm, &nranks);

  float* send = malloc(count * sizeof(float));
  float* recv = malloc(count * sizeof(float));
  if (send == NULL || recv == NULL) {
    fprintf(stderr, "rank %d: out of memory for %zu floats\n", rank, count);
    bcclCommAbort(comm);
    return 1;
  }
  for (size_t i = 0; i < count; ++i) send[i] = (float)(rank + 1);

  double start = nowSeconds();
  res = bcclAllReduce(send, recv, count, bcclFloat, bcclSum, comm, NULL); /* NULL: blocking */
  double elapsed = nowSeconds() - start;
  int failed = 0;
  if (res != bcclSuccess) {
    failed = report("bcclAllReduce", res, comm);
  } else {
    /* Small integers add exactly in float, so the sum 1 + 2 + ... + n can be compared exactly. */
    float expected = (float)nranks * (float)(nranks + 1) / 2.0f;
    size_t bad = firstMismatch(recv, count, expected);
    if (bad < count) {
      fprintf(stderr, "rank %d: element %zu is %g, expected %g\n", rank, bad, recv[bad], expected);
      failed = 1;
    } else {
      printf("rank %d/%d: allreduce of %zu floats = %g everywhere (expected %g) in %.2f ms\n", rank,
             nranks, count, recv[0], expected, elapsed * 1e3);
    }
  }
  free(send);
  free(recv);

  /* After a failure the peers may be gone; abort never waits for them, destroy might. */
  res = failed ? bcclCommAbort(comm) : bcclCommDestroy(comm);
  if (res != bcclSuccess && !failed) failed = report("bcclCommDestroy", res, NULL);
  return failed;
}
