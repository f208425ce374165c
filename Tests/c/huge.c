// huge.c: absurd sizes cost nothing that stays.
//
// malloc(1 << 40) (1 TiB) and posix_memalign(&p, 1 << 39, 1) must either fail fast with
// ENOMEM (as glibc does here: the kernel refuses the mapping) or succeed without leaving
// metadata behind: after free, resident memory is within a few MiB of where it started,
// and neither call takes long. Then sizes from 256 MiB up, allocated, touched sparsely
// and freed, leave RSS where it was too, and the allocator keeps working.
#include "testutil.h"

static void try_huge(const char *what, size_t size, size_t alignment) {
    long before = resident_kib();
    double t0 = now_seconds();
    void *p = NULL;
    int rc = 0;
    errno = 0;
    if (alignment) {
        rc = posix_memalign(&p, alignment, size);
    } else {
        p = malloc(size);
        rc = p ? 0 : errno;
    }
    double took = now_seconds() - t0;
    long during = resident_kib();
    if (p) {
        ((volatile char *)p)[0] = 1;
        if (alignment) CHECK(((uintptr_t)p & (alignment - 1)) == 0, "%s: %p is not aligned", what, p);
        free(p);
    } else {
        CHECK(rc == ENOMEM, "%s failed with %d, want ENOMEM", what, rc);
    }
    double total = now_seconds() - t0;
    long after = resident_kib();
    printf("huge: %s: %s in %.3f s (%.3f s with free); RSS %ld -> %ld -> %ld KiB\n", what,
           p ? "succeeded" : "ENOMEM", took, total, before, during, after);
    CHECK(total < 0.5, "%s took %.3f s", what, total);
    CHECK(during - before < 8192, "%s: RSS grew by %ld KiB while it was live", what, during - before);
    CHECK(after - before < 4096, "%s: RSS grew by %ld KiB and stayed after free", what, after - before);
}

int main(void) {
    check_preload();
    // Warm up: the allocator's own start-up memory is not what is measured.
    for (int i = 0; i < 100; i++) free(malloc(100 + i * 1000));
    try_huge("malloc(1 TiB)", (size_t)1 << 40, 0);
    try_huge("malloc(2^36)", (size_t)1 << 36, 0);
    try_huge("posix_memalign(2^39, 1)", 1, (size_t)1 << 39);
    try_huge("posix_memalign(2^36, 2^30)", (size_t)1 << 30, (size_t)1 << 36);
    try_huge("malloc(1 TiB) again", (size_t)1 << 40, 0);

    // Big but possible: live, touched one byte per MiB, then freed.
    long base = resident_kib();
    for (int round = 0; round < 3; round++) {
        for (size_t size = (size_t)256 << 20; size <= ((size_t)2 << 30); size *= 2) {
            char *p = malloc(size);
            REQUIRE(p, "malloc(%zu MiB) failed", size >> 20);
            for (size_t off = 0; off < size; off += 1 << 20) p[off] = (char)off;
            free(p);
        }
    }
    long after = resident_kib();
    printf("huge: 256 MiB..2 GiB x3, touched 1 byte per MiB: RSS %ld -> %ld KiB\n", base, after);
    CHECK(after - base < 4096, "RSS grew by %ld KiB after freeing big blocks", after - base);
    void *q = malloc(12345);
    CHECK(q != NULL, "malloc after huge requests failed");
    free(q);
    return test_exit("huge");
}
