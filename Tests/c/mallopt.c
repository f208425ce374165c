// mallopt answers as glibc 2.36 does for the parameters glibc documents (1, and for
// M_MXFAST 0 outside 0...160), and under SwiftHeap 0 for unknown ones (glibc returns 1
// for those, against its own manual). Run under plain glibc (scripts/test-c --glibc),
// the documented answers are checked against glibc itself. Also: SwiftHeap's
// malloc_info refuses a null stream with EINVAL instead of crashing.
#include "testutil.h"
#include <limits.h>

int main(void) {
    check_preload();
    const int documented[] = {M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX,
                              M_CHECK_ACTION, M_PERTURB, M_ARENA_TEST, M_ARENA_MAX};
    const int values[] = {INT_MIN, -1, 0, 1, 64, 160, 161, 1 << 20, 32 << 20, (32 << 20) + 1, INT_MAX};
    for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
        int value = values[v];
        CHECK(mallopt(M_MXFAST, value) == (value >= 0 && value <= 160), "mallopt(M_MXFAST, %d)", value);
        for (size_t p = 0; p < sizeof documented / sizeof documented[0]; p++)
            CHECK(mallopt(documented[p], value) == 1, "mallopt(%d, %d) != 1", documented[p], value);
    }
    // A program that tunes glibc and checks the answer keeps running, and so does malloc.
    void *p = malloc(1000);
    CHECK(p != NULL, "malloc after mallopt");
    free(p);
    if (getenv("SWIFTHEAP_EXPECT")) {
        const int unknown[] = {0, 2, 3, 4, -9, 100, INT_MIN, INT_MAX};
        for (size_t u = 0; u < sizeof unknown / sizeof unknown[0]; u++)
            CHECK(mallopt(unknown[u], 1) == 0, "mallopt(%d, 1) (unknown) != 0", unknown[u]);
        errno = 0;
        CHECK(malloc_info(0, NULL) == EINVAL && errno == EINVAL, "malloc_info(0, NULL) is not EINVAL");
    }
    return test_exit("mallopt");
}
