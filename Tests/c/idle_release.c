// idle_release.c: memory a multithreaded program frees comes back to the kernel while the
// program then sits idle, making no allocator call at all.
//
// A server finishes a big request, frees what it built and waits for the next one. The
// scavenger's work then has no allocator call to run in: its thread must be there and
// awake. Two rounds, each in a program that runs a second thread (blocked on a pipe):
//   * "right after": ~200 MiB of blocks of 300 KiB..1 MiB allocated and written, two in
//     three freed at once, then no call for 3 s;
//   * "after a quiet spell": the same, but the frees come 7 s after the allocations
//     (longer than any "nothing to do" period after which a background thread may stop),
//     then no call for 3 s.
// Checked each time under SwiftHeap: RSS (read with open/read: nothing here allocates
// while idle) falls to within the live bytes plus a quarter plus 24 MiB. Not a phase
// dropped (a third of the heap stays live), so what brings it down is the ordinary pacing.
#include "testutil.h"

#include <pthread.h>
#include <unistd.h>

#define BLOCKS 300


static void round_trip(const char *name, unsigned quiet_before_free) {
    static char *block[BLOCKS];
    size_t live = alloc_written_blocks(block, BLOCKS);
    long peak = resident_kib();
    if (quiet_before_free) sleep(quiet_before_free);
    free_two_in_three(block, BLOCKS);
    long after_free = resident_kib();
    long limit = (long)(live / 1024) + (long)(live / 1024) / 4 + 24 * 1024;
    long rss = resident_kib_after_idle(limit);
    printf("idle_release: %s: live %zu KiB, peak RSS %ld KiB, right after the frees %ld KiB, "
           "after up to 3 s idle %ld KiB (limit %ld)\n", name, live >> 10, peak, after_free, rss, limit);
    // A SwiftHeap promise (glibc returns blocks it mapped on their own at once, but those
    // of the second round come from its heap, whose free memory it keeps).
    const char *expect = getenv("SWIFTHEAP_EXPECT");
    if (expect && strcmp(expect, "1") == 0)
        CHECK(rss <= limit, "%s: RSS %ld KiB after 3 s idle, above %ld KiB (live %zu KiB)", name, rss, limit,
              live >> 10);
    for (int i = 0; i < BLOCKS; i++) free(block[i]);
}

int main(void) {
    check_preload();
    pthread_t t = start_blocked_thread();
    round_trip("right after", 0);
    round_trip("after a quiet spell", 7);
    release_blocked_thread(t);
    return test_exit("idle_release");
}
