// scavenge.c: returning memory to the OS must never touch live data. Worker threads
// allocate, fill, verify and free blocks of 4 KiB .. 2 MiB (and calloc, which must read
// zero even when its pages were just released) while another thread keeps calling
// malloc_trim(0) (a full scavenge) and the workers free in bursts so that there are
// always free pages to release. A page released with MADV_DONTNEED while handed out
// would read back as zero: the pattern checks catch it. Bounded to ~3 seconds.
#include "testutil.h"

#include <pthread.h>

#define WORKERS 3
#define SLOTS 48
#define RUN_SECONDS 3.0

static int stop;
static long trims, checked;

static size_t pick_size(uint64_t *rng) {
    *rng = mix64(*rng);
    unsigned c = (unsigned)(*rng % 100);
    size_t r = (size_t)(*rng >> 16);
    if (c < 50) return 4096 + r % (64 << 10);
    if (c < 90) return (64 << 10) + r % (512 << 10);
    return (512 << 10) + r % (1536 << 10);
}

static void *worker(void *arg) {
    long id = (long)arg;
    uint64_t rng = 0xabcdef + (uint64_t)id;
    unsigned char *p[SLOTS] = {0};
    size_t n[SLOTS] = {0};
    uint64_t seed[SLOTS] = {0};
    long iter = 0;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        rng = mix64(rng);
        int s = (int)(rng % SLOTS);
        if (p[s]) {
            size_t bad = verify_seed(p[s], n[s], seed[s]);
            CHECK(bad == n[s], "worker %ld: live block %p of %zu bytes changed at offset %zu (released under our feet?)",
                  id, (void *)p[s], n[s], bad);
            __atomic_fetch_add(&checked, 1, __ATOMIC_RELAXED);
            free(p[s]);
            p[s] = NULL;
        }
        size_t sz = pick_size(&rng);
        if (rng & 1) {
            unsigned char *c = calloc(1, sz);
            REQUIRE(c, "calloc(%zu) failed", sz);
            for (size_t k = 0; k < sz; k += 256)
                if (c[k]) { CHECK(0, "worker %ld: calloc(%zu) byte %zu is 0x%02x", id, sz, k, c[k]); break; }
            CHECK(c[sz - 1] == 0, "worker %ld: calloc(%zu) last byte is 0x%02x", id, sz, c[sz - 1]);
            p[s] = c;
        } else {
            p[s] = malloc(sz);
            REQUIRE(p[s], "malloc(%zu) failed", sz);
        }
        n[s] = sz;
        seed[s] = rng;
        fill_seed(p[s], sz, seed[s]);
        // Now and then free most blocks at once: lots of free pages for the scavenger.
        if (++iter % 200 == 0) {
            for (int k = 0; k < SLOTS; k++)
                if (p[k] && k % 8) {
                    CHECK(verify_seed(p[k], n[k], seed[k]) == n[k], "worker %ld: block changed before a burst free", id);
                    free(p[k]);
                    p[k] = NULL;
                }
            usleep(2000);
        }
        if (TEST_FAIL_COUNT() > 10) break;
    }
    for (int k = 0; k < SLOTS; k++)
        if (p[k]) {
            CHECK(verify_seed(p[k], n[k], seed[k]) == n[k], "worker %ld: block changed at the end", id);
            free(p[k]);
        }
    return NULL;
}

static void *trimmer(void *arg) {
    (void)arg;
    while (!__atomic_load_n(&stop, __ATOMIC_ACQUIRE)) {
        int t = malloc_trim(0);
        CHECK(t == 0 || t == 1, "malloc_trim returned %d", t);
        __atomic_fetch_add(&trims, 1, __ATOMIC_RELAXED);
        usleep(1000);
    }
    return NULL;
}

int main(void) {
    check_preload();
    pthread_t w[WORKERS], t;
    for (long i = 0; i < WORKERS; i++) REQUIRE(pthread_create(&w[i], NULL, worker, (void *)i) == 0, "pthread_create");
    REQUIRE(pthread_create(&t, NULL, trimmer, NULL) == 0, "pthread_create");
    double start = now_seconds();
    while (now_seconds() - start < RUN_SECONDS && TEST_FAIL_COUNT() == 0) usleep(20000);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < WORKERS; i++) pthread_join(w[i], NULL);
    pthread_join(t, NULL);
    printf("scavenge: %ld blocks checked, %ld malloc_trim calls in %.1f s\n", checked, trims, now_seconds() - start);
    CHECK(checked > 100, "only %ld blocks checked", checked);
    return test_exit("scavenge");
}
