// Statistics: mallinfo2() follows the heap (arena, in-use and free bytes, large
// objects), mallinfo() agrees with it, and malloc_stats() writes SwiftHeap's summary
// to stderr (checked through a pipe on fd 2).
#include "testutil.h"
#include <fcntl.h>
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"  // mallinfo(), checked for agreement

static void check_mallinfo(void) {
    struct mallinfo2 before = mallinfo2();
    enum { N = 20000 };
    static void *small[N];
    for (int i = 0; i < N; i++) small[i] = malloc(100);
    void *big = malloc(3 << 20);
    REQUIRE(big != NULL, "malloc(3 MiB)");
    struct mallinfo2 during = mallinfo2();
    CHECK(during.arena > 0, "arena is 0");
    CHECK(during.uordblks >= before.uordblks + N * 100 + (3 << 20),
          "in-use bytes did not grow by what was allocated: %zu -> %zu", before.uordblks, during.uordblks);
    CHECK(during.uordblks <= during.arena, "in use %zu above arena %zu", during.uordblks, during.arena);
    CHECK(during.fordblks == during.arena - during.uordblks, "free bytes are not arena - in use");
    CHECK(during.hblks >= before.hblks + 1, "large object count did not grow");
    CHECK(during.hblkhd >= (3u << 20), "large object bytes %zu below 3 MiB", during.hblkhd);
    struct mallinfo old = mallinfo();
    CHECK((size_t)(unsigned)old.arena == (during.arena & 0xffffffffu), "mallinfo().arena disagrees with mallinfo2()");
    for (int i = 0; i < N; i++) free(small[i]);
    free(big);
    struct mallinfo2 after = mallinfo2();
    CHECK(after.uordblks + N * 100 <= during.uordblks, "in-use bytes did not fall after frees: %zu -> %zu",
          during.uordblks, after.uordblks);
    CHECK(after.hblks + 1 <= during.hblks, "large object count did not fall");
}

static void check_malloc_stats(void) {
    char text[65536];
    size_t length = capture_malloc_stats(text, sizeof text);
    if (getenv("SWIFTHEAP_EXPECT")) {
        CHECK(strstr(text, "swiftheap stats") != NULL, "malloc_stats() did not print SwiftHeap's summary: %.200s", text);
        CHECK(strstr(text, "mapped (arenas):") != NULL, "no mapped line");
        CHECK(strstr(text, "scavenge generations:") != NULL, "no scavenger line");
    } else {
        CHECK(length > 0, "malloc_stats() printed nothing");
    }
}

int main(void) {
    check_preload();
    if (getenv("SWIFTHEAP_EXPECT")) check_mallinfo();  // glibc's fields mean other things
    check_malloc_stats();
    return test_exit("stats");
}
