// api.c: glibc semantics of the malloc API, as seen by a C program.
// Run by scripts/test-c under LD_PRELOAD; must also pass under plain glibc.
#include "testutil.h"

#include <limits.h>
#include <stddef.h>

static void test_malloc_basic(void) {
    // malloc(0): a unique, freeable pointer (glibc returns non-NULL).
    void *a = malloc(0), *b = malloc(0);
    CHECK(a != NULL && b != NULL, "malloc(0) returned NULL (%p, %p)", a, b);
    CHECK(a != b || a == NULL, "malloc(0) twice returned the same pointer %p", a);
    free(a);
    free(b);

    // free(NULL) does nothing.
    free(NULL);

    // Sizes written through and read back, all live at once (no overlap).
    enum { N = 64 };
    static const size_t sizes[] = {1, 2, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 48, 63, 64, 65, 96, 127,
                                   128, 129, 200, 255, 256, 257, 500, 511, 512, 513, 1000, 1023,
                                   1024, 1025, 2048, 3000, 4095, 4096, 4097, 8191, 8192, 8193, 12345,
                                   16384, 32767, 32768, 32769, 65535, 65536, 65537, 100000, 131072,
                                   131073, 262144, 300000, 524288, 1 << 20, (1 << 20) + 1,
                                   2 << 20, 3 << 20, 5000000, 8 << 20, 10 << 20, 16 << 20,
                                   (16 << 20) + 3, 20 << 20};
    void *p[N];
    for (int i = 0; i < N; i++) {
        p[i] = malloc(sizes[i]);
        REQUIRE(p[i] != NULL, "malloc(%zu) returned NULL", sizes[i]);
        CHECK(is_aligned(p[i], 16), "malloc(%zu) = %p not 16-byte aligned", sizes[i], p[i]);
        CHECK(malloc_usable_size(p[i]) >= sizes[i], "malloc_usable_size(malloc(%zu)) = %zu",
              sizes[i], malloc_usable_size(p[i]));
        fill_seed(p[i], sizes[i], 1000 + i);
    }
    for (int i = 0; i < N; i++) {
        size_t bad = verify_seed(p[i], sizes[i], 1000 + i);
        CHECK(bad == sizes[i], "block %d of size %zu corrupted at offset %zu (overlap?)", i, sizes[i], bad);
    }
    for (int i = 0; i < N; i += 2) free(p[i]);
    for (int i = 1; i < N; i += 2) {
        size_t bad = verify_seed(p[i], sizes[i], 1000 + i);
        CHECK(bad == sizes[i], "block %d of size %zu corrupted at %zu after freeing neighbours", i, sizes[i], bad);
        free(p[i]);
    }
}

static void test_calloc(void) {
    static const size_t sizes[] = {1, 8, 16, 24, 40, 100, 256, 1000, 4096, 5000, 32768, 65536,
                                   100000, 262144, 1 << 20};
    enum { NS = sizeof sizes / sizeof sizes[0], PER = 16 };
    void *blk[PER];
    for (int s = 0; s < NS; s++) {
        size_t n = sizes[s];
        // Dirty blocks of this size, free them, then calloc the same size: all zero.
        for (int k = 0; k < PER; k++) {
            blk[k] = malloc(n);
            REQUIRE(blk[k], "malloc(%zu) failed", n);
            memset(blk[k], 0xAA, n);
        }
        for (int k = 0; k < PER; k++) free(blk[k]);
        for (int k = 0; k < PER; k++) {
            unsigned char *c = calloc(1, n);
            REQUIRE(c, "calloc(1, %zu) failed", n);
            size_t bad = n;
            for (size_t i = 0; i < n; i++)
                if (c[i]) { bad = i; break; }
            CHECK(bad == n, "calloc(1, %zu) after freeing dirty blocks: byte %zu is 0x%02x", n, bad, c[bad]);
            memset(c, 0xAA, n);
            blk[k] = c;
        }
        for (int k = 0; k < PER; k++) free(blk[k]);
        // Same total through count*size.
        unsigned char *c = calloc(n, 1);
        REQUIRE(c, "calloc(%zu, 1) failed", n);
        for (size_t i = 0; i < n; i++)
            if (c[i]) { CHECK(0, "calloc(%zu, 1) byte %zu is 0x%02x", n, i, c[i]); break; }
        free(c);
    }
    // Large callocs, also after dirtying a block of the same size.
    static const size_t large[] = {1 << 20, (1 << 20) + 17, 4 << 20, 10 << 20, 33 << 20};
    for (unsigned s = 0; s < sizeof large / sizeof large[0]; s++) {
        size_t n = large[s];
        for (int round = 0; round < 3; round++) {
            uint64_t *c = calloc(n / 8, 8);
            REQUIRE(c, "calloc(%zu, 8) failed", n / 8);
            size_t words = n / 8;
            for (size_t i = 0; i < words; i++)
                if (c[i]) { CHECK(0, "calloc %zu bytes (round %d): word %zu is %#llx", n, round, i, (unsigned long long)c[i]); break; }
            memset(c, 0xAA, words * 8);
            free(c);
            unsigned char *d = malloc(n);
            REQUIRE(d, "malloc(%zu) failed", n);
            memset(d, 0x55, n);
            free(d);
        }
    }
    // calloc with a zero count or size: a unique freeable pointer (glibc: non-NULL).
    void *z1 = calloc(0, 16), *z2 = calloc(16, 0);
    CHECK(z1 != NULL && z2 != NULL && z1 != z2, "calloc(0,16)=%p calloc(16,0)=%p", z1, z2);
    free(z1);
    free(z2);
}

static void test_overflow(void) {
    void *p;
    errno = 0;
    p = calloc(SIZE_MAX / 2, 3);
    CHECK(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX/2, 3) = %p errno %d (want NULL, ENOMEM)", p, errno);
    errno = 0;
    p = calloc(SIZE_MAX, SIZE_MAX);
    CHECK(p == NULL && errno == ENOMEM, "calloc(SIZE_MAX, SIZE_MAX) = %p errno %d", p, errno);
    errno = 0;
    p = calloc((size_t)1 << 33, (size_t)1 << 33); // product wraps to 2^66 mod 2^64 = 0
    CHECK(p == NULL && errno == ENOMEM, "calloc(2^33, 2^33) = %p errno %d (product wraps to 0)", p, errno);
    errno = 0;
    p = calloc(((size_t)1 << 32) + 1, ((size_t)1 << 32) - 1); // wraps to SIZE_MAX
    CHECK(p == NULL && errno == ENOMEM, "calloc(2^32+1, 2^32-1) = %p errno %d", p, errno);

    errno = 0;
    p = malloc(SIZE_MAX);
    CHECK(p == NULL && errno == ENOMEM, "malloc(SIZE_MAX) = %p errno %d", p, errno);
    errno = 0;
    p = malloc((size_t)PTRDIFF_MAX + 1);
    CHECK(p == NULL && errno == ENOMEM, "malloc(PTRDIFF_MAX+1) = %p errno %d", p, errno);
    static const size_t near_max[] = {SIZE_MAX - 1, SIZE_MAX - 15, SIZE_MAX - 4095, SIZE_MAX - 4096,
                                      SIZE_MAX - (1 << 20), SIZE_MAX - (2 << 20) - 1, SIZE_MAX / 2 + 1};
    for (unsigned i = 0; i < sizeof near_max / sizeof near_max[0]; i++) {
        errno = 0;
        p = malloc(near_max[i]);
        CHECK(p == NULL && errno == ENOMEM, "malloc(%#zx) = %p errno %d (rounding must not wrap)", near_max[i], p, errno);
        if (p) free(p);
    }

    // Larger than the address space can hold: NULL and ENOMEM, and the heap stays usable.
    errno = 0;
    p = malloc((size_t)1 << 47);
    if (p) free(p);
    else CHECK(errno == ENOMEM, "malloc(2^47) = NULL with errno %d (want ENOMEM)", errno);
    errno = 0;
    p = malloc((size_t)1 << 50);
    CHECK(p == NULL && errno == ENOMEM, "malloc(2^50) = %p errno %d", p, errno);
    p = malloc(100);
    CHECK(p != NULL, "malloc(100) failed after impossible requests");
    free(p);

    // reallocarray: works normally; on overflow NULL/ENOMEM and the block is untouched.
    unsigned char *r = reallocarray(NULL, 10, 10);
    REQUIRE(r, "reallocarray(NULL, 10, 10) failed");
    fill_seed(r, 100, 77);
    r = reallocarray(r, 100, 100);
    REQUIRE(r, "reallocarray(p, 100, 100) failed");
    CHECK(verify_seed(r, 100, 77) == 100, "reallocarray lost content");
    errno = 0;
    void *q = reallocarray(r, SIZE_MAX / 2, 3);
    CHECK(q == NULL && errno == ENOMEM, "reallocarray(p, SIZE_MAX/2, 3) = %p errno %d", q, errno);
    errno = 0;
    q = reallocarray(r, (size_t)1 << 33, (size_t)1 << 33);
    CHECK(q == NULL && errno == ENOMEM, "reallocarray(p, 2^33, 2^33) = %p errno %d", q, errno);
    CHECK(verify_seed(r, 100, 77) == 100, "block changed after failed reallocarray");
    // realloc to an impossible size: NULL, ENOMEM, the old block intact and still ours.
    errno = 0;
    q = realloc(r, SIZE_MAX);
    CHECK(q == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX) = %p errno %d", q, errno);
    errno = 0;
    q = realloc(r, SIZE_MAX - 4096);
    CHECK(q == NULL && errno == ENOMEM, "realloc(p, SIZE_MAX-4096) = %p errno %d", q, errno);
    errno = 0;
    q = realloc(r, (size_t)PTRDIFF_MAX + 1);
    CHECK(q == NULL && errno == ENOMEM, "realloc(p, PTRDIFF_MAX+1) = %p errno %d", q, errno);
    CHECK(verify_seed(r, 100, 77) == 100, "block changed after failed realloc");
    free(r);

    // Aligned allocations of impossible sizes: size + alignment must not wrap.
    errno = 0;
    p = memalign(4096, SIZE_MAX - 100);
    CHECK(p == NULL && errno == ENOMEM, "memalign(4096, SIZE_MAX-100) = %p errno %d", p, errno);
    errno = 0;
    p = aligned_alloc(64, SIZE_MAX - 10);
    CHECK(p == NULL && errno == ENOMEM, "aligned_alloc(64, SIZE_MAX-10) = %p errno %d", p, errno);
    p = (void *)1;
    int rc = posix_memalign(&p, 1 << 20, SIZE_MAX - (1 << 19));
    CHECK(rc == ENOMEM, "posix_memalign(1 MiB, SIZE_MAX-512K) returned %d (want ENOMEM)", rc);
    CHECK(p == (void *)1, "posix_memalign changed *memptr on failure (%p)", p);
    errno = 0;
    p = valloc(SIZE_MAX - 100);
    CHECK(p == NULL && errno == ENOMEM, "valloc(SIZE_MAX-100) = %p errno %d", p, errno);
    errno = 0;
    p = pvalloc(SIZE_MAX - 100); // rounding up to a page must not wrap to 0
    CHECK(p == NULL && errno == ENOMEM, "pvalloc(SIZE_MAX-100) = %p errno %d", p, errno);
    if (p) free(p);
}

static void test_alignment_errors(void) {
    static const size_t bad[] = {0, 1, 2, 3, sizeof(void *) / 2, 12, 24, 48, 100, 4097,
                                 ((size_t)1 << 20) + 8, SIZE_MAX, SIZE_MAX / 2 + 2};
    for (unsigned i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        void *p = (void *)1;
        int rc = posix_memalign(&p, bad[i], 64);
        CHECK(rc == EINVAL, "posix_memalign(alignment %zu) returned %d (want EINVAL)", bad[i], rc);
        CHECK(p == (void *)1, "posix_memalign(alignment %zu) changed *memptr on failure", bad[i]);
        if (rc == 0 && p != (void *)1) free(p);
    }
    // Valid alignments that are not > 16.
    static const size_t good[] = {sizeof(void *), 16, 32};
    for (unsigned i = 0; i < sizeof good / sizeof good[0]; i++) {
        void *p = NULL;
        int rc = posix_memalign(&p, good[i], 10);
        CHECK(rc == 0 && p && is_aligned(p, good[i]), "posix_memalign(%zu, 10) rc %d p %p", good[i], rc, p);
        free(p);
    }
    // posix_memalign of size 0: success with NULL or a unique pointer (glibc: non-NULL).
    void *p0 = NULL;
    int rc0 = posix_memalign(&p0, 64, 0);
    CHECK(rc0 == 0, "posix_memalign(64, 0) returned %d", rc0);
    free(p0);

    // aligned_alloc: alignment that is not a power of two -> NULL, EINVAL (C17/glibc >= 2.38).
    // glibc 2.36 rounds the alignment up instead; accept that when not under SwiftHeap,
    // but the result must then be aligned to the next power of two.
    const char *e = getenv("SWIFTHEAP_EXPECT");
    int strict = e && strcmp(e, "1") == 0;
    static const size_t npot[] = {3, 24, 48, 100, 4097, 3 << 20};
    for (unsigned i = 0; i < sizeof npot / sizeof npot[0]; i++) {
        size_t a = npot[i], pow2 = 1;
        while (pow2 < a) pow2 <<= 1;
        errno = 0;
        void *p = aligned_alloc(a, 256);
        if (p == NULL) {
            CHECK(errno == EINVAL, "aligned_alloc(%zu, 256) = NULL with errno %d (want EINVAL)", a, errno);
        } else {
            CHECK(!strict, "aligned_alloc(%zu, 256) = %p (want NULL, EINVAL)", a, p);
            CHECK(is_aligned(p, pow2), "aligned_alloc(%zu) = %p not aligned to %zu", a, p, pow2);
            free(p);
        }
        errno = 0;
        p = memalign(a, 256);
        if (p == NULL) {
            CHECK(errno == EINVAL, "memalign(%zu, 256) = NULL with errno %d (want EINVAL)", a, errno);
        } else {
            // glibc (all versions) rounds memalign's alignment up to a power of two.
            CHECK(is_aligned(p, pow2), "memalign(%zu) = %p not aligned to %zu", a, p, pow2);
            free(p);
        }
    }
    // aligned_alloc(0, n): glibc >= 2.38 and C17 say EINVAL; older glibc treats it as malloc.
    errno = 0;
    void *pz = aligned_alloc(0, 64);
    if (pz) { CHECK(!strict, "aligned_alloc(0, 64) = %p (want NULL, EINVAL)", pz); free(pz); }
    else CHECK(errno == EINVAL, "aligned_alloc(0, 64) errno %d", errno);
    // Alignment above SIZE_MAX/2+1 can never be satisfied.
    errno = 0;
    void *ph = memalign(SIZE_MAX / 2 + 2, 64);
    CHECK(ph == NULL && errno == EINVAL, "memalign(SIZE_MAX/2+2, 64) = %p errno %d (want EINVAL)", ph, errno);
    // memalign with small alignments behaves as malloc.
    for (size_t a = 1; a <= 16; a <<= 1) {
        void *p = memalign(a, 33);
        CHECK(p && is_aligned(p, a), "memalign(%zu, 33) = %p", a, p);
        free(p);
    }
}

static void test_realloc_semantics(void) {
    // realloc(NULL, n) == malloc(n).
    unsigned char *p = realloc(NULL, 100);
    REQUIRE(p, "realloc(NULL, 100) returned NULL");
    CHECK(malloc_usable_size(p) >= 100, "realloc(NULL,100) usable %zu", malloc_usable_size(p));
    memset(p, 1, 100);
    // realloc(p, 0): frees p and returns NULL (glibc) or a unique freeable pointer.
    void *z = realloc(p, 0);
    if (z) {
        void *other = malloc(1);
        CHECK(other != z, "realloc(p, 0) returned a pointer that malloc hands out again");
        free(other);
        free(z);
    }
    // realloc(NULL, 0): like malloc(0).
    z = realloc(NULL, 0);
    CHECK(z != NULL, "realloc(NULL, 0) returned NULL (glibc returns a unique pointer)");
    free(z);

    // Fill every usable byte, then grow: all usable bytes are kept.
    static const size_t sizes[] = {1, 13, 16, 100, 1000, 4000, 5000, 40000, 70000, 300000, 1 << 20, 5 << 20};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *b = malloc(sizes[i]);
        REQUIRE(b, "malloc(%zu) failed", sizes[i]);
        size_t us = malloc_usable_size(b);
        CHECK(us >= sizes[i], "usable size %zu < requested %zu", us, sizes[i]);
        fill_seed(b, us, 500 + i);
        size_t grow[] = {us, us + 1, us * 2 + 7, us * 3 + 4096};
        for (unsigned g = 0; g < 4; g++) {
            unsigned char *nb = realloc(b, grow[g]);
            REQUIRE(nb, "realloc(%zu -> %zu) failed", us, grow[g]);
            b = nb;
            size_t bad = verify_seed(b, us, 500 + i);
            CHECK(bad == us, "realloc of a block of size %zu (usable %zu) to %zu: byte %zu lost",
                  sizes[i], us, grow[g], bad);
            CHECK(malloc_usable_size(b) >= grow[g], "usable %zu < %zu after realloc", malloc_usable_size(b), grow[g]);
        }
        free(b);
    }
}

static void test_errno_free(void) {
    static const size_t sizes[] = {0, 8, 100, 5000, 70000, 1 << 20, 16 << 20};
    for (unsigned i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        void *p = malloc(sizes[i]);
        errno = 1234;
        free(p);
        CHECK(errno == 1234, "free of a %zu-byte block changed errno to %d", sizes[i], errno);
    }
    void *a = memalign(1 << 16, 1 << 20);
    errno = 1234;
    free(a);
    CHECK(errno == 1234, "free of a memalign block changed errno to %d", errno);
    errno = 1234;
    free(NULL);
    CHECK(errno == 1234, "free(NULL) changed errno to %d", errno);
    // A batch of frees (which may flush a thread cache or return pages).
    enum { N = 3000 };
    static void *many[N];
    for (int i = 0; i < N; i++) many[i] = malloc(64 + (i % 7) * 1000);
    errno = 1234;
    for (int i = 0; i < N; i++) free(many[i]);
    CHECK(errno == 1234, "a batch of frees changed errno to %d", errno);
    // malloc_trim may release memory; it must not set errno when it succeeds either way.
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1, "malloc_trim(0) returned %d", t);
}

static void test_usable_size_and_misc(void) {
    CHECK(malloc_usable_size(NULL) == 0, "malloc_usable_size(NULL) = %zu", malloc_usable_size(NULL));
    for (size_t n = 1; n < 300000; n = n * 3 / 2 + 1) {
        unsigned char *p = malloc(n);
        REQUIRE(p, "malloc(%zu) failed", n);
        size_t us = malloc_usable_size(p);
        CHECK(us >= n, "malloc_usable_size(malloc(%zu)) = %zu", n, us);
        CHECK(us < n + 1 + n / 2 + 4096 + 64, "malloc_usable_size(malloc(%zu)) = %zu is absurdly large", n, us);
        memset(p, 0x5A, us); // every usable byte is ours to write
        free(p);
    }
    // malloc_trim returns 0 or 1, also after freeing a lot.
    enum { N = 200 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(64 << 10);
        if (b[i]) memset(b[i], 1, 64 << 10);
    }
    for (int i = 0; i < N; i++) free(b[i]);
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1, "malloc_trim(0) returned %d", t);
    t = malloc_trim(1 << 20);
    CHECK(t == 0 || t == 1, "malloc_trim(1 MiB) returned %d", t);
    // The heap still works after a trim, and memory handed out is writable.
    void *p = malloc(64 << 10);
    REQUIRE(p, "malloc after malloc_trim failed");
    memset(p, 2, 64 << 10);
    free(p);

    // mallinfo2 exists and can be called (its numbers are the allocator's business).
    struct mallinfo2 mi = mallinfo2();
    (void)mi;

    // glibc's __libc_* names and the allocator's names must agree on who owns a block.
    void *(*lm)(size_t) = (void *(*)(size_t))dlsym(RTLD_DEFAULT, "__libc_malloc");
    void (*lf)(void *) = (void (*)(void *))dlsym(RTLD_DEFAULT, "__libc_free");
    if (lm && lf) {
        void *x = lm(100);
        CHECK(x != NULL, "__libc_malloc(100) failed");
        memset(x, 3, 100);
        free(x);
        void *y = malloc(200);
        memset(y, 4, 200);
        lf(y);
    }
    // free_sized / free_aligned_sized (C23; exported by SwiftHeap, glibc >= 2.39).
    void (*fs)(void *, size_t) = (void (*)(void *, size_t))dlsym(RTLD_DEFAULT, "free_sized");
    void (*fas)(void *, size_t, size_t) = (void (*)(void *, size_t, size_t))dlsym(RTLD_DEFAULT, "free_aligned_sized");
    if (fs) {
        void *x = malloc(123);
        errno = 1234;
        fs(x, 123);
        CHECK(errno == 1234, "free_sized changed errno");
        fs(NULL, 0);
    }
    if (fas) {
        void *x = aligned_alloc(256, 512);
        fas(x, 256, 512);
        fas(NULL, 64, 0);
    }
}

int main(void) {
    check_preload();
    test_malloc_basic();
    test_calloc();
    test_overflow();
    test_alignment_errors();
    test_realloc_semantics();
    test_errno_free();
    test_usable_size_and_misc();
    return test_exit("api");
}
