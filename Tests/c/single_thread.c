// single_thread.c: a process with one thread stays one thread.
//
// The kernel refuses unshare(CLONE_NEWUSER) and setns() into a user namespace to a
// multithreaded process (EINVAL); sandboxes (bubblewrap, unshare -U, container runtimes)
// rely on them. A single-threaded program that frees hundreds of MiB must therefore not
// gain a scavenger thread: its memory is returned from the allocator's own calls instead.
// Checked: the thread count stays 1 through allocation, frees and idle time, and
// unshare(CLONE_NEWUSER) then succeeds (skipped with a message where the kernel forbids
// user namespaces to this process outright); and the freed memory was returned to the
// kernel without malloc_trim (RSS well below the peak).
#define _GNU_SOURCE
#include "testutil.h"

#define BLOCKS 400
#define SMALL 200000

int main(void) {
    check_preload();
    int allowed = userns_allowed();
    long peak = 0;
    for (int round = 0; round < 3; round++) {
        char *big[BLOCKS];
        char **small = malloc(SMALL * sizeof *small);
        REQUIRE(small, "malloc");
        for (int i = 0; i < BLOCKS; i++) {
            size_t n = ((size_t)1 << 20) + (size_t)i * 4096;
            big[i] = malloc(n);
            REQUIRE(big[i], "malloc(%zu)", n);
            memset(big[i], i, n);
        }
        for (int i = 0; i < SMALL; i++) {
            small[i] = malloc(16 + (size_t)(i % 500));
            REQUIRE(small[i], "malloc");
            memset(small[i], 1, 16);
        }
        long rss = proc_status_field(0, "VmRSS");
        if (rss > peak) peak = rss;
        CHECK(proc_status_field(0, "Threads") == 1, "round %d: %ld threads after allocating", round, proc_status_field(0, "Threads"));
        for (int i = 0; i < BLOCKS; i += 2) free(big[i]);
        for (int i = 0; i < SMALL; i++) free(small[i]);
        for (int i = 1; i < BLOCKS; i += 2) free(big[i]);
        free(small);
        CHECK(proc_status_field(0, "Threads") == 1, "round %d: %ld threads after freeing", round, proc_status_field(0, "Threads"));
        usleep(300000);
        CHECK(proc_status_field(0, "Threads") == 1, "round %d: %ld threads after 0.3 s idle", round, proc_status_field(0, "Threads"));
        // A few calls of the kind a program makes anyway.
        for (int i = 0; i < 50; i++) free(malloc(100000 + (size_t)i));
    }
    long rss = proc_status_field(0, "VmRSS");
    printf("single_thread: peak RSS %ld KiB, after the frees %ld KiB, threads %ld\n", peak, rss,
           proc_status_field(0, "Threads"));
    CHECK(proc_status_field(0, "Threads") == 1, "%ld threads at the end", proc_status_field(0, "Threads"));
    // A SwiftHeap promise (glibc keeps what its heap top pins): without a thread, the frees
    // themselves returned the memory.
    const char *expect = getenv("SWIFTHEAP_EXPECT");
    if (expect && strcmp(expect, "1") == 0)
        CHECK(rss < peak / 4, "freed memory not returned: RSS %ld KiB after the frees, peak %ld KiB", rss, peak);
    if (!allowed) {
        printf("single_thread: SKIP unshare(CLONE_NEWUSER): the kernel forbids user namespaces here\n");
    } else {
        int rc = unshare(CLONE_NEWUSER);
        CHECK(rc == 0, "unshare(CLONE_NEWUSER) failed: %s (threads: %ld)", strerror(errno), proc_status_field(0, "Threads"));
        if (rc == 0) printf("single_thread: unshare(CLONE_NEWUSER) succeeded\n");
    }
    return test_exit("single_thread");
}
