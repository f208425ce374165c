/* churn: small-object churn with a live working set, private to each thread.
 *
 *   churn THREADS OPS_PER_THREAD SLOTS
 *
 * Each thread owns SLOTS slots, fills them, then OPS_PER_THREAD times frees a
 * random slot and puts a fresh block of a random size (8..512 bytes, mostly
 * small) in it. Blocks carry a header and a tail byte that are checked on free.
 * Prints a checksum that depends only on the seeded random sequence, so every
 * allocator must print the same one. Used for st-churn (1 thread), mt2-churn
 * and mt8-churn (fixed work per thread).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

static long ops_per_thread, nslots;
static int errors;


static const size_mix mix = {70, 95, 8, 64, 65, 256, 257, 512};
static inline size_t pick_size(uint64_t *s) { return pick_from(&mix, s); }

static inline void *make(size_t sz, uint32_t tag) {
    unsigned char *p = malloc(sz);
    if (!p) { fprintf(stderr, "churn: malloc(%zu) failed\n", sz); exit(3); }
    uint32_t h[2] = { (uint32_t)sz, tag };
    memcpy(p, h, 8);
    p[sz - 1] = (unsigned char)(sz ^ tag);
    return p;
}

static inline uint64_t check(unsigned char *p) {
    uint32_t h[2];
    memcpy(h, p, 8);
    size_t sz = h[0];
    if (sz < 8 || sz > 512 || p[sz - 1] != (unsigned char)(sz ^ h[1])) {
        __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
        return 0;
    }
    return sz + h[1];
}

static void *worker(void *arg) {
    long id = (long)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1) | 1;
    void **slot = calloc((size_t)nslots, sizeof *slot);
    uint64_t sum = 0;
    for (long i = 0; i < nslots; i++) slot[i] = make(pick_size(&s), (uint32_t)i);
    for (long n = 0; n < ops_per_thread; n++) {
        long i = (long)(rnd(&s) % (uint64_t)nslots);
        sum += check(slot[i]);
        free(slot[i]);
        slot[i] = make(pick_size(&s), (uint32_t)n);
    }
    for (long i = 0; i < nslots; i++) { sum += check(slot[i]); free(slot[i]); }
    free(slot);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 1;
    ops_per_thread = argc > 2 ? atol(argv[2]) : 20000000;
    nslots = argc > 3 ? atol(argv[3]) : 100000;
    pthread_t t[256];
    if (threads < 1 || threads > 256) return 2;
    uint64_t sum = 0;
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (long i = 0; i < threads; i++) { void *r; pthread_join(t[i], &r); sum += (uint64_t)(uintptr_t)r; }
    printf("checksum %llu\n", (unsigned long long)sum);
    if (errors) { fprintf(stderr, "churn: %d corrupted blocks\n", errors); return 1; }
    return 0;
}
