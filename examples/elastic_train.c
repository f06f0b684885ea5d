/* A data-parallel training loop that survives losing ranks: when a collective fails because a
 * rank died, the survivors learn who, shrink the communicator without it, and carry on with the
 * step they were at. Try it with an injected failure:
 *
 *   bcclrun -n 4 --keep-going -x BCCL_FAULT_INJECT='rank=2,op=30,action=kill'
 * ./example_elastic_train
 */
#include <bccl/bccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define PARAMS (1 << 20)
#define STEPS 100

static double nowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int main(void) {
  bcclComm_t comm;
  if (bcclCommInitFromEnv(&comm, NULL) != bcclSuccess) {
    fprintf(stderr, "init failed: %s\n", bcclGetLastError(NULL));
    return 1;
  }
  int rank, nranks;
  bcclCommUserRank(comm, &rank);
  bcclCommCount(comm, &nranks);
  const int firstRank = rank;
  float* weights = calloc(PARAMS, sizeof(float));
  float* grad = malloc(PARAMS * sizeof(float));
  if (weights == NULL || grad == NULL) return 1;

  for (int step = 0; step < STEPS;) {
    /* Every rank's "gradient" is 1, so the averaged update is the same whoever survives. */
    for (int i = 0; i < PARAMS; ++i) grad[i] = 1.0f;
    bcclResult_t res = bcclAllReduce(grad, grad, PARAMS, bcclFloat32, bcclAvg, comm, NULL);
    if (res == bcclSuccess) {
      for (int i = 0; i < PARAMS; ++i) weights[i] -= 0.01f * grad[i];
      ++step;
      continue;
    }
    /* A peer failed: who, and how we learnt it. */
    double t0 = nowMs();
    int failed[64], nfailed = 0;
    bcclCommGetFailedRanks(comm, failed, 64, &nfailed);
    printf("rank %d (was %d) at step %d: %s\n", rank, firstRank, step, bcclGetLastError(comm));
    for (int f = 0; f < nfailed && f < 64; ++f)
      printf("rank %d: rank %d is gone\n", rank, failed[f]);
    bcclComm_t smaller;
    res = bcclCommShrink(comm, NULL, 0, &smaller, NULL, BCCL_SHRINK_ABORT);
    bcclCommAbort(comm);
    if (res != bcclSuccess) {
      fprintf(stderr, "rank %d: shrink failed: %s\n", rank, bcclGetLastError(NULL));
      return 1;
    }
    comm = smaller;
    bcclCommUserRank(comm, &rank);
    bcclCommCount(comm, &nranks);
    printf("rank %d: continuing as rank %d of %d after %.1f ms\n", firstRank, rank, nranks,
           nowMs() - t0);
  }
  /* Every surviving rank applied the same averaged gradient every step. */
  float expect = -0.01f * STEPS;
  int ok = weights[0] > expect - 1e-3f && weights[0] < expect + 1e-3f &&
           weights[PARAMS - 1] == weights[0];
  printf("rank %d (was %d): %d steps done with %d ranks, weight %.4f (%s)\n", rank, firstRank,
         STEPS, nranks, weights[0], ok ? "correct" : "WRONG");
  bcclCommDestroy(comm);
  free(weights);
  free(grad);
  return ok ? 0 : 1;
}
