// 10,000 short-lived threads: each allocates, frees half of its blocks itself and
// leaves the rest to main. Every thread's cache is flushed when it exits, or parked for
// the next thread (at most 4 of them, each holding at most 256 KiB of objects:
// defaultParkLimit and parkMaxCachedBytes in ThreadCache.swift), so when all are gone
// the heap holds what it held before (mallinfo2's in-use bytes) plus at most what the
// parked caches hold, has not grown with the number of threads, and after malloc_trim
// (which flushes the parked caches) holds what it held before.
#include "testutil.h"
#include <pthread.h>

enum { THREADS = 10000, CONCURRENT = 50, PER_THREAD = 64 };
static void *leftovers[THREADS][PER_THREAD / 2];

static void *worker(void *arg) {
    long id = (long)arg;
    void *mine[PER_THREAD];
    for (int i = 0; i < PER_THREAD; i++) {
        size_t size = 16 + (size_t)((id * 31 + i * 7) % 2000);
        mine[i] = malloc(size);
        if (!mine[i]) return (void *)1;
        memset(mine[i], (int)id, size);
    }
    for (int i = 0; i < PER_THREAD; i += 2) free(mine[i]);
    for (int i = 1; i < PER_THREAD; i += 2) leftovers[id][i / 2] = mine[i];
    return NULL;
}

int main(void) {
    check_preload();
    int expect = getenv("SWIFTHEAP_EXPECT") != NULL;
    struct mallinfo2 before = mallinfo2();
    for (long base = 0; base < THREADS; base += CONCURRENT) {
        pthread_t t[CONCURRENT];
        for (long i = 0; i < CONCURRENT; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)(base + i)) == 0, "pthread_create");
        for (long i = 0; i < CONCURRENT; i++) {
            void *status;
            pthread_join(t[i], &status);
            CHECK(status == NULL, "thread %ld could not allocate", base + i);
        }
        for (long i = 0; i < CONCURRENT; i++)
            for (int j = 0; j < PER_THREAD / 2; j++) free(leftovers[base + i][j]);
    }
    struct mallinfo2 after = mallinfo2();
    if (expect) {
        // What may remain: this thread's own cache and a few partly used spans.
        size_t parked = 4 * (256u << 10);
        CHECK(after.uordblks <= before.uordblks + (1u << 20) + parked,
              "in-use bytes grew from %zu to %zu over %d exited threads", before.uordblks, after.uordblks, THREADS);
        malloc_trim(0);
        struct mallinfo2 trimmed = mallinfo2();
        CHECK(trimmed.uordblks <= before.uordblks + (1u << 20),
              "in-use bytes grew from %zu to %zu over %d exited threads and a malloc_trim", before.uordblks,
              trimmed.uordblks, THREADS);
        CHECK(after.arena <= before.arena + (64u << 20),
              "the heap grew from %zu to %zu bytes over %d exited threads", before.arena, after.arena, THREADS);
    }
    return test_exit("thread_exit");
}
