// release_at_free.c: a program with one thread gets back, at once, the big blocks it
// frees just before it goes quiet, as under glibc, and one that frees and allocates big
// blocks over and over does not pay a page fault per page each time.
//
// A single-threaded program has no scavenger thread (single_thread.c): what it frees is
// released during its own allocator calls, so after its last call nothing more would
// be. glibc hands back a block it mapped on its own at free, which is every block of
// its mmap threshold or more until the first such free, when the threshold rises.
// Each round runs in a forked child (the allocator's state fresh, as the parent makes
// no big allocation), with no allocator call after the frees (RSS read with open/read):
//   * "blocks": 200 blocks of 300 KiB..1 MiB allocated and written, two in three freed:
//     RSS right after the frees within the live bytes plus a quarter plus 24 MiB;
//   * "huge": three blocks of 40 MiB written and freed: RSS within 24 MiB of the start;
//   * "churn": 200 times malloc(2 MiB), write every page, free: at most four blocks'
//     worth of minor page faults (a release at every free would take 200).
#include "testutil.h"

#include <fcntl.h>
#include <sys/resource.h>

// VmRSS in KiB from /proc/self/statm (pages), with no allocation.
static long rss_kib(void) {
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

static long minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

#define BLOCKS 200

static void blocks(void) {
    static char *block[BLOCKS];
    size_t live = 0;
    for (int i = 0; i < BLOCKS; i++) {
        size_t n = (300u << 10) + (size_t)(mix64((uint64_t)i + 1) % (724u << 10));
        block[i] = malloc(n);
        REQUIRE(block[i], "malloc(%zu)", n);
        memset(block[i], i, n);
        if (i % 3 == 2) live += n;
    }
    long peak = rss_kib();
    for (int i = 0; i < BLOCKS; i++)
        if (i % 3 != 2) free(block[i]);
    long rss = rss_kib();
    long limit = (long)(live >> 10) + (long)(live >> 10) / 4 + 24 * 1024;
    printf("release_at_free: blocks: live %zu KiB, peak RSS %ld KiB, right after the frees %ld KiB (limit %ld)\n",
           live >> 10, peak, rss, limit);
    CHECK(rss <= limit, "blocks: RSS %ld KiB right after the frees, above %ld KiB (live %zu KiB, peak %ld)", rss,
          limit, live >> 10, peak);
}

static void huge(void) {
    long start = rss_kib();
    char *p[3];
    size_t n = (size_t)40 << 20;
    for (int i = 0; i < 3; i++) {
        p[i] = malloc(n);
        REQUIRE(p[i], "malloc(%zu)", n);
        memset(p[i], i + 1, n);
    }
    long peak = rss_kib();
    for (int i = 0; i < 3; i++) free(p[i]);
    long rss = rss_kib();
    printf("release_at_free: huge: RSS at the start %ld KiB, peak %ld KiB, right after the frees %ld KiB\n", start,
           peak, rss);
    CHECK(rss <= start + 24 * 1024, "huge: RSS %ld KiB right after the frees, %ld KiB at the start", rss, start);
}

static void churn(void) {
    size_t n = (size_t)2 << 20;
    long page = sysconf(_SC_PAGESIZE);
    long before = minor_faults();
    for (int i = 0; i < 200; i++) {
        char *p = malloc(n);
        REQUIRE(p, "malloc(%zu)", n);
        for (size_t off = 0; off < n; off += (size_t)page) p[off] = (char)i;
        free(p);
    }
    long faults = minor_faults() - before;
    long limit = 4 * (long)(n / (size_t)page);
    printf("release_at_free: churn: %ld minor faults for 200 blocks of 2 MiB (limit %ld)\n", faults, limit);
    CHECK(faults <= limit, "churn: %ld minor faults, above %ld: freed blocks released and faulted in again", faults,
          limit);
}

// Runs `round` in a forked child; returns whether it passed.
static int in_child(const char *name, void (*round)(void)) {
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        long failed_before = TEST_FAIL_COUNT();  // the parent's, from earlier rounds
        round();
        fflush(stdout);
        _exit(TEST_FAIL_COUNT() == failed_before ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECK(ok, "%s: the round failed (status %d)", name, status);
    return ok;
}

int main(void) {
    check_preload();
    in_child("blocks", blocks);
    in_child("huge", huge);
    in_child("churn", churn);
    return test_exit("release_at_free");
}
