// calloc_uaf.c: calloc returns zeros whatever the program wrote into freed memory.
//
// A large block is freed and malloc_trim(0) releases its pages; the program then writes
// into the freed block (a use-after-free bug, but one that must not leak into later
// allocations); a calloc of the same size must return zeros. An allocator that marks
// released pages "known zero" and skips calloc's memset returns the bytes written after
// the release. Also covered: the same without malloc_trim (pages released by the
// scavenger or not at all), partly released blocks, and a write into a block freed and
// never released. A freed block the allocator unmapped (glibc's large blocks) cannot be
// written: the write faults, is skipped, and the case is trivially fine.
#include "testutil.h"

#include <malloc.h>
#include <setjmp.h>
#include <signal.h>

static sigjmp_buf write_fault;
static void on_segv(int sig) { (void)sig; siglongjmp(write_fault, 1); }

// memset that survives an unmapped destination; returns whether it wrote.
static int try_write(void *p, int c, size_t n) {
    struct sigaction sa, old_segv, old_bus;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_segv;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &old_segv);
    sigaction(SIGBUS, &sa, &old_bus);
    int wrote = 0;
    if (sigsetjmp(write_fault, 1) == 0) {
        memset(p, c, n);
        wrote = 1;
    }
    sigaction(SIGSEGV, &old_segv, NULL);
    sigaction(SIGBUS, &old_bus, NULL);
    return wrote;
}

static size_t nonzero(const unsigned char *p, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += p[i] != 0;
    return c;
}

static void scenario(const char *what, size_t size, int trim, size_t write_bytes) {
    size_t worst = 0;
    for (int round = 0; round < 20; round++) {
        unsigned char *p = malloc(size);
        REQUIRE(p, "malloc(%zu)", size);
        memset(p, 0x5A, size);
        free(p);
        if (trim) malloc_trim(0);
        // The use-after-free write.
        try_write(p, 0xA5, write_bytes);
        unsigned char *q = calloc(1, size);
        REQUIRE(q, "calloc(1, %zu)", size);
        size_t bad = nonzero(q, size);
        if (bad > worst) worst = bad;
        free(q);
    }
    printf("calloc_uaf: %s: worst %zu non-zero bytes\n", what, worst);
    CHECK(worst == 0, "%s: calloc returned %zu non-zero bytes", what, worst);
}

int main(void) {
    check_preload();
    scenario("1 MiB, trimmed, whole block written after free", 1 << 20, 1, 1 << 20);
    scenario("1 MiB, trimmed, one page written after free", 1 << 20, 1, 4096);
    scenario("3 MiB + 5 KiB, trimmed", (3 << 20) + 5000, 1, (3 << 20) + 5000);
    scenario("1 MiB, not trimmed", 1 << 20, 0, 1 << 20);
    scenario("40 KiB, trimmed", 40 << 10, 1, 40 << 10);
    scenario("100 MiB, trimmed", (size_t)100 << 20, 1, (size_t)100 << 20);
    return test_exit("calloc_uaf");
}
