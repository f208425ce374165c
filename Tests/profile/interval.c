// SWIFTHEAP_PROFILE_INTERVAL: a single-threaded program that keeps allocating gets
// PATH.1, PATH.2, ... from its own allocation slow paths (no thread is added: the
// program checks that it still has one thread when the second file appears).
//
//   interval PATH   (the value of SWIFTHEAP_PROFILE; waits for PATH.2, at most 30 s)
#include <time.h>
#include <unistd.h>
#include "profutil.h"

NOINLINE void *interval_site(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 1); return p; }

static int threads_in_process(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int threads = -1;
    while (f && fgets(line, sizeof line, f)) if (sscanf(line, "Threads: %d", &threads) == 1) break;
    if (f) fclose(f);
    return threads;
}

int main(int argc, char **argv) {
    require_swiftheap();
    CHECK(argc > 1);
    char second[4096];
    snprintf(second, sizeof second, "%s.2", argv[1]);
    uint64_t rng = 3;
    static void *ring[8192];
    time_t start = time(NULL);
    for (unsigned i = 0; access(second, F_OK) != 0; i++) {
        CHECK(time(NULL) - start < 30);
        free(ring[i & 8191]);
        ring[i & 8191] = interval_site(16 + (size_t)(next_random(&rng) % 16384));
        if ((i & 0xFFFF) == 0) usleep(1000);
    }
    CHECK(threads_in_process() == 1);
    printf("interval ok\n");
    return 0;
}
