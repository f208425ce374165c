// fork.c: a parent with 4 threads allocating in loops forks 20 times. Each child
// checks the parent's data in its copy, allocates and frees (small, large, calloc, from
// a new thread too), frees some of the parent's blocks, and _exit(0)s. A child that
// deadlocks (an allocator lock held across fork) is killed by alarm() and reported.
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define THREADS 4
#define FORKS 20
#define PARENT_BLOCKS 1000
#define CHILD_TIMEOUT_S 5

static unsigned char *blocks[PARENT_BLOCKS];
static size_t sizes[PARENT_BLOCKS];
static uint64_t seeds[PARENT_BLOCKS];
static unsigned char *big;
#define BIG_SIZE ((size_t)6 << 20)
static int stop_threads;

static void *churn(void *arg) {
    uint64_t rng = (uint64_t)(uintptr_t)arg * 0x9E3779B97F4A7C15ULL + 1;
    enum { SLOTS = 64 };
    unsigned char *mine[SLOTS] = {0};
    size_t msz[SLOTS] = {0};
    long iters = 0;
    while (!__atomic_load_n(&stop_threads, __ATOMIC_ACQUIRE)) {
        rng = mix64(rng);
        int s = (int)(rng % SLOTS);
        if (mine[s]) {
            size_t bad = verify_seed(mine[s], msz[s], (uint64_t)s + 77);
            CHECK(bad == msz[s], "parent thread: block of %zu corrupted at %zu", msz[s], bad);
            free(mine[s]);
            mine[s] = NULL;
        } else {
            size_t n = (rng >> 20) % 100 < 97 ? 1 + (rng >> 8) % 2000 : 100000 + (rng >> 8) % 400000;
            mine[s] = malloc(n);
            REQUIRE(mine[s], "parent thread: malloc(%zu) failed", n);
            msz[s] = n;
            fill_seed(mine[s], n, (uint64_t)s + 77);
        }
        if ((++iters & 255) == 0) sched_yield();
    }
    for (int s = 0; s < SLOTS; s++) free(mine[s]);
    return NULL;
}

static void *child_thread(void *arg) {
    (void)arg;
    for (int i = 0; i < 2000; i++) {
        void *p = malloc(1 + (size_t)i * 13 % 5000);
        if (!p) return (void *)1;
        memset(p, 0x3C, 1);
        free(p);
    }
    void *l = malloc(3 << 20);
    if (!l) return (void *)1;
    memset(l, 1, 3 << 20);
    free(l);
    return NULL;
}

// Runs in the child: returns the exit status.
static int child_main(int k) {
    alarm(CHILD_TIMEOUT_S);
    int errors = 0;
    for (int i = 0; i < PARENT_BLOCKS; i++) {
        size_t bad = verify_seed(blocks[i], sizes[i], seeds[i]);
        if (bad != sizes[i]) {
            if (errors++ < 5)
                fprintf(stderr, "FAIL child %d: parent block %d (size %zu) differs at offset %zu\n", k, i, sizes[i], bad);
        }
    }
    if (verify_seed(big, BIG_SIZE, 999) != BIG_SIZE) {
        fprintf(stderr, "FAIL child %d: parent's big block differs\n", k);
        errors++;
    }
    // Allocate and free in the child: small, large, calloc.
    enum { N = 500 };
    void *p[N];
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 3000;
        p[i] = malloc(n);
        if (!p[i]) { fprintf(stderr, "FAIL child %d: malloc(%zu) failed\n", k, n); return 10; }
        fill_seed(p[i], n, (uint64_t)i);
    }
    for (int i = 0; i < N; i++) {
        size_t n = 1 + (size_t)(i * 37) % 3000;
        if (verify_seed(p[i], n, (uint64_t)i) != n) {
            fprintf(stderr, "FAIL child %d: child block %d corrupted\n", k, i);
            errors++;
        }
        free(p[i]);
    }
    unsigned char *l = malloc(16 << 20);
    if (!l) { fprintf(stderr, "FAIL child %d: malloc(16 MiB) failed\n", k); return 11; }
    memset(l, 0xA5, 16 << 20);
    free(l);
    unsigned char *c = calloc(1, 2 << 20);
    if (!c) { fprintf(stderr, "FAIL child %d: calloc(2 MiB) failed\n", k); return 12; }
    for (size_t i = 0; i < (2u << 20); i += 511)
        if (c[i]) { fprintf(stderr, "FAIL child %d: calloc byte %zu not zero\n", k, i); errors++; break; }
    free(c);
    // Free a part of the parent's blocks (inherited memory) and reuse the space.
    for (int i = k % 3; i < PARENT_BLOCKS; i += 3) free(blocks[i]);
    for (int i = 0; i < 300; i++) {
        void *q = malloc(sizes[i]);
        if (!q) { fprintf(stderr, "FAIL child %d: malloc after freeing parent blocks\n", k); return 13; }
        memset(q, 0, sizes[i]);
    }
    // Threads created in the child can allocate too (locks were reset by the fork handlers).
    pthread_t t;
    if (pthread_create(&t, NULL, child_thread, NULL) != 0) { fprintf(stderr, "FAIL child %d: pthread_create\n", k); return 14; }
    void *tr = NULL;
    pthread_join(t, &tr);
    if (tr) { fprintf(stderr, "FAIL child %d: allocation in a child thread failed\n", k); errors++; }
    fflush(stderr);
    return errors ? 1 : 0;
}

int main(void) {
    check_preload();
    for (int i = 0; i < PARENT_BLOCKS; i++) {
        sizes[i] = 1 + (size_t)(i * 7919) % (i % 50 == 0 ? 200000 : 3000);
        seeds[i] = mix64((uint64_t)i);
        blocks[i] = malloc(sizes[i]);
        REQUIRE(blocks[i], "malloc(%zu) failed", sizes[i]);
        fill_seed(blocks[i], sizes[i], seeds[i]);
    }
    big = malloc(BIG_SIZE);
    REQUIRE(big, "malloc(big) failed");
    fill_seed(big, BIG_SIZE, 999);

    pthread_t th[THREADS];
    for (long t = 0; t < THREADS; t++) REQUIRE(pthread_create(&th[t], NULL, churn, (void *)(t + 1)) == 0, "pthread_create");

    double start = now_seconds();
    int forks = 0;
    for (int k = 0; k < FORKS; k++, forks++) {
        // Between forks the parent changes some of its blocks (realloc moves them).
        for (int i = k; i < PARENT_BLOCKS; i += 17) {
            size_t n = sizes[i] + 1 + (size_t)k * 100;
            unsigned char *q = realloc(blocks[i], n);
            REQUIRE(q, "realloc failed");
            blocks[i] = q;
            sizes[i] = n;
            seeds[i] = mix64(seeds[i] + 1);
            fill_seed(q, n, seeds[i]);
        }
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork failed");
        if (pid == 0) _exit(child_main(k));
        int st = 0;
        REQUIRE(waitpid(pid, &st, 0) == pid, "waitpid failed");
        if (WIFSIGNALED(st))
            CHECK(0, "child %d killed by signal %d%s", k, WTERMSIG(st),
                  WTERMSIG(st) == SIGALRM ? " (timed out: deadlock after fork?)" : "");
        else
            CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "child %d exited with status %d", k, WEXITSTATUS(st));
        if (TEST_FAIL_COUNT() >= 2) {
            fprintf(stderr, "fork: stopping after %d forks with failures\n", k + 1);
            forks++;
            break;
        }
    }
    __atomic_store_n(&stop_threads, 1, __ATOMIC_RELEASE);
    for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    for (int i = 0; i < PARENT_BLOCKS; i++) {
        CHECK(verify_seed(blocks[i], sizes[i], seeds[i]) == sizes[i], "parent block %d corrupted", i);
        free(blocks[i]);
    }
    CHECK(verify_seed(big, BIG_SIZE, 999) == BIG_SIZE, "parent big block corrupted");
    free(big);
    printf("fork: %d forks in %.2f s\n", forks, now_seconds() - start);
    return test_exit("fork");
}
