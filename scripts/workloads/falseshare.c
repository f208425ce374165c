/* falseshare: cache-line false sharing induced by the allocator
 * (Hoard's active-false and passive-false tests).
 *
 *   falseshare THREADS ROUNDS OBJS WRITES
 *
 * Passive phase (first, while the threads' caches are empty): the main thread
 * mallocs OBJS objects per thread back to back and hands each thread its share,
 * interleaved; each thread writes them, frees them (cross-thread frees) and then,
 * ROUNDS times, mallocs OBJS small objects (8..24 bytes), writes each of them
 * WRITES times, checks and frees them. An allocator that gives the freed
 * neighbours straight back to the freeing thread keeps the threads fighting
 * over the same cache lines.
 * Active phase: the same loop again, from the threads' own allocations: an
 * allocator that hands neighbouring bytes of one cache line to different
 * threads makes the writes fight over the line.
 * A live ballast of small objects (a few MiB) is kept for the whole run. The
 * checksum is the sum of the written counters, identical for every allocator.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long rounds, objs, writes;
static int nthreads, errors;
static void **handed;                 /* passive phase: objects from main */
static pthread_barrier_t barrier;

static uint64_t hammer(volatile uint64_t **o, long id) {
    uint64_t sum = 0;
    for (long w = 0; w < writes; w++)
        for (long k = 0; k < objs; k++) o[k][0] += (uint64_t)(id + k + 1);
    for (long k = 0; k < objs; k++) {
        uint64_t expect = (uint64_t)writes * (uint64_t)(id + k + 1) + 0x5A5A;
        if (o[k][0] != expect) __atomic_add_fetch(&errors, 1, __ATOMIC_RELAXED);
        sum += o[k][0];
    }
    return sum;
}

static uint64_t loop(long id, volatile uint64_t **o) {
    uint64_t sum = 0;
    for (long r = 0; r < rounds; r++) {
        for (long k = 0; k < objs; k++) {
            o[k] = malloc(8 + 8 * (size_t)((r + k) % 3));
            if (!o[k]) exit(3);
            o[k][0] = 0x5A5A;
        }
        sum += hammer(o, id);
        for (long k = 0; k < objs; k++) free((void *)o[k]);
    }
    return sum;
}

static void *worker(void *arg) {
    long id = (long)arg;
    volatile uint64_t **o = malloc((size_t)objs * sizeof *o);
    uint64_t sum = 0;
    /* passive-false: objects allocated by main, interleaved between threads */
    pthread_barrier_wait(&barrier);
    for (long k = 0; k < objs; k++) o[k] = handed[k * nthreads + id];
    sum += hammer(o, id);
    for (long k = 0; k < objs; k++) free((void *)o[k]);
    sum += loop(id, o);
    /* active-false */
    pthread_barrier_wait(&barrier);
    sum += loop(id, o);
    free(o);
    return (void *)(uintptr_t)sum;
}

int main(int argc, char **argv) {
    nthreads = argc > 1 ? atoi(argv[1]) : 2;
    rounds = argc > 2 ? atol(argv[2]) : 10000;
    objs = argc > 3 ? atol(argv[3]) : 8;
    writes = argc > 4 ? atol(argv[4]) : 1000;
    if (nthreads < 1 || nthreads > 256 || objs < 1) return 2;
    long nballast = 100000;
    void **ballast = malloc((size_t)nballast * sizeof *ballast);
    for (long i = 0; i < nballast; i++) {
        ballast[i] = malloc(48);
        if (!ballast[i]) exit(3);
        memset(ballast[i], (int)(i & 0xff), 48);
    }
    pthread_barrier_init(&barrier, NULL, (unsigned)nthreads + 1);
    pthread_t t[256];
    for (long i = 0; i < nthreads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
    handed = malloc((size_t)(objs * nthreads) * sizeof *handed);
    for (long k = 0; k < objs * nthreads; k++) {
        uint64_t *p = malloc(8);
        if (!p) exit(3);
        *p = 0x5A5A;
        handed[k] = p;
    }
    pthread_barrier_wait(&barrier);
    pthread_barrier_wait(&barrier);
    uint64_t sum = 0;
    for (long i = 0; i < nthreads; i++) { void *r; pthread_join(t[i], &r); sum += (uint64_t)(uintptr_t)r; }
    free(handed);
    for (long i = 0; i < nballast; i++) {
        unsigned char *b = ballast[i];
        if (b[0] != (unsigned char)(i & 0xff) || b[47] != (unsigned char)(i & 0xff)) errors++;
        free(b);
    }
    free(ballast);
    printf("checksum %llu\n", (unsigned long long)sum);
    if (errors) { fprintf(stderr, "falseshare: %d corrupted objects\n", errors); return 1; }
    return 0;
}
