// release_at_free.c: a program with one thread gets back, at once, the big blocks it
// frees just before it goes quiet, as under glibc, and one that frees and allocates big
// blocks over and over does not pay a page fault per page each time.
//
// A single-threaded program has no scavenger thread (single_thread.c): what it frees is
// released during its own allocator calls, so after its last call nothing more would
// be. glibc hands back a block it mapped on its own at free, which is every block of
// its mmap threshold or more until the first such free, when the threshold rises.
// Each round runs in a process of its own (the allocator's state fresh), with no
// allocator call after the frees (RSS read with open/read):
//   * "blocks": 200 blocks of 300 KiB..1 MiB allocated and written, two in three freed:
//     RSS right after the frees within the live bytes plus a quarter plus 24 MiB;
//   * "huge": three blocks of 40 MiB written and freed: RSS within 24 MiB of the start;
//   * "lone": one block of 20 MiB written and freed, with some small allocations
//     between: RSS within 8 MiB of the start;
//   * "churn": 200 times malloc(2 MiB), write every page, free: at most four blocks'
//     worth of minor page faults (a release at every free would take 200).
#include "testutil.h"

#include <sys/resource.h>

static long minor_faults(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_minflt;
}

#define BLOCKS 200

static void blocks(void) {
    static char *block[BLOCKS];
    size_t live = alloc_written_blocks(block, BLOCKS);
    long peak = resident_kib();
    free_two_in_three(block, BLOCKS);
    long rss = resident_kib();
    long limit = (long)(live >> 10) + (long)(live >> 10) / 4 + 24 * 1024;
    printf("release_at_free: blocks: live %zu KiB, peak RSS %ld KiB, right after the frees %ld KiB (limit %ld)\n",
           live >> 10, peak, rss, limit);
    CHECK(rss <= limit, "blocks: RSS %ld KiB right after the frees, above %ld KiB (live %zu KiB, peak %ld)", rss,
          limit, live >> 10, peak);
}

static void huge(void) {
    long start = resident_kib();
    char *p[3];
    size_t n = (size_t)40 << 20;
    for (int i = 0; i < 3; i++) {
        p[i] = malloc(n);
        REQUIRE(p[i], "malloc(%zu)", n);
        memset(p[i], i + 1, n);
    }
    long peak = resident_kib();
    for (int i = 0; i < 3; i++) free(p[i]);
    long rss = resident_kib();
    printf("release_at_free: huge: RSS at the start %ld KiB, peak %ld KiB, right after the frees %ld KiB\n", start,
           peak, rss);
    CHECK(rss <= start + 24 * 1024, "huge: RSS %ld KiB right after the frees, %ld KiB at the start", rss, start);
}

static void lone(void) {
    long start = resident_kib();
    size_t n = (size_t)20 << 20;
    char *p = malloc(n);
    REQUIRE(p, "malloc(%zu)", n);
    memset(p, 1, n);
    long peak = resident_kib();
    // Some small work meanwhile, as a program does (stdio's buffers, a few strings).
    char *kept = malloc(4096);
    REQUIRE(kept, "malloc");
    for (int i = 0; i < 100; i++) free(malloc(100 + (size_t)i));
    free(p);
    long rss = resident_kib();
    printf("release_at_free: lone: RSS at the start %ld KiB, peak %ld KiB, right after the free %ld KiB\n", start,
           peak, rss);
    CHECK(rss <= start + 8 * 1024, "lone: RSS %ld KiB right after the free, %ld KiB at the start", rss, start);
    free(kept);
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

// Runs round `name` in a fresh process (this program run again with the round's name:
// the allocator's state is new, as in a program that just started); returns whether it
// passed.
static int in_child(const char *name) {
    fflush(stdout);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        execl("/proc/self/exe", "release_at_free", name, (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    int ok = WIFEXITED(status) && WEXITSTATUS(status) == 0;
    CHECK(ok, "%s: the round failed (status %d)", name, status);
    return ok;
}

int main(int argc, char **argv) {
    static const struct { const char *name; void (*round)(void); } rounds[] = {
        {"blocks", blocks}, {"huge", huge}, {"lone", lone}, {"churn", churn}};
    int count = (int)(sizeof rounds / sizeof rounds[0]);
    if (argc > 1) {
        // (A round's first allocation is its own, as in a program that starts with it:
        // the preload was checked by the parent.)
        for (int i = 0; i < count; i++)
            if (strcmp(argv[1], rounds[i].name) == 0) rounds[i].round();
        return TEST_FAIL_COUNT() == 0 ? 0 : 1;
    }
    check_preload();
    for (int i = 0; i < count; i++) in_child(rounds[i].name);
    return test_exit("release_at_free");
}
