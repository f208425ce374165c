// align.c: alignment and usable size of every small size, big odd sizes, and the
// aligned allocation functions over alignments 16 B .. 4 MiB.
#include "testutil.h"

static size_t page_size;

// Every size 1..4096, all live at once: 16-byte aligned, usable >= size, the whole
// usable area writable, and no two blocks overlap (each keeps its own pattern).
static void test_every_small_size(void) {
    enum { MAX = 4096 };
    static unsigned char *p[MAX + 1];
    static size_t us[MAX + 1];
    for (size_t s = 1; s <= MAX; s++) {
        p[s] = malloc(s);
        REQUIRE(p[s], "malloc(%zu) returned NULL", s);
        CHECK(is_aligned(p[s], 16), "malloc(%zu) = %p is not 16-byte aligned", s, p[s]);
        us[s] = malloc_usable_size(p[s]);
        CHECK(us[s] >= s, "malloc_usable_size(malloc(%zu)) = %zu", s, us[s]);
        fill_seed(p[s], us[s], s);
    }
    for (size_t s = 1; s <= MAX; s++) {
        size_t bad = verify_seed(p[s], us[s], s);
        CHECK(bad == us[s], "block of size %zu at %p (usable %zu) overwritten at offset %zu", s, p[s], us[s], bad);
    }
    // Free every other one, allocate again into the holes, check the survivors.
    for (size_t s = 1; s <= MAX; s += 2) free(p[s]);
    for (size_t s = 1; s <= MAX; s += 2) {
        p[s] = malloc(s);
        REQUIRE(p[s], "malloc(%zu) returned NULL", s);
        us[s] = malloc_usable_size(p[s]);
        CHECK(us[s] >= s, "malloc_usable_size(malloc(%zu)) = %zu", s, us[s]);
        fill_seed(p[s], us[s], s + 100000);
    }
    for (size_t s = 1; s <= MAX; s++) {
        uint64_t seed = (s & 1) ? s + 100000 : s;
        size_t bad = verify_seed(p[s], us[s], seed);
        CHECK(bad == us[s], "block of size %zu overwritten at offset %zu (second round)", s, bad);
        free(p[s]);
    }
}

static void test_big_sizes(void) {
    static const size_t sizes[] = {4097, 8191, 12289, 32767, 65537, 100003, 131071, 262147,
                                   (1 << 20) - 1, (1 << 20) + 1, (3 << 20) + 7, (8 << 20) - 4095,
                                   (16 << 20) - 1, (16 << 20) + 4097, (32 << 20) + 3, 48 << 20,
                                   (64 << 20) - 17, 64 << 20};
    enum { N = sizeof sizes / sizeof sizes[0] };
    unsigned char *p[N];
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            p[i] = malloc(sizes[i]);
            REQUIRE(p[i], "malloc(%zu) returned NULL", sizes[i]);
            CHECK(is_aligned(p[i], 16), "malloc(%zu) = %p not 16-byte aligned", sizes[i], p[i]);
            size_t us = malloc_usable_size(p[i]);
            CHECK(us >= sizes[i], "malloc_usable_size(malloc(%zu)) = %zu", sizes[i], us);
            memset(p[i], 0xC3, us); // the whole usable area is writable
            size_t h = sizes[i] / 2 < 4096 ? sizes[i] / 2 : 4096; // head and tail do not overlap
            fill_seed(p[i], h, i * 7 + round);
            fill_seed(p[i] + sizes[i] - h, h, i * 13 + round);
        }
        for (int i = 0; i < N; i++) {
            size_t h = sizes[i] / 2 < 4096 ? sizes[i] / 2 : 4096;
            CHECK(verify_seed(p[i], h, i * 7 + round) == h, "big block %zu: head overwritten", sizes[i]);
            CHECK(verify_seed(p[i] + sizes[i] - h, h, i * 13 + round) == h,
                  "big block %zu: tail overwritten", sizes[i]);
            free(p[i]);
        }
    }
}

static void test_aligned_functions(void) {
    static const size_t sizes[] = {1, 7, 16, 100, 1000, 4096, 4097, 65536, 100000, (1 << 20) + 1};
    enum { NS = sizeof sizes / sizeof sizes[0] };
    size_t aligns[32];
    int na = 0;
    for (size_t a = 16; a <= (4 << 20); a <<= 1) aligns[na++] = a;
    for (int fn = 0; fn < 3; fn++) {
        static const char *names[] = {"posix_memalign", "aligned_alloc", "memalign"};
        for (int ai = 0; ai < na; ai++) {
            size_t a = aligns[ai];
            unsigned char *p[NS];
            for (int si = 0; si < NS; si++) {
                size_t n = sizes[si];
                void *q = NULL;
                if (fn == 0) {
                    int rc = posix_memalign(&q, a, n);
                    CHECK(rc == 0, "posix_memalign(%zu, %zu) returned %d", a, n, rc);
                } else if (fn == 1) {
                    q = aligned_alloc(a, n);
                } else {
                    q = memalign(a, n);
                }
                REQUIRE(q, "%s(%zu, %zu) returned NULL", names[fn], a, n);
                CHECK(is_aligned(q, a), "%s(%zu, %zu) = %p is not aligned", names[fn], a, n, q);
                size_t us = malloc_usable_size(q);
                CHECK(us >= n, "%s(%zu, %zu): usable size %zu", names[fn], a, n, us);
                p[si] = q;
                fill_seed(q, n, (uint64_t)a * 31 + si);
            }
            for (int si = 0; si < NS; si++) {
                size_t bad = verify_seed(p[si], sizes[si], (uint64_t)a * 31 + si);
                CHECK(bad == sizes[si], "%s(%zu, %zu): overwritten at %zu", names[fn], a, sizes[si], bad);
            }
            // Free in a mixed order; interleave plain mallocs reusing the space.
            for (int si = 0; si < NS; si += 2) free(p[si]);
            void *m = malloc(200);
            REQUIRE(m, "malloc(200) failed");
            memset(m, 1, 200);
            for (int si = 1; si < NS; si += 2) free(p[si]);
            free(m);
        }
    }
}

static void test_valloc_pvalloc(void) {
    static const size_t sizes[] = {0, 1, 100, 4095, 4096, 4097, 10000, 65536, 100001, (1 << 20) + 5};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        size_t n = sizes[i];
        unsigned char *v = valloc(n);
        REQUIRE(v, "valloc(%zu) returned NULL", n);
        CHECK(is_aligned(v, page_size), "valloc(%zu) = %p not page aligned", n, v);
        CHECK(malloc_usable_size(v) >= n, "valloc(%zu): usable %zu", n, malloc_usable_size(v));
        if (n) memset(v, 0x11, n);

        unsigned char *pv = pvalloc(n);
        REQUIRE(pv, "pvalloc(%zu) returned NULL", n);
        CHECK(is_aligned(pv, page_size), "pvalloc(%zu) = %p not page aligned", n, pv);
        size_t rounded = (n + page_size - 1) / page_size * page_size;
        // (pvalloc(0): glibc gives a minimal block, not a page; only alignment is checked.)
        size_t us = malloc_usable_size(pv);
        CHECK(us >= rounded, "pvalloc(%zu): usable %zu < %zu (size must round up to a page)", n, us, rounded);
        memset(pv, 0x22, rounded); // the whole rounded size is ours
        if (n) CHECK(v[n - 1] == 0x11, "valloc block clobbered by pvalloc block");
        free(v);
        free(pv);
    }
}

// memalign is glibc's own legacy function, and glibc rounds an alignment that is not a
// power of two up to the next one (aligned_alloc keeps C17's EINVAL here; api.c).
static void test_memalign_odd_alignments(void) {
    static const size_t odd[] = {3, 24, 48, 100, 1000, 5000, 65537, (1 << 20) + 3};
    static const size_t sizes[] = {1, 24, 1000, 70000};
    for (unsigned i = 0; i < sizeof odd / sizeof odd[0]; i++) {
        size_t want = 16;
        while (want < odd[i]) want <<= 1;
        for (unsigned k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
            errno = 0;
            void *q = memalign(odd[i], sizes[k]);
            CHECK(q != NULL, "memalign(%zu, %zu) returned NULL (errno %d); glibc rounds the alignment up",
                  odd[i], sizes[k], errno);
            if (!q) continue;
            CHECK(is_aligned(q, want), "memalign(%zu, %zu) = %p is not aligned to %zu", odd[i], sizes[k], q, want);
            CHECK(malloc_usable_size(q) >= sizes[k], "memalign(%zu, %zu): usable size %zu", odd[i], sizes[k],
                  malloc_usable_size(q));
            memset(q, 0x5C, sizes[k]);
            free(q);
        }
    }
    errno = 0;
    void *q = memalign(((size_t)1 << 63) + 1, 16);
    CHECK(q == NULL && errno == EINVAL, "memalign(2^63 + 1, 16) = %p errno %d, want NULL/EINVAL", q, errno);
}

int main(void) {
    check_preload();
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    test_every_small_size();
    test_big_sizes();
    test_aligned_functions();
    test_valloc_pvalloc();
    test_memalign_odd_alignments();
    return test_exit("align");
}
