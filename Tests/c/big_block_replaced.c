// big_block_replaced.c: a program that runs threads and frees a block of more than
// 32 MiB gets its pages back at once, as under glibc, so that the blocks that replace it
// do not add to its peak.
//
// glibc maps every block of more than 32 MiB on its own (its mmap threshold never rises
// above that) and unmaps it at free. GNU sort --parallel=2 -S 50M allocates its 50 MiB
// buffer, frees it, and allocates three of 16.7 MiB: under glibc its peak RSS was 53 MB,
// under SwiftHeap 68. The freed buffer's pages waited for the scavenger thread (a
// program with threads has one), and the three blocks, together two pages longer than
// the buffer, with a small span just past its end, left a third of it unused and
// resident while the last one took fresh pages. Here a second thread is alive
// throughout and a 20 MiB block stays live (the scavenger thread starts on a heap that
// size); the main thread writes a 50 MiB block, allocates a small block of a new size
// (its span lands past the big block), frees the big block, and writes three blocks of a
// third of it and a page. Checked: the peak RSS (VmHWM, reset just before) is at most
// the RSS before the 50 MiB block, plus the three blocks, plus 6 MiB (before the fix:
// 17 MiB more than that).
#include "testutil.h"

#include <pthread.h>

#define MIB (1024L * 1024L)
#define BIG ((size_t)(50 * MIB))
#define PART (BIG / 3 + 8192)

static volatile int stop;
static void *idle_thread(void *argument) {
    (void)argument;
    while (!stop) {
        free(malloc(100));
        usleep(1000);
    }
    return NULL;
}

static char *written(size_t bytes) {
    char *block = malloc(bytes);
    REQUIRE(block, "malloc(%zu)", bytes);
    memset(block, 1, bytes);
    return block;
}

int main(void) {
    check_preload();
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, idle_thread, NULL) == 0, "pthread_create");
    char *kept = written(20 * MIB);
    usleep(100 * 1000);
    int clear = open("/proc/self/clear_refs", O_WRONLY);
    REQUIRE(clear >= 0 && write(clear, "5", 1) == 1, "reset the peak RSS through /proc/self/clear_refs");
    close(clear);
    long resident = resident_kib();
    char *buffer = written(BIG);
    char *small = written(20000);
    free(buffer);
    char *parts[3];
    for (int i = 0; i < 3; i++) parts[i] = written(PART);
    long peak = proc_status_field(0, "VmHWM");
    long limit = resident + 3 * (long)(PART >> 10) + 6 * 1024;
    printf("big_block_replaced: RSS %ld KiB before, peak %ld KiB after (limit %ld)\n", resident, peak, limit);
    CHECK(peak > 0 && peak <= limit, "peak RSS %ld KiB, above %ld KiB (%ld KiB resident before the 50 MiB block)", peak,
          limit, resident);
    for (int i = 0; i < 3; i++) free(parts[i]);
    free(small);
    free(kept);
    stop = 1;
    pthread_join(thread, NULL);
    return test_exit("big_block_replaced");
}
