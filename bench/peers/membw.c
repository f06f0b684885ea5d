/* membw: the machine's memory-copy bandwidth, the yardstick for large shm collectives.
 * Each of T threads memcpy's its own MIB-MiB buffer REPS times; best of 3 trials.
 *
 *   membw THREADS [MIB] [REPS]
 *
 * Prints: RESULT lib=memcpy threads=T bytes=B copy_GBps=X traffic_GBps=2X
 * (a copy reads and writes every byte: traffic counts both; write-allocate reads not counted). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct job {
  size_t bytes;
  int reps;
  pthread_barrier_t* start;
  pthread_barrier_t* stop;
};

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void* copier(void* arg) {
  const struct job* j = arg;
  char* src = malloc(j->bytes);
  char* dst = malloc(j->bytes);
  if (!src || !dst) {
    fprintf(stderr, "membw: out of memory\n");
    exit(1);
  }
  /* Touch both in this thread, then one untimed copy, so the trials see no page faults. */
  memset(src, 1, j->bytes);
  memset(dst, 2, j->bytes);
  memcpy(dst, src, j->bytes);
  for (int trial = 0; trial < 3; ++trial) {
    pthread_barrier_wait(j->start);
    for (int r = 0; r < j->reps; ++r) {
      src[r] = (char)r; /* different bytes each time, so no copy can be skipped */
      memcpy(dst, src, j->bytes);
    }
    pthread_barrier_wait(j->stop);
  }
  if (dst[0] == 42) puts(""); /* keeps the copies observable */
  free(src);
  free(dst);
  return NULL;
}

int main(int argc, char** argv) {
  const int threads = argc > 1 ? atoi(argv[1]) : 1;
  const size_t mib = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
  const int reps = argc > 3 ? atoi(argv[3]) : 4;
  if (threads < 1 || mib < 1 || reps < 1) {
    fprintf(stderr, "usage: %s THREADS [MIB] [REPS]\n", argv[0]);
    return 2;
  }
  pthread_barrier_t start, stop;
  pthread_barrier_init(&start, NULL, (unsigned)threads + 1);
  pthread_barrier_init(&stop, NULL, (unsigned)threads + 1);
  struct job j = {mib << 20, reps, &start, &stop};
  pthread_t* tid = calloc((size_t)threads, sizeof(pthread_t));
  for (int t = 0; t < threads; ++t) pthread_create(&tid[t], NULL, copier, &j);

  double best = 1e30;
  for (int trial = 0; trial < 3; ++trial) {
    pthread_barrier_wait(&start);
    const double t0 = now();
    pthread_barrier_wait(&stop);
    const double dt = now() - t0;
    if (dt < best) best = dt;
  }
  for (int t = 0; t < threads; ++t) pthread_join(tid[t], NULL);
  free(tid);

  const double copied = (double)j.bytes * reps * threads;
  printf("RESULT lib=memcpy threads=%d bytes=%zu copy_GBps=%.2f traffic_GBps=%.2f\n", threads,
         j.bytes, copied / best / 1e9, 2 * copied / best / 1e9);
  return 0;
}
