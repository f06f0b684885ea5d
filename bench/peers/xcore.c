/* xcore: how fast data written by one CPU reaches another, the rate every shared-memory
 * collective between two ranks depends on. A producer pinned to the first allowed CPU fills
 * 256 KiB slots of a small ring, a consumer pinned to the second copies them out; the ring stays
 * in cache, so this times cache-to-cache handoff, not memory.
 *
 *   xcore [MIB]      (MIB handed over in all, default 1024)
 *
 * Prints: RESULT lib=xcore cpus=A,B bytes=B handoff_GBps=X
 *
 * Why it exists: on this VM the host moves the two vCPUs between placements where the handoff
 * runs at ~17 GB/s and at ~4 GB/s (measured 2026-12-08), for seconds to minutes, while memcpy's
 * bandwidth stays where it is. A shared-memory collective then runs up to 4x slower, so a
 * comparison's cells only mean something next to this rate at the time they ran. */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { kSlot = 256 * 1024, kSlots = 8, kSources = 16 };

static char* ring;
static char* src;
static char* dst;
static _Atomic long produced, consumed;
static long total_slots;

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void pin(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  CPU_SET(cpu, &set);
  pthread_setaffinity_np(pthread_self(), sizeof set, &set);
}

/* Waits politely: with 2 CPUs and both threads busy, a pure spin would be fine, but the
 * machine may run other work; yield after a short spin. */
static void await_at_least(_Atomic long* v, long want) {
  for (int i = 0; atomic_load_explicit(v, memory_order_acquire) < want; ++i)
    if (i > 1000) sched_yield();
}

static int cpus[2];

static void* producer(void* arg) {
  (void)arg;
  pin(cpus[0]);
  for (long i = 0; i < total_slots; ++i) {
    await_at_least(&consumed, i - kSlots + 1);
    memcpy(ring + (i % kSlots) * kSlot, src + (i % kSources) * kSlot, kSlot);
    ring[(i % kSlots) * kSlot] = (char)i; /* different bytes each time */
    atomic_store_explicit(&produced, i + 1, memory_order_release);
  }
  return NULL;
}

static void* consumer(void* arg) {
  (void)arg;
  pin(cpus[1]);
  for (long i = 0; i < total_slots; ++i) {
    await_at_least(&produced, i + 1);
    memcpy(dst + (i % kSources) * kSlot, ring + (i % kSlots) * kSlot, kSlot);
    atomic_store_explicit(&consumed, i + 1, memory_order_release);
  }
  return NULL;
}

int main(int argc, char** argv) {
  const long mib = argc > 1 ? atol(argv[1]) : 1024;
  if (mib < 1) {
    fprintf(stderr, "usage: %s [MIB]\n", argv[0]);
    return 2;
  }
  cpu_set_t allowed;
  if (sched_getaffinity(0, sizeof allowed, &allowed) != 0) return 1;
  int found = 0;
  for (int c = 0; c < CPU_SETSIZE && found < 2; ++c)
    if (CPU_ISSET(c, &allowed)) cpus[found++] = c;
  if (found < 2) {
    fprintf(stderr, "xcore: needs 2 allowed CPUs\n");
    return 1;
  }
  total_slots = mib * 1024 * 1024 / kSlot;
  ring = aligned_alloc(4096, (size_t)kSlots * kSlot);
  src = aligned_alloc(4096, (size_t)kSources * kSlot);
  dst = aligned_alloc(4096, (size_t)kSources * kSlot);
  if (!ring || !src || !dst) {
    fprintf(stderr, "xcore: out of memory\n");
    return 1;
  }
  memset(ring, 1, (size_t)kSlots * kSlot);
  memset(src, 2, (size_t)kSources * kSlot);
  memset(dst, 3, (size_t)kSources * kSlot);
  pthread_t p, c;
  const double t0 = now();
  pthread_create(&p, NULL, producer, NULL);
  pthread_create(&c, NULL, consumer, NULL);
  pthread_join(p, NULL);
  pthread_join(c, NULL);
  const double dt = now() - t0;
  if (dst[0] == 42) puts(""); /* keeps the copies observable */
  printf("RESULT lib=xcore cpus=%d,%d bytes=%ld handoff_GBps=%.2f\n", cpus[0], cpus[1],
         total_slots * (long)kSlot, (double)total_slots * kSlot / dt / 1e9);
  return 0;
}
