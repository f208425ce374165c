// late_thread.c: a program that starts a thread after the allocator last looked and found
// none still gets the scavenger's thread for the memory it then frees and leaves idle.
//
// The allocator reads the program's thread count (/proc) from an allocation's slow path
// to decide whether to start its scavenger thread. It used to keep a "no other thread"
// answer for a second: a program whose thread count was read as one just before it
// started a thread (here: a thread started and joined, a big heap, then a new thread;
// in idle_release.c, one run in ten, the read came from the allocation inside
// pthread_create itself) and that then allocated, freed and went idle within that second
// had no scavenger thread, and the memory it freed stayed resident for as long as it
// sat idle (205 MiB for 3 s and more in idle_release.c, where 64 MiB is live). Checked
// under SwiftHeap, after the same sequence made deterministic: the scavenger's thread
// runs, and RSS falls to within the live bytes plus a quarter plus 24 MiB within 3 s of
// idling (here the frees release part of their memory at once; in idle_release.c's
// failures, none).
#include "testutil.h"

#include <pthread.h>
#include <unistd.h>

#define BLOCKS 300


static void *nothing(void *arg) { return arg; }

int main(void) {
    check_preload();
    // The C library now says the program runs threads (it never says otherwise again),
    // while /proc counts one: the allocator's next look finds no other thread.
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, nothing, NULL) == 0, "pthread_create");
    pthread_join(t, NULL);
    // A look at the thread count: a big allocation's slow path after a tick period (100 ms)
    // without one, once the heap is big (16 MiB or more).
    static char *warm[20];
    for (int i = 0; i < 20; i++) {
        if (i == 19) usleep(150000);
        warm[i] = malloc(1u << 20);
        REQUIRE(warm[i], "malloc");
        memset(warm[i], 1, 1u << 20);
    }
    // Now a thread, and, after a tick period (the next look comes at the next tick's
    // allocation) but well within a second, the work. A round of big blocks freed at once: with no
    // scavenger thread they go back to the kernel as they are freed (PageHeap.swift:
    // Releasing at free), after which blocks of that size are kept when freed, for a
    // program that frees and allocates them again. Then the same, two in three freed,
    // and the program goes idle.
    t = start_blocked_thread();
    usleep(150000);
    static char *block[BLOCKS];
    alloc_written_blocks(block, BLOCKS);
    free_two_in_three(block, BLOCKS);
    for (int i = 0; i < BLOCKS; i++) free(block[i]);
    size_t live = alloc_written_blocks(block, BLOCKS) + (20u << 20);
    free_two_in_three(block, BLOCKS);
    check_scavenger_thread_released("late_thread", live);
    release_blocked_thread(t);
    for (int i = 0; i < BLOCKS; i++) free(block[i]);
    for (int i = 0; i < 20; i++) free(warm[i]);
    return test_exit("late_thread");
}
