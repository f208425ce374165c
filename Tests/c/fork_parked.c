// fork_parked.c: threads that exited leave their caches parked for the next threads
// (ThreadCache.swift: CacheRegistry.park); a fork then copies the parked caches into the
// child, where no thread owns them. Both processes go on making threads that take them,
// allocate and free blocks written with a pattern, exit and park them again, then
// malloc_trim (which flushes them) and check every block they kept: a parked cache
// handed to two threads, or one whose objects were also handed out from their spans,
// would show as a block overwritten by another's pattern.
#include "testutil.h"

#include <pthread.h>
#include <sys/wait.h>

#define THREADS 4
#define KEPT 64
#define ROUNDS 20

typedef struct {
    unsigned char *kept[KEPT];
    size_t size[KEPT];
    int id;
} work;

static void *worker(void *arg) {
    work *w = arg;
    unsigned char *scratch[200];
    for (int i = 0; i < 200; i++) {
        scratch[i] = malloc(16 + (size_t)((w->id * 37 + i * 11) % 700));
        REQUIRE(scratch[i], "malloc");
        scratch[i][0] = (unsigned char)i;
    }
    for (int i = 0; i < KEPT; i++) {
        w->size[i] = 16 + (size_t)((w->id * 13 + i * 29) % 600);
        w->kept[i] = malloc(w->size[i]);
        REQUIRE(w->kept[i], "malloc");
        memset(w->kept[i], w->id & 0xff, w->size[i]);
    }
    for (int i = 0; i < 200; i++) free(scratch[i]);
    return NULL;
}

// THREADS threads at once, one per w[0..<THREADS] (ids base, base + 1, ...), joined.
static void run_round(work *w, int base) {
    pthread_t t[THREADS];
    for (int i = 0; i < THREADS; i++) {
        w[i].id = base + i;
        REQUIRE(pthread_create(&t[i], NULL, worker, &w[i]) == 0, "pthread_create");
    }
    for (int i = 0; i < THREADS; i++) pthread_join(t[i], NULL);
}

// Frees the kept blocks of w[0..<count]; returns how many did not hold their thread's
// pattern.
static int check_and_free(work *w, int count) {
    int bad = 0;
    for (int k = 0; k < count; k++)
        for (int i = 0; i < KEPT; i++) {
            for (size_t b = 0; b < w[k].size[i]; b++)
                if (w[k].kept[i][b] != (unsigned char)(w[k].id & 0xff)) {
                    bad++;
                    break;
                }
            free(w[k].kept[i]);
        }
    return bad;
}

// ROUNDS rounds of THREADS threads; returns the blocks of `w` that do not hold their
// thread's pattern, once every round's threads have exited and malloc_trim has run.
static int run_rounds(work *w, int base) {
    for (int r = 0; r < ROUNDS; r++) run_round(w + r * THREADS, base + r * THREADS);
    malloc_trim(0);
    return check_and_free(w, ROUNDS * THREADS);
}

static work before_fork[ROUNDS * THREADS], after_fork[ROUNDS * THREADS];

int main(void) {
    check_preload();
    REQUIRE(run_rounds(before_fork, 0) == 0, "blocks overwritten before the fork");
    // Threads exit just before the fork, so that their caches are parked when it comes.
    static work last[THREADS];
    run_round(last, 1000);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    int bad = run_rounds(after_fork, pid == 0 ? 2000 : 3000);
    bad += check_and_free(last, THREADS);
    if (pid == 0) _exit(bad == 0 ? 0 : 1);
    CHECK(bad == 0, "parent: %d blocks overwritten after the fork", bad);
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child: blocks overwritten after the fork (status %d)", status);
    return test_exit("fork_parked");
}
