// realloc_peak.c: a buffer grown by realloc to 64 MiB peaks at about its size, as under
// glibc, not at two or three times it.
//
// A program that reads a file or a stream into one buffer grows it with realloc, by
// doubling or by a fixed step. glibc maps such a buffer on its own and grows it with
// mremap, which moves its pages: the program's peak RSS is the buffer's final size.
// SwiftHeap moved it into a bigger block by copying, and the old copies stayed resident
// until the scavenger released them: reading a 67 MB file into a buffer doubled from
// 4 KiB peaked at 94 MB, grown by 1 MiB steps at 160 MB (jemalloc 142 and 156, mimalloc
// 2.0 166 and 189). The heap now grows under a buffer that is its last span (PageHeap:
// growSpanInPlaceLocked). Each case runs in a process of its own: the buffer grows from
// 4 KiB to 64 MiB, each appended piece written, with a 100-byte block allocated (and
// kept) every 64 KiB, as a parser would. Checked: the peak RSS (VmHWM, reset at the
// start) is at most the RSS at the start plus 64 MiB plus the small blocks plus 8 MiB.
#include "testutil.h"

#define MIB (1024L * 1024L)
#define FINAL ((size_t)(64 * MIB))
#define PIECE ((size_t)65536)

static size_t step;  // 0: double the buffer; otherwise grow it by this many bytes

static int grow_buffer(void) {
    int clear = open("/proc/self/clear_refs", O_WRONLY);
    if (clear < 0 || write(clear, "5", 1) != 1) return 20;
    close(clear);
    long resident = resident_kib();
    size_t capacity = 4096, length = 0, smalls = 0;
    char *buffer = malloc(capacity);
    if (!buffer) return 21;
    while (length < FINAL) {
        if (length + PIECE > capacity) {
            capacity = step ? capacity + step : capacity * 2;
            if (capacity < length + PIECE) capacity = length + PIECE;
            char *grown = realloc(buffer, capacity);
            if (!grown) return 22;
            buffer = grown;
        }
        memset(buffer + length, (int)(length >> 16), PIECE);
        length += PIECE;
        char *small = malloc(100);
        if (!small) return 23;
        memset(small, 1, 100);
        smalls += 100;
    }
    for (size_t at = 0; at < FINAL; at += PIECE)
        if (buffer[at] != (char)(at >> 16) || buffer[at + PIECE - 1] != (char)(at >> 16)) return 24;
    long peak = proc_status_field(0, "VmHWM");
    long limit = resident + (long)(FINAL >> 10) + (long)(smalls >> 10) + 8 * 1024;
    printf("realloc_peak: step %zu: RSS %ld KiB at the start, peak %ld KiB (limit %ld)\n", step, resident, peak,
           limit);
    int failed = peak <= 0 || peak > limit;
    if (failed) printf("FAIL realloc_peak: step %zu: peak RSS %ld KiB, above %ld KiB\n", step, peak, limit);
    fflush(stdout);  // the watchdog's child ends with _exit
    return failed;
}

int main(void) {
    check_preload();
    step = 0;
    CHECK(run_with_watchdog(grow_buffer, 60, "realloc_peak: doubling") == 0, "buffer doubled by realloc");
    step = (size_t)MIB;
    CHECK(run_with_watchdog(grow_buffer, 60, "realloc_peak: 1 MiB steps") == 0, "buffer grown by 1 MiB steps");
    return test_exit("realloc_peak");
}
