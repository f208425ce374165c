// back_to_one_thread.c: a program whose threads have all been joined is one thread again.
//
// The kernel refuses unshare(CLONE_NEWUSER) and setns() into a user namespace to a
// process of more than one thread (EINVAL). A program may run a pool of threads, join
// them, and then sandbox itself with a user namespace; under glibc its unshare succeeds
// at once. The scavenger thread started while the pool ran must therefore leave once the
// program is back to one thread: checked here, the thread count falls to 1 within 3 s of
// the last join (the scavenger looks at every wake: every 100 ms while it has work, every
// second when parked), and unshare(CLONE_NEWUSER) then succeeds (skipped with a message
// where the kernel forbids user namespaces to this process outright). Under SwiftHeap
// the scavenger thread must have run while the pool did (the heap grew past the size at
// which it starts), or the test would prove nothing. And what the pool freed as it ended
// (80 MB its threads held to the last) must not be left resident by the scavenger's
// leaving: RSS then at most a quarter of what it was with those blocks (glibc: 1 MiB of
// 78).
#define _GNU_SOURCE
#include "testutil.h"

#include <pthread.h>

#define WORKERS 2
#define BLOCKS 20000
static pthread_barrier_t churned, may_end;

// Three rounds of 40 MB of 2000-byte blocks, written; the first two freed at once, the
// last kept until the worker is let go, and freed just before it ends.
static void *worker(void *argument) {
    (void)argument;
    char **blocks = malloc(BLOCKS * sizeof *blocks);
    if (!blocks) return (void *)1;
    for (int round = 0; round < 3; round++) {
        for (int i = 0; i < BLOCKS; i++) {
            blocks[i] = malloc(2000);
            if (!blocks[i]) return (void *)1;
            memset(blocks[i], i, 2000);
        }
        if (round == 2) break;
        for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
        usleep(100 * 1000);
    }
    pthread_barrier_wait(&churned);
    pthread_barrier_wait(&may_end);
    for (int i = 0; i < BLOCKS; i++) free(blocks[i]);
    free(blocks);
    return NULL;
}

int main(void) {
    check_preload();
    int allowed = userns_allowed();
    pthread_barrier_init(&churned, NULL, WORKERS + 1);
    pthread_barrier_init(&may_end, NULL, WORKERS + 1);
    pthread_t thread[WORKERS];
    for (int i = 0; i < WORKERS; i++) REQUIRE(pthread_create(&thread[i], NULL, worker, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&churned);
    long during = proc_status_field(0, "Threads");
    long peak = resident_kib();
    pthread_barrier_wait(&may_end);
    for (int i = 0; i < WORKERS; i++) {
        void *result = NULL;
        pthread_join(thread[i], &result);
        REQUIRE(result == NULL, "a worker's malloc failed");
    }
    struct timespec start, now;
    clock_gettime(CLOCK_MONOTONIC, &start);
    long after = proc_status_field(0, "Threads");
    double waited = 0;
    while (after != 1 && waited < 3.0) {
        usleep(10 * 1000);
        after = proc_status_field(0, "Threads");
        clock_gettime(CLOCK_MONOTONIC, &now);
        waited = (double)(now.tv_sec - start.tv_sec) + (double)(now.tv_nsec - start.tv_nsec) / 1e9;
    }
    const char *expect = getenv("SWIFTHEAP_EXPECT");
    if (expect && strcmp(expect, "1") == 0)
        CHECK(during == WORKERS + 2, "%ld threads while the pool ran, not %d: no scavenger thread ran, so this "
              "test proves nothing", during, WORKERS + 2);
    CHECK(after == 1, "still %ld threads %.1f s after the last join (the program runs one)", after, waited);
    long rss = resident_kib();
    CHECK(rss <= peak / 4, "RSS %ld MiB once the pool was joined, after %ld MiB with its last blocks: what the "
          "pool freed as it ended stayed resident", rss / 1024, peak / 1024);
    if (!allowed) {
        printf("back_to_one_thread: unshare(CLONE_NEWUSER) not allowed here even under glibc; thread count "
               "checked only\n");
    } else if (after == 1) {
        CHECK(unshare(CLONE_NEWUSER) == 0, "unshare(CLONE_NEWUSER) after the threads were joined: %s",
              strerror(errno));
    }
    printf("back_to_one_thread: %ld threads while the pool ran, 1 again after %.2f s; RSS %ld MiB with the "
           "pool's last blocks, %ld MiB then\n", during, waited, peak / 1024, rss / 1024);
    return test_exit("back_to_one_thread");
}
