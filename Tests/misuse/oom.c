// Impossible sizes and running out of memory: NULL with errno ENOMEM (or EINVAL for a bad
// alignment), quickly, and the allocator stays usable afterwards.
//
//   oom sizes     impossible and overflowing sizes, bad alignments
//   oom exhaust   allocate until NULL (run under `ulimit -v`), free all, allocate again
//
// Prints `oom: ok ...` and exits 0, or prints `oom: FAIL ...` and exits 1.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int failures;
#define FAIL(...) do { printf("oom: FAIL "); printf(__VA_ARGS__); printf("\n"); fflush(stdout); failures++; } while (0)

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + t.tv_nsec / 1e9; }

// Laundered sizes, so that the compiler does not reject or fold the impossible calls.
static volatile size_t vmax = SIZE_MAX;
static void *volatile sink;

#define EXPECT_NULL(call, err) do {                                                    \
        errno = 0; double t0 = now(); void *r_ = (call); int e_ = errno; double dt_ = now() - t0; \
        if (r_) { FAIL("%s returned %p, not NULL", #call, r_); free(r_); }             \
        else if (e_ != (err)) FAIL("%s: errno %d (%s), expected %s", #call, e_, strerror(e_), #err); \
        else if (dt_ > 0.5) FAIL("%s took %.2f s to fail", #call, dt_);                \
        else printf("oom: ok %s -> NULL, %s (%.1f us)\n", #call, #err, dt_ * 1e6);      \
    } while (0)

static int sizes(void) {
    size_t M = vmax;
    EXPECT_NULL(malloc(M), ENOMEM);
    EXPECT_NULL(malloc(M - 4096), ENOMEM);
    EXPECT_NULL(malloc(M / 2 + 1), ENOMEM);
    EXPECT_NULL(malloc((size_t)1 << 62), ENOMEM);
    EXPECT_NULL(calloc(M / 2, 3), ENOMEM);                 // overflows
    EXPECT_NULL(calloc((size_t)1 << 32, (size_t)1 << 32), ENOMEM);   // overflows to 0
    EXPECT_NULL(calloc(1, M), ENOMEM);
    EXPECT_NULL(aligned_alloc(4096, M - 100), ENOMEM);
    EXPECT_NULL(aligned_alloc(65536, M / 2), ENOMEM);
    EXPECT_NULL(memalign(4096, M - 100), ENOMEM);
    EXPECT_NULL(valloc(M - 100), ENOMEM);
    EXPECT_NULL(pvalloc(M - 100), ENOMEM);
    EXPECT_NULL(realloc(NULL, M), ENOMEM);
    EXPECT_NULL(reallocarray(NULL, M / 2, 3), ENOMEM);

    // posix_memalign reports through its result, and leaves *out alone on failure.
    void *out = (void *)0x1234;
    int rc = posix_memalign(&out, 4096, M - 100);
    if (rc != ENOMEM) FAIL("posix_memalign(4096, SIZE_MAX-100) = %d, expected ENOMEM", rc);
    else if (out != (void *)0x1234) FAIL("posix_memalign failure changed *out to %p", out);
    else printf("oom: ok posix_memalign(4096, SIZE_MAX-100) = ENOMEM\n");
    rc = posix_memalign(&out, 3 * 16, 100);
    if (rc != EINVAL) FAIL("posix_memalign(48, 100) = %d, expected EINVAL", rc);
    else printf("oom: ok posix_memalign(48, 100) = EINVAL\n");
    rc = posix_memalign(&out, 4, 100);     // not a multiple of sizeof(void *)
    if (rc != EINVAL) FAIL("posix_memalign(4, 100) = %d, expected EINVAL", rc);
    else printf("oom: ok posix_memalign(4, 100) = EINVAL\n");
    rc = posix_memalign(&out, 0, 100);
    if (rc != EINVAL) FAIL("posix_memalign(0, 100) = %d, expected EINVAL", rc);
    else printf("oom: ok posix_memalign(0, 100) = EINVAL\n");

    // realloc to an impossible size fails and leaves the block as it was.
    char *p = malloc(100);
    memset(p, 'x', 100);
    errno = 0;
    char *q = realloc(p, M - 100);
    if (q) FAIL("realloc(p, SIZE_MAX-100) returned %p", (void *)q);
    else if (errno != ENOMEM) FAIL("realloc(p, SIZE_MAX-100): errno %d, expected ENOMEM", errno);
    else {
        for (int i = 0; i < 100; i++) if (p[i] != 'x') { FAIL("realloc failure changed byte %d of the block", i); break; }
        printf("oom: ok realloc(p, SIZE_MAX-100) -> NULL, ENOMEM, block intact\n");
    }
    errno = 0;
    q = reallocarray(p, M / 2, 3);
    if (q || errno != ENOMEM) FAIL("reallocarray(p, SIZE_MAX/2, 3) = %p errno %d, expected NULL ENOMEM", (void *)q, errno);
    else printf("oom: ok reallocarray(p, SIZE_MAX/2, 3) -> NULL, ENOMEM\n");
    free(p);

    // Still usable.
    for (int i = 0; i < 1000; i++) { sink = malloc((size_t)i * 37 + 1); free(sink); }
    p = malloc(1 << 20); memset(p, 1, 1 << 20); free(p);
    printf("oom: ok allocator usable after the failures\n");
    return failures != 0;
}

// ---- exhaust ----
#define MAXP (1 << 20)
static void *ptrs[MAXP];          // static: no allocation needed to remember the blocks
static size_t np;

// Allocates blocks of `size` until NULL; returns how many.
static size_t fill_until_null(size_t size, const char *how, size_t limit) {
    size_t n = 0;
    while (np < MAXP && n < limit) {
        errno = 0;
        void *p = !strcmp(how, "calloc") ? calloc(1, size) : malloc(size);
        if (!p) {
            if (errno != ENOMEM) FAIL("%s(%zu) returned NULL with errno %d (%s), expected ENOMEM", how, size, errno, strerror(errno));
            return n;
        }
        ptrs[np++] = p;
        n++;
    }
    return n;
}

static void *thread_alloc(void *arg) {
    (void)arg;
    void *p[100];
    for (int i = 0; i < 100; i++) { p[i] = malloc(100 + (size_t)i); if (!p[i]) return (void *)1; memset(p[i], 7, 100); }
    for (int i = 0; i < 100; i++) free(p[i]);
    return NULL;
}

static int exhaust(void) {
    double t0 = now();
    size_t big = fill_until_null(64 << 20, "malloc", 1 << 20);
    size_t mid = fill_until_null(1 << 20, "malloc", 1 << 20);
    size_t cal = fill_until_null(64 << 10, "calloc", 1 << 20);
    size_t small = fill_until_null(4096, "malloc", 1 << 19);
    size_t tiny = fill_until_null(64, "malloc", 1 << 19);
    printf("oom: exhausted (64 MiB, 1 MiB, 64 KiB, 4 KiB, 64 B blocks until NULL) after %.1f s: %zu x 64 MiB, %zu x 1 MiB, %zu x 64 KiB (calloc), %zu x 4 KiB, %zu x 64 B\n",
           now() - t0, big, mid, cal, small, tiny);
    if (np >= MAXP) { FAIL("never ran out of memory (is ulimit -v set?)"); return 1; }
    if (big + mid == 0) FAIL("not even one 1 MiB block could be allocated");
    // At the limit: these fail cleanly too.
    errno = 0;
    void *r = malloc(256 << 20);
    if (r) free(r); else if (errno != ENOMEM) FAIL("malloc(256 MiB) at the limit: errno %d", errno);
    // A realloc that cannot grow leaves the block intact.
    if (np) {
        char *last = ptrs[np - 1];
        memset(last, 'z', 64);
        errno = 0;
        char *q = realloc(last, 512 << 20);
        if (q) ptrs[np - 1] = q;
        else {
            if (errno != ENOMEM) FAIL("realloc(p, 512 MiB) at the limit: errno %d", errno);
            for (int i = 0; i < 64; i++) if (last[i] != 'z') { FAIL("failed realloc changed the block"); break; }
        }
    }

    // Free everything, then the same amount must be allocatable again, and more sizes.
    size_t before = np;
    for (size_t i = 0; i < np; i++) free(ptrs[i]);
    np = 0;
    malloc_trim(0);
    size_t again_big = fill_until_null(64 << 20, "malloc", big);
    // Most of it again (an allocator may keep a little for its own tables): at least 90%.
    if (again_big * 10 < big * 9 || (big && !again_big))
        FAIL("after freeing everything only %zu of %zu 64 MiB blocks could be allocated again", again_big, big);
    size_t again_mid = fill_until_null(1 << 20, "malloc", mid ? mid / 2 : 1);
    if (mid && again_mid < mid / 2) FAIL("after freeing everything only %zu of %zu 1 MiB blocks could be allocated again", again_mid, mid / 2);
    for (size_t i = 0; i < np; i++) free(ptrs[i]);
    np = 0;
    for (int i = 0; i < 10000; i++) {
        void *p = malloc((size_t)(i % 3000) + 1);
        if (!p) { FAIL("malloc(%d) failed after freeing everything", i % 3000 + 1); break; }
        memset(p, 3, (size_t)(i % 3000) + 1);
        free(p);
    }
    void *c = calloc(1000, 1000);
    if (!c) FAIL("calloc(1000, 1000) failed after freeing everything");
    else { for (int i = 0; i < 1000000; i++) if (((char *)c)[i]) { FAIL("calloc not zero after OOM at %d", i); break; } free(c); }
    // A new thread allocates. Its stack is mmap'ed by libc, not by the allocator: if the
    // allocator keeps the address space it once used (as jemalloc does), creating it may
    // fail under the limit, which is a note, not a failure of malloc.
    pthread_t t; void *res = NULL;
    const char *thr = "a new thread allocated fine";
    if (pthread_create(&t, NULL, thread_alloc, NULL) != 0)
        thr = "note: pthread_create failed (address space still held), thread not tested";
    else { pthread_join(t, &res); if (res) FAIL("malloc failed in a new thread after freeing everything"); }
    if (!failures)
        printf("oom: ok freed %zu blocks; then %zu x 64 MiB, %zu x 1 MiB, 10000 small and calloc fine again; %s\n",
               before, again_big, again_mid, thr);
    return failures != 0;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "sizes")) return sizes();
    if (!strcmp(c, "exhaust")) return exhaust();
    fprintf(stderr, "usage: oom sizes|exhaust\n");
    return 2;
}
