// burst_after_tick.c: a program that runs threads and builds a big heap in a burst gets
// the scavenger's thread, however soon after the allocator's last tick the burst comes.
//
// In a program that runs threads, an allocation's slow path starts the scavenger's thread
// once the heap maps 16 MiB or more (ScavengerRunner.swift), and the thread releases what
// the program frees while it then sits idle. The start used to be weighed only when an
// inline tick was due (100 ms after the last one): a program that built its heap within
// that time, freed most of it and went idle never had it weighed, and kept what it freed
// resident while idle (idle_release.c, one run in ten: 205 MiB for 3 s and more, where
// 64 MiB is live). Here: a thread, the first allocation (a tick), at once 48 MiB in 1 MiB
// blocks, two in three freed; checked under SwiftHeap that the scavenger's thread runs
// (and RSS is within the live bytes plus a quarter plus 24 MiB after up to 3 s idle).
#include "testutil.h"

#include <pthread.h>
#include <unistd.h>

#define BLOCKS 48


int main(void) {
    check_preload();
    pthread_t t = start_blocked_thread();
    static char *block[BLOCKS];
    size_t live = 0;
    for (int i = 0; i < BLOCKS; i++) {
        block[i] = malloc(1u << 20);
        REQUIRE(block[i], "malloc");
        memset(block[i], i, 1u << 20);
    }
    for (int i = 0; i < BLOCKS; i++) {
        if (i % 3 == 2) {
            live += 1u << 20;
            continue;
        }
        free(block[i]);
        block[i] = NULL;
    }
    check_scavenger_thread_released("burst_after_tick", live);
    release_blocked_thread(t);
    for (int i = 0; i < BLOCKS; i++) free(block[i]);
    return test_exit("burst_after_tick");
}
