// realloc of sampled objects, run with SWIFTHEAP_PROFILE_RATE=1 (every allocation is a
// sample, so each case below is a sampled object):
//   1. a small object grown within its page (a sample has a page of its own) stays
//      where it is: it used to be moved and copied by every growing realloc;
//   2. a buffer grown a byte at a time from 8000 bytes to 4 MiB keeps the profile's
//      memory bounded (it used to make a bucket per size it passed: some 300 MiB for
//      the profiler's tables) and is listed at its last size, from its malloc's stack;
//   3. an object mapped on its own that realloc moves (mremap) and then frees drops
//      its sample: the profile at exit does not list it as in use.
//
//   realloc
#include <sys/mman.h>
#include <unistd.h>
#include "profutil.h"

// Allocates and resizes the buffer (a realloc that moves it is a new allocation from
// its caller's stack: both are made here).
NOINLINE char *grow_site(char *p, size_t n) { p = p ? realloc(p, n) : malloc(n); CHECK(p); return p; }
NOINLINE char *big_site(size_t n) { char *p = malloc(n); CHECK(p); return p; }

// The resident set in KiB, from /proc/self/statm.
static long rss_kib(void) {
    char text[128];
    FILE *f = fopen("/proc/self/statm", "r");
    CHECK(f && fgets(text, sizeof text, f));
    fclose(f);
    long size = 0, resident = 0;
    CHECK(sscanf(text, "%ld %ld", &size, &resident) == 2);
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

int main(void) {
    require_swiftheap();
    // 1. Within the sample's page (SwiftHeap's pages are 8 KiB).
    char *p = grow_site(NULL, 16);
    int moves = 0;
    for (size_t n = 32; n <= 8000; n += 16) {
        char *q = grow_site(p, n);
        if (q != p) moves++;
        p = q;
        p[n - 1] = 1;
    }
    printf("small: %d moves\n", moves);
    CHECK(moves == 0);

    // 2. A byte at a time to 4 MiB.
    const size_t grown = 4u << 20;
    long before = rss_kib();
    for (size_t n = 8001; n <= grown; n++) {
        p = grow_site(p, n);
        p[n - 1] = (char)n;
    }
    long added = rss_kib() - before;
    printf("grown: resident set +%ld KiB\n", added);
    CHECK(added < (long)(grown >> 10) + 8192);  // the buffer itself, and slack
    for (size_t n = 8001; n <= grown; n += 4099) CHECK(p[n - 1] == (char)n);
    print_truth("grow_site", grown);

    // 3. 64 MiB is mapped on its own; a mapping right after it makes growing it move.
    const size_t big = 64u << 20;
    char *b = big_site(big);
    memset(b, 7, 4096);
    void *guard = mmap(b + big, 4096, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
    char *moved = realloc(b, 2 * big);
    CHECK(moved && moved[4095] == 7);
    printf("big: moved %d\n", moved != b);
    CHECK(moved != b);
    free(moved);
    if (guard != MAP_FAILED) munmap(guard, 4096);
    print_truth("big_site", 0);
    return 0;  // the profile at exit: grow_site's 4 MiB in use, nothing of big_site
}
