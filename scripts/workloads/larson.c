/* larson: server-like churn on a SHARED array of objects (after Larson & Krishnan).
 *
 *   larson THREADS OPS_PER_THREAD SLOTS MINSIZE MAXSIZE
 *
 * The main thread fills SLOTS slots. Then every thread, OPS_PER_THREAD times,
 * mallocs a block of a random size in [MINSIZE, MAXSIZE], swaps it into a
 * random slot of the shared array (atomic exchange) and frees the block it got
 * back, which was most often allocated by another thread. Blocks carry a header
 * and a tail byte that are checked before the free. The checksum is the sum of
 * what each thread allocated, so it does not depend on the interleaving.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

static long ops_per_thread, nslots, minsz, maxsz;
static unsigned char **slots;
static int errors;


static inline unsigned char *make(uint64_t *s, uint64_t *sum) {
    size_t sz = (size_t)(minsz + (long)(rnd(s) % (uint64_t)(maxsz - minsz + 1)));
    unsigned char *p = malloc(sz);
    if (!p) { fprintf(stderr, "larson: malloc(%zu) failed\n", sz); exit(3); }
    uint32_t h[2] = { (uint32_t)sz, (uint32_t)(*s >> 32) };
    memcpy(p, h, 8);
    p[sz - 1] = (unsigned char)(sz ^ h[1]);
    *sum += sz + h[1];
    return p;
}

static inline void check_free(unsigned char *p, int *bad) {
    if (!p) return;
    uint32_t h[2];
    memcpy(h, p, 8);
    if (h[0] < (uint32_t)minsz || h[0] > (uint32_t)maxsz || p[h[0] - 1] != (unsigned char)(h[0] ^ h[1])) (*bad)++;
    free(p);
}

static void *worker(void *arg) {
    long id = (long)arg;
    uint64_t s = 0xD1B54A32D192ED03ull * (uint64_t)(id + 3) | 1, sum = 0;
    int bad = 0;
    for (long n = 0; n < ops_per_thread; n++) {
        long i = (long)(rnd(&s) % (uint64_t)nslots);
        unsigned char *p = make(&s, &sum);
        check_free(__atomic_exchange_n(&slots[i], p, __ATOMIC_ACQ_REL), &bad);
    }
    __atomic_add_fetch(&errors, bad, __ATOMIC_RELAXED);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    ops_per_thread = argc > 2 ? atol(argv[2]) : 5000000;
    nslots = argc > 3 ? atol(argv[3]) : 100000;
    minsz = argc > 4 ? atol(argv[4]) : 16;
    maxsz = argc > 5 ? atol(argv[5]) : 256;
    if (threads < 1 || threads > 256 || minsz < 8 || maxsz < minsz || nslots < 1) return 2;
    slots = calloc((size_t)nslots, sizeof *slots);
    uint64_t s = 12345, sum = 0;
    for (long i = 0; i < nslots; i++) slots[i] = make(&s, &sum);
    pthread_t t[256];
    for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    for (long i = 0; i < threads; i++) { void *r; pthread_join(t[i], &r); sum += (uint64_t)(uintptr_t)r; }
    int bad = 0;
    for (long i = 0; i < nslots; i++) check_free(slots[i], &bad);
    free(slots);
    errors += bad;
    printf("checksum %llu\n", (unsigned long long)sum);
    if (errors) { fprintf(stderr, "larson: %d corrupted blocks\n", errors); return 1; }
    return 0;
}
