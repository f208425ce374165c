// thread_burst.c: a burst of threads costs little memory while it runs, and what it used
// comes back once the threads have exited.
//
// A program runs many threads at once (a burst of requests, a parallel phase, a thread
// per connection), each allocating a little of many sizes, and then goes on alone.
//   * While they run: each thread drew from spans of its own, an OS page or two per size
//     class, and touched a page of its cache record's slot arrays per class: 1000 threads
//     of 20 sizes (32..792 bytes) peaked at 138 MB, against glibc's 19 (tcmalloc 29,
//     jemalloc 98). Once 8 threads have allocated, a new thread's first objects of a
//     class come in line groups from spans the threads share, and every thread's bins
//     start in small arrays that lie together. Checked: at the peak, RSS is at most 40
//     KiB per running thread above what it was before the burst (glibc: 16.6 KiB a
//     thread, its stacks; SwiftHeap 33).
//   * After they exit: the spans' pages and the pooled records' arrays stayed resident,
//     79-92 MB, where glibc keeps 16 (its cached thread stacks). Checked: within 5 s of
//     the last join, RSS is at most 24 KiB per thread that ran above what it was before
//     the burst (glibc: 15 of the 24 MB allowed).
#include "testutil.h"

#include <pthread.h>

#define BURST 1000

static pthread_barrier_t all_allocated, may_exit;

static void *burst_thread(void *argument) {
    (void)argument;
    void *blocks[20];
    for (int i = 0; i < 20; i++) {
        blocks[i] = malloc(32 + (size_t)i * 40);
        if (!blocks[i]) return (void *)1;
        memset(blocks[i], i, 32);
    }
    for (int i = 0; i < 20; i++) free(blocks[i]);
    pthread_barrier_wait(&all_allocated);
    pthread_barrier_wait(&may_exit);
    return NULL;
}

int main(void) {
    check_preload();
    free(malloc(64));
    long before = resident_kib();
    pthread_barrier_init(&all_allocated, NULL, BURST + 1);
    pthread_barrier_init(&may_exit, NULL, BURST + 1);
    pthread_attr_t attributes;
    pthread_attr_init(&attributes);
    pthread_attr_setstacksize(&attributes, 64 << 10);
    static pthread_t thread[BURST];
    for (int i = 0; i < BURST; i++)
        REQUIRE(pthread_create(&thread[i], &attributes, burst_thread, NULL) == 0, "pthread_create %d", i);
    pthread_barrier_wait(&all_allocated);
    long peak = resident_kib();
    CHECK(peak - before <= BURST * 40L, "RSS %ld KiB with %d threads running, %ld before them: over 40 KiB a thread",
          peak, BURST, before);
    pthread_barrier_wait(&may_exit);
    for (int i = 0; i < BURST; i++) {
        void *result = NULL;
        pthread_join(thread[i], &result);
        REQUIRE(result == NULL, "a burst thread's malloc failed");
    }
    long limit = before + BURST * 24L;  // KiB: 24 KiB per thread that ran
    long rss = resident_kib();
    for (int tenth = 0; tenth < 50 && rss > limit; tenth++) {
        usleep(100 * 1000);
        rss = resident_kib();
    }
    CHECK(rss <= limit, "RSS %ld KiB 5 s after %d threads exited: it was %ld before them and %ld with them (limit "
          "%ld)", rss, BURST, before, peak, limit);
    printf("thread_burst: RSS %ld KiB before the burst, %ld with it, %ld after\n", before, peak, rss);
    return test_exit("thread_burst");
}
