// fork_stdio.c: fork() against stdio's locks.
//
// glibc's fork runs the atfork prepare handlers, then takes stdio's list lock, then its
// own malloc locks. Readers hold a FILE's lock inside getline, which reallocates its
// buffer; fflush(NULL) holds the list lock and waits for each FILE's lock. An allocator
// whose prepare handler takes its locks before the list lock deadlocks here: the forking
// thread holds the allocator's locks and waits for the list lock, fflush(NULL) holds the
// list lock and waits for a reader's FILE lock, and that reader waits in realloc for
// the allocator's lock.
//
// Threads fork in a loop (each child checks it can allocate, then _exit()s), readers
// read files with getline (lines long enough to make it reallocate), one thread calls
// fflush(NULL) in a loop, for RUN_S seconds. The work runs in a child with a watchdog,
// so a deadlock fails the test instead of hanging it.
#include "testutil.h"

#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>

#define RUN_S 20
#define TIMEOUT_S (RUN_S + 20)
#define READERS 3
#define FORKERS 2
#define LINES 400

static char path[READERS][64];
static int stop;
static long forks, lines_read, flushes;

static void *reader(void *arg) {
    int k = (int)(intptr_t)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        FILE *f = fopen(path[k], "r");
        REQUIRE(f, "fopen %s", path[k]);
        char *line = NULL;
        size_t cap = 0;
        ssize_t n;
        while ((n = getline(&line, &cap, f)) > 0) {
            __atomic_fetch_add(&lines_read, 1, __ATOMIC_RELAXED);
            // Give up the buffer now and then, so getline grows a new one from scratch.
            if ((n & 3) == 0) {
                free(line);
                line = NULL;
                cap = 0;
            }
        }
        free(line);
        fclose(f);
    }
    return NULL;
}

static void *flusher(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        fflush(NULL);
        __atomic_fetch_add(&flushes, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static void *forker(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        pid_t pid = fork();
        if (pid == 0) {
            void *p = malloc(1000);
            char *q = realloc(p, 100000);
            free(q);
            _exit(q ? 0 : 1);
        }
        REQUIRE(pid > 0, "fork failed: %s", strerror(errno));
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "forked child failed (status 0x%x)", status);
        __atomic_fetch_add(&forks, 1, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int run(void) {
    for (int k = 0; k < READERS; k++) {
        snprintf(path[k], sizeof path[k], "/tmp/swiftheap-fork-stdio-%d-%d", (int)getpid(), k);
        FILE *f = fopen(path[k], "w");
        REQUIRE(f, "fopen %s for writing", path[k]);
        for (int i = 0; i < LINES; i++) {
            int len = 50 + (int)(mix64((uint64_t)(i + k * LINES)) % 3000);
            for (int c = 0; c < len; c++) fputc('a' + (c + i) % 26, f);
            fputc('\n', f);
        }
        fclose(f);
    }
    pthread_t t[READERS + FORKERS + 1];
    int n = 0;
    for (int k = 0; k < READERS; k++) REQUIRE(pthread_create(&t[n++], NULL, reader, (void *)(intptr_t)k) == 0, "pthread_create");
    REQUIRE(pthread_create(&t[n++], NULL, flusher, NULL) == 0, "pthread_create");
    for (int k = 0; k < FORKERS; k++) REQUIRE(pthread_create(&t[n++], NULL, forker, NULL) == 0, "pthread_create");
    sleep(RUN_S);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < n; i++) pthread_join(t[i], NULL);
    for (int k = 0; k < READERS; k++) unlink(path[k]);
    printf("fork_stdio: %ld forks, %ld lines read, %ld fflush(NULL) calls in %d s\n", forks, lines_read, flushes, RUN_S);
    CHECK(forks > 0 && lines_read > 0 && flushes > 0, "no progress");
    return test_exit("fork_stdio");
}

int main(void) {
    check_preload();
    setvbuf(stdout, NULL, _IONBF, 0);
    int rc = run_with_watchdog(run, TIMEOUT_S, "fork deadlocked against stdio's locks");
    system("rm -f /tmp/swiftheap-fork-stdio-*");
    return rc;
}
