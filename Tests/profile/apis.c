// The malloc API with every allocation sampled (SWIFTHEAP_PROFILE_RATE=1): sampled
// objects are spans of their own, so this checks that each entry point still keeps
// its promises when its object is a sample: sizes, zeroing, alignment, realloc's
// contents (in place and moved), frees from another thread. At the end every object
// is freed, and the profile this program dumps must show nothing in use.
//
//   apis DUMP_PATH      (also writes PATH.1 through swiftheap_profile_dump(NULL))
//   apis --off PATH     (profiling off: the dump fails with EOPNOTSUPP)
#include <malloc.h>
#include <pthread.h>
#include "profutil.h"

#define COUNT 2000
static void *objects[COUNT];

NOINLINE void *api_malloc(size_t n) { return malloc(n); }
NOINLINE void *api_calloc(size_t n) { return calloc(n, 1); }

static void pattern(unsigned char *p, size_t n, unsigned seed) { for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(i * 31 + seed); }
static int has_pattern(const unsigned char *p, size_t n, unsigned seed) {
    for (size_t i = 0; i < n; i++) if (p[i] != (unsigned char)(i * 31 + seed)) return 0;
    return 1;
}

static void *free_all(void *argument) {
    (void)argument;
    for (int i = 0; i < COUNT; i++) free(objects[i]);
    return NULL;
}

int main(int argc, char **argv) {
    require_swiftheap();
    CHECK(argc > 1);
    if (strcmp(argv[1], "--off") == 0) {  // apis --off PATH: run without SWIFTHEAP_PROFILE
        CHECK(argc > 2);
        errno = 0;
        CHECK(swiftheap_profile_dump(argv[2]) == -1 && errno == EOPNOTSUPP);
        printf("off ok\n");
        return 0;
    }
    uint64_t rng = 7;
    // malloc: usable sizes, patterns.
    for (int i = 0; i < COUNT; i++) {
        size_t n = 1 + (size_t)(next_random(&rng) % 70000);
        unsigned char *p = api_malloc(n);
        CHECK(p && ((uintptr_t)p & 15) == 0 && malloc_usable_size(p) >= n);
        pattern(p, n, (unsigned)i);
        objects[i] = p;
    }
    rng = 7;
    for (int i = 0; i < COUNT; i++) {
        size_t n = 1 + (size_t)(next_random(&rng) % 70000);
        CHECK(has_pattern(objects[i], n, (unsigned)i));
        free(objects[i]);
    }
    // calloc over memory dirtied and freed just before.
    for (int i = 0; i < 200; i++) {
        size_t n = 1 + (size_t)(next_random(&rng) % 100000);
        unsigned char *dirty = malloc(n);
        memset(dirty, 0xFF, n);
        free(dirty);
        unsigned char *p = api_calloc(n);
        CHECK(p);
        for (size_t k = 0; k < n; k++) CHECK(p[k] == 0);
        free(p);
    }
    // realloc: grow and shrink through small and large sizes, in place and moved.
    size_t sizes[] = { 10, 100, 5000, 33000, 200000, 1 << 20, 3 << 20, 40000, 300, 8 };
    unsigned char *r = malloc(1);
    r[0] = 1;
    size_t kept = 1;
    for (int round = 0; round < 20; round++) {
        for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
            size_t n = sizes[s] + (size_t)round;
            r = realloc(r, n);
            CHECK(r);
            CHECK(has_pattern(r, kept < n ? kept : n, 9) || kept == 1);
            pattern(r, n, 9);
            kept = n;
        }
    }
    free(r);
    // The aligned entry points.
    for (size_t alignment = 16; alignment <= (64u << 10); alignment *= 2) {
        void *p = NULL;
        CHECK(posix_memalign(&p, alignment, 100) == 0 && ((uintptr_t)p & (alignment - 1)) == 0);
        void *q = aligned_alloc(alignment, alignment * 3);
        void *m = memalign(alignment, 50000);
        CHECK(q && ((uintptr_t)q & (alignment - 1)) == 0 && m && ((uintptr_t)m & (alignment - 1)) == 0);
        memset(p, 1, 100); memset(q, 2, alignment * 3); memset(m, 3, 50000);
        free(p); free(q); free(m);
    }
    void *v = valloc(10), *pv = pvalloc(5000);
    CHECK(v && ((uintptr_t)v & 4095) == 0 && pv && ((uintptr_t)pv & 4095) == 0);
    free(v); free(pv);
    free(NULL);
    // Sampled objects freed by another thread.
    for (int i = 0; i < COUNT; i++) objects[i] = api_malloc(16 + (size_t)i);
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, free_all, NULL) == 0);
    CHECK(pthread_join(thread, NULL) == 0);
    // The dump API: an explicit path, the next PATH.N, and a path that cannot be made.
    CHECK(swiftheap_profile_dump(argv[1]) == 0);
    CHECK(swiftheap_profile_dump(NULL) == 0);
    errno = 0;
    CHECK(swiftheap_profile_dump("/nonexistent-directory/profile") == -1 && errno == ENOENT);
    printf("apis ok\n");
    return 0;
}
