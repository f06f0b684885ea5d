/*
 * The consumer examples' program: it needs nothing but the installed header and library, which
 * is what the packaging must provide. Under bcclrun, every rank adds its rank into a buffer and
 * checks the sum.   bcclrun -n 2 ./consumer
 */
#include <bccl/bccl.h>
#include <stdio.h>

int main(void) {
  bcclComm_t comm = NULL;
  bcclResult_t res = bcclCommInitFromEnv(&comm, NULL);
  if (res != bcclSuccess) {
    fprintf(stderr, "bcclCommInitFromEnv: %s: %s\n", bcclGetErrorString(res),
            bcclGetLastError(NULL));
    return 1;
  }
  int rank = 0, nranks = 0, version = 0;
  bcclCommUserRank(comm, &rank);
  bcclCommCount(comm, &nranks);
  bcclGetVersion(&version);

  enum { kCount = 1000 };
  static float data[kCount];
  for (int i = 0; i < kCount; ++i) data[i] = (float)rank;
  res = bcclAllReduce(data, data, kCount, bcclFloat32, bcclSum, comm, NULL);
  if (res != bcclSuccess) {
    fprintf(stderr, "bcclAllReduce: %s: %s\n", bcclGetErrorString(res), bcclGetLastError(comm));
    return 1;
  }
  const float want = (float)nranks * (float)(nranks - 1) / 2.0f;
  int bad = 0;
  for (int i = 0; i < kCount; ++i) bad += data[i] != want;
  printf("rank %d of %d (bccl %d): allreduce %s\n", rank, nranks, version, bad ? "WRONG" : "ok");
  bcclCommDestroy(comm);
  return bad ? 1 : 0;
}
