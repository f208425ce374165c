// Shared helpers of the C/C++ tests run by scripts/test-c under LD_PRELOAD.
//
// - CHECK(cond, fmt, ...): on failure prints "FAIL file:line: message" to stderr and
//   counts it; test_exit() returns non-zero when anything failed.
// - check_preload(): when SWIFTHEAP_EXPECT=1, the malloc family seen by this program
//   must come from a library whose path contains "swiftheap" (else the test would
//   silently be testing glibc).
// - In C, the allocation functions are called through volatile function pointers (the
//   macros at the end), so the compiler cannot use its builtin knowledge of malloc:
//   it cannot drop malloc/free pairs, fold reads of calloc'd memory to zero, or
//   constant-fold malloc(SIZE_MAX) to NULL. Every call really reaches the allocator.
#ifndef SWIFTHEAP_TESTUTIL_H
#define SWIFTHEAP_TESTUTIL_H

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <dlfcn.h>
#include <pthread.h>
#include <fcntl.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __cplusplus
#include <atomic>
static std::atomic<long> test_failures{0};
#define TEST_FAIL_INC() (test_failures.fetch_add(1))
#define TEST_FAIL_COUNT() (test_failures.load())
#else
static long test_failures;
#define TEST_FAIL_INC() (__atomic_fetch_add(&test_failures, 1, __ATOMIC_RELAXED))
#define TEST_FAIL_COUNT() (__atomic_load_n(&test_failures, __ATOMIC_RELAXED))
#endif

// At most this many failure messages are printed; the count goes on.
#define TEST_MAX_MESSAGES 40

#define CHECK(cond, ...)                                                              \
    do {                                                                              \
        if (!(cond)) {                                                                \
            long n_ = TEST_FAIL_INC();                                                \
            if (n_ < TEST_MAX_MESSAGES) {                                             \
                fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);                   \
                fprintf(stderr, __VA_ARGS__);                                         \
                fprintf(stderr, "\n");                                                \
                fflush(stderr);                                                       \
            }                                                                         \
        }                                                                             \
    } while (0)

// A failure after which going on makes no sense (e.g. a NULL we must write through).
#define REQUIRE(cond, ...)                                                            \
    do {                                                                              \
        if (!(cond)) {                                                                \
            fprintf(stderr, "FATAL %s:%d: ", __FILE__, __LINE__);                      \
            fprintf(stderr, __VA_ARGS__);                                             \
            fprintf(stderr, "\n");                                                    \
            fflush(stderr);                                                           \
            _exit(2);                                                                 \
        }                                                                             \
    } while (0)

static inline double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static inline int is_aligned(const void *p, size_t a) { return ((uintptr_t)p & (a - 1)) == 0; }

// VmRSS in KiB, from /proc/self/statm (pages), with no allocation (open and read, not
// stdio): for tests that check what the allocator does while the program makes no call.
static inline long resident_kib(void) {
    char buf[128];
    int fd = open("/proc/self/statm", O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    long size = 0, resident = 0;
    if (sscanf(buf, "%ld %ld", &size, &resident) != 2) return -1;
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

// A numeric field of /proc/PID/status ("Threads", "VmRSS": kB), of this process when pid
// is 0; -1 if it cannot be read. No allocation (open and read, not stdio).
static inline long proc_status_field(pid_t pid, const char *name) {
    char path[64], buf[4096];
    if (pid == 0) snprintf(path, sizeof path, "/proc/self/status");
    else snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    size_t len = strlen(name);
    for (char *line = buf; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, name, len) == 0 && line[len] == ':') return strtol(line + len + 1, NULL, 10);
    return -1;
}

// Whether this process may create a user namespace (unshare(CLONE_NEWUSER), tried in a
// child of one thread): some kernels and containers forbid it outright.
static inline int userns_allowed(void) {
    pid_t pid = fork();
    if (pid == 0) _exit(unshare(CLONE_NEWUSER) == 0 ? 0 : 1);
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

// Address-independent pseudo-random bytes: splitmix64 of (seed, index).
static inline uint64_t mix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

// Fills n bytes at p with the pattern of `seed` (byte i depends on seed and i only).
static inline void fill_seed(void *p, size_t n, uint64_t seed) {
    unsigned char *b = (unsigned char *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = mix64(seed ^ (i * 0x100000001b3ULL));
        memcpy(b + i, &w, 8);
    }
    if (i < n) {
        uint64_t w = mix64(seed ^ (i * 0x100000001b3ULL));
        memcpy(b + i, &w, n - i);
    }
}

// Returns the first offset < n where p differs from the pattern of `seed`, or n.
static inline size_t verify_seed(const void *p, size_t n, uint64_t seed) {
    const unsigned char *b = (const unsigned char *)p;
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w = mix64(seed ^ (i * 0x100000001b3ULL));
        if (memcmp(b + i, &w, 8) != 0) {
            const unsigned char *wb = (const unsigned char *)&w;
            for (size_t k = 0; k < 8; k++)
                if (b[i + k] != wb[k]) return i + k;
        }
    }
    if (i < n) {
        uint64_t w = mix64(seed ^ (i * 0x100000001b3ULL));
        const unsigned char *wb = (const unsigned char *)&w;
        for (size_t k = 0; i + k < n; k++)
            if (b[i + k] != wb[k]) return i + k;
    }
    return n;
}

// When SWIFTHEAP_EXPECT=1: the program's malloc family must resolve into a library
// whose path contains "swiftheap". Returns 1 if checked and active.
static inline int check_preload_names(const char *const *names, int count) {
    const char *e = getenv("SWIFTHEAP_EXPECT");
    if (!e || strcmp(e, "1") != 0) return 0;
    int ok = 1;
    for (int i = 0; i < count; i++) {
        void *sym = dlsym(RTLD_DEFAULT, names[i]);
        Dl_info info;
        memset(&info, 0, sizeof info);
        if (!sym || !dladdr(sym, &info) || !info.dli_fname || !strstr(info.dli_fname, "swiftheap")) {
            fprintf(stderr, "FAIL preload not active: %s resolves to %p in %s (LD_PRELOAD=%s)\n",
                    names[i], sym, info.dli_fname ? info.dli_fname : "(none)",
                    getenv("LD_PRELOAD") ? getenv("LD_PRELOAD") : "(unset)");
            ok = 0;
        }
    }
    if (!ok) {
        fflush(stderr);
        _exit(3);
    }
    return 1;
}

static inline void check_preload(void) {
    static const char *const names[] = {"malloc",        "free",           "calloc",
                                        "realloc",       "posix_memalign", "aligned_alloc",
                                        "memalign",      "malloc_usable_size"};
    check_preload_names(names, (int)(sizeof names / sizeof names[0]));
    // The address this program itself calls (through its GOT) must be the same.
    const char *e = getenv("SWIFTHEAP_EXPECT");
    if (e && strcmp(e, "1") == 0) {
        Dl_info info;
        void *(*volatile mine)(size_t) = malloc;
        if (!dladdr((void *)mine, &info) || !info.dli_fname || !strstr(info.dli_fname, "swiftheap")) {
            fprintf(stderr, "FAIL preload not active: the program's malloc (%p) is in %s\n",
                    (void *)mine, info.dli_fname ? info.dli_fname : "(none)");
            _exit(3);
        }
    }
}

// Runs `body` in a child process and waits at most `timeout_s` seconds for it: a test
// whose failure mode is a hang (a deadlock) then fails with `what` instead of hanging the
// run. Returns the child's exit status, or 1 if it hung or died.
static inline int run_with_watchdog(int (*body)(void), int timeout_s, const char *what) {
    fflush(NULL);
    pid_t child = fork();
    REQUIRE(child >= 0, "fork");
    if (child == 0) _exit(body());
    double start = now_seconds();
    int status = 0;
    for (;;) {
        pid_t r = waitpid(child, &status, WNOHANG);
        if (r == child) break;
        if (now_seconds() - start > timeout_s) {
            fprintf(stderr, "FAIL still running after %d s: %s\n", timeout_s, what);
            kill(child, SIGKILL);
            waitpid(child, NULL, 0);
            return 1;
        }
        usleep(10000);
    }
    if (!WIFEXITED(status)) {
        fprintf(stderr, "FAIL the test process died (status 0x%x)\n", status);
        return 1;
    }
    return WEXITSTATUS(status);
}

// What malloc_stats() writes on stderr, read back through a pipe into `text` (at most
// `size` - 1 bytes, NUL-terminated). Returns the length.
static inline size_t capture_malloc_stats(char *text, size_t size) {
    int fds[2];
    REQUIRE(pipe(fds) == 0, "pipe");
    fflush(stderr);
    int saved = dup(2);
    dup2(fds[1], 2);
    malloc_stats();
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    size_t length = 0;
    ssize_t got;
    while (length < size - 1 && (got = read(fds[0], text + length, size - 1 - length)) > 0) length += (size_t)got;
    text[length] = 0;
    close(fds[0]);
    return length;
}

static inline int test_exit(const char *name) {
    long f = TEST_FAIL_COUNT();
    if (f) {
        fprintf(stderr, "%s: %ld check(s) failed\n", name, f);
        return 1;
    }
    printf("%s: all checks passed\n", name);
    return 0;
}

#ifndef __cplusplus
// Calls through volatile pointers: see the comment at the top.
static void *(*volatile t_malloc)(size_t) = malloc;
static void (*volatile t_free)(void *) = free;
static void *(*volatile t_calloc)(size_t, size_t) = calloc;
static void *(*volatile t_realloc)(void *, size_t) = realloc;
static void *(*volatile t_reallocarray)(void *, size_t, size_t) = reallocarray;
static int (*volatile t_posix_memalign)(void **, size_t, size_t) = posix_memalign;
static void *(*volatile t_aligned_alloc)(size_t, size_t) = aligned_alloc;
static void *(*volatile t_memalign)(size_t, size_t) = memalign;
static void *(*volatile t_valloc)(size_t) = valloc;
static void *(*volatile t_pvalloc)(size_t) = pvalloc;
static size_t (*volatile t_malloc_usable_size)(void *) = malloc_usable_size;
static int (*volatile t_malloc_trim)(size_t) = malloc_trim;
#define malloc(n) t_malloc(n)
#define free(p) t_free(p)
#define calloc(n, s) t_calloc(n, s)
#define realloc(p, n) t_realloc(p, n)
#define reallocarray(p, n, s) t_reallocarray(p, n, s)
#define posix_memalign(o, a, n) t_posix_memalign(o, a, n)
#define aligned_alloc(a, n) t_aligned_alloc(a, n)
#define memalign(a, n) t_memalign(a, n)
#define valloc(n) t_valloc(n)
#define pvalloc(n) t_pvalloc(n)
#define malloc_usable_size(p) t_malloc_usable_size(p)
#define malloc_trim(n) t_malloc_trim(n)

// `count` blocks of 300 KiB..1 MiB (sizes from mix64) allocated into block[] and
// written; returns the bytes of the blocks that free_two_in_three keeps (every third).
static inline size_t alloc_written_blocks(char **block, int count) {
    size_t kept = 0;
    for (int i = 0; i < count; i++) {
        size_t n = (300u << 10) + (size_t)(mix64((uint64_t)i + 1) % (724u << 10));
        block[i] = malloc(n);
        REQUIRE(block[i], "malloc(%zu)", n);
        memset(block[i], i, n);
        if (i % 3 == 2) kept += n;
    }
    return kept;
}

// A second thread that blocks on a pipe until release_blocked_thread: the program runs
// threads, and the one it started does nothing (no allocation).
static int blocked_pipe[2];
static void *blocked_thread_main(void *arg) {
    (void)arg;
    char c;
    while (read(blocked_pipe[0], &c, 1) < 0) {}
    return NULL;
}
static inline pthread_t start_blocked_thread(void) {
    pthread_t t;
    REQUIRE(pipe(blocked_pipe) == 0, "pipe");
    REQUIRE(pthread_create(&t, NULL, blocked_thread_main, NULL) == 0, "pthread_create");
    return t;
}
static inline void release_blocked_thread(pthread_t t) {
    REQUIRE(write(blocked_pipe[1], "x", 1) == 1, "write");
    pthread_join(t, NULL);
}

// RSS (KiB) once it is at most `limit` KiB, or after 3 s idle (no allocator call).
static inline long resident_kib_after_idle(long limit) {
    long rss = resident_kib();
    for (int tenth = 0; tenth < 30 && rss > limit; tenth++) {
        usleep(100000);
        rss = resident_kib();
    }
    return rss;
}

// For a program with main and start_blocked_thread's thread that has freed most of its
// heap (`live` bytes left): waits up to 3 s idle, prints RSS and the thread count, and
// checks under SwiftHeap that its scavenger thread runs (3 threads) and that RSS fell to
// within the live bytes plus a quarter plus 24 MiB.
static inline void check_scavenger_thread_released(const char *name, size_t live) {
    long limit = (long)(live / 1024) + (long)(live / 1024) / 4 + 24 * 1024;
    long rss = resident_kib_after_idle(limit);
    long threads = proc_status_field(0, "Threads");
    printf("%s: live %zu KiB, after up to 3 s idle %ld KiB (limit %ld), %ld threads\n", name, live >> 10, rss, limit,
           threads);
    const char *expect = getenv("SWIFTHEAP_EXPECT");
    if (expect && strcmp(expect, "1") == 0) {
        CHECK(threads == 3, "%ld threads: main, the blocked one and no scavenger thread", threads);
        CHECK(rss <= limit, "RSS %ld KiB after 3 s idle, above %ld KiB (live %zu KiB)", rss, limit, live >> 10);
    }
}

// Frees two in three of alloc_written_blocks' blocks, at once, and NULLs them.
static inline void free_two_in_three(char **block, int count) {
    for (int i = 0; i < count; i++)
        if (i % 3 != 2) {
            free(block[i]);
            block[i] = NULL;
        }
}
#endif

#endif
