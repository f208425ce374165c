/* xthread: most frees are remote, at a fixed number of objects per thread.
 *
 *   xthread THREADS OBJECTS_PER_THREAD [REMOTE_PERCENT [SLOTS]]
 *
 * THREADS threads (2..64) form a ring. Each mallocs OBJECTS_PER_THREAD blocks of
 * 16..512 bytes (70% <= 64, 25% <= 256) and writes a header and a tail byte into
 * each. REMOTE_PERCENT of them (default 90, drawn from the thread's seeded sequence)
 * are handed to the next thread in the ring, which checks and frees them: a remote
 * free. The others replace a random slot of the thread's private array of SLOTS
 * (default 4096) blocks, and the block they replace is freed by its own thread.
 *
 * The hand-off is one single-producer single-consumer ring of pointers per pair of
 * neighbours (16384 entries), with no lock: the producer publishes its tail every 64
 * pushes, the consumer takes everything published and then publishes its head, so
 * the harness itself costs a few instructions per object and two cache-line
 * transfers per batch. A thread whose outgoing ring is full drains its incoming ring
 * and yields, so a ring of full rings cannot deadlock. A thread that has made all
 * its objects keeps draining until its predecessor is done and its ring is empty.
 *
 * The work is fixed (not a fixed time): every thread makes exactly
 * OBJECTS_PER_THREAD objects, whatever the scheduling. The checksum is the sum of
 * size + tag over every object made, which depends only on the seeds; every thread
 * also sums what it frees, and the two totals must agree (exit 1 otherwise, or when
 * a header or tail was overwritten).
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

#define RING 16384                  /* entries per ring, a power of two */
#define PUBLISH 64                  /* the producer publishes its tail every PUBLISH pushes */

typedef struct {
    _Alignas(64) atomic_size_t tail; /* written by the producer */
    _Alignas(64) atomic_size_t head; /* written by the consumer */
    _Alignas(64) atomic_int done;    /* the producer has published its last object */
    _Alignas(64) void *slot[RING];
} ring_t;

typedef struct {
    _Alignas(64) long id;
    ring_t *out, *in;               /* to the next thread, from the previous one */
    size_t out_tail, out_published, out_head_seen; /* producer-side copies */
    uint64_t made, freed;           /* checksums of what this thread made and freed */
    long bad;
} worker_t;

static long objects_per_thread, nslots;
static unsigned remote_percent;


static const size_mix mix = {70, 95, 16, 64, 65, 256, 257, 512};
static inline size_t pick_size(uint64_t *s) { return pick_from(&mix, s); }

static inline unsigned char *make(worker_t *w, uint64_t *s, uint32_t tag) {
    size_t sz = pick_size(s);
    unsigned char *p = malloc(sz);
    if (!p) { fprintf(stderr, "xthread: malloc(%zu) failed\n", sz); exit(3); }
    uint32_t h[2] = { (uint32_t)sz, tag };
    memcpy(p, h, 8);
    p[sz - 1] = (unsigned char)(sz ^ tag);
    w->made += sz + tag;
    return p;
}

static inline void check_free(worker_t *w, unsigned char *p) {
    uint32_t h[2];
    memcpy(h, p, 8);
    if (h[0] < 16 || h[0] > 512 || p[h[0] - 1] != (unsigned char)(h[0] ^ h[1])) w->bad++;
    else w->freed += h[0] + h[1];
    free(p);
}

/* Consumer side: frees everything the previous thread has published. Returns how many. */
static size_t drain(worker_t *w) {
    ring_t *r = w->in;
    size_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
    size_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
    for (size_t i = head; i != tail; i++) check_free(w, r->slot[i & (RING - 1)]);
    if (tail != head) atomic_store_explicit(&r->head, tail, memory_order_release);
    return tail - head;
}

static void publish(worker_t *w) {
    atomic_store_explicit(&w->out->tail, w->out_tail, memory_order_release);
    w->out_published = w->out_tail;
}

/* Producer side: hands p to the next thread; while its ring is full, drains and yields. */
static void push(worker_t *w, void *p) {
    ring_t *r = w->out;
    while (w->out_tail - w->out_head_seen == RING) {
        w->out_head_seen = atomic_load_explicit(&r->head, memory_order_acquire);
        if (w->out_tail - w->out_head_seen < RING) break;
        publish(w);
        if (drain(w) == 0) sched_yield();
    }
    r->slot[w->out_tail & (RING - 1)] = p;
    w->out_tail++;
    if (w->out_tail - w->out_published >= PUBLISH) publish(w);
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(w->id + 1) | 1;
    unsigned char **slot = calloc((size_t)nslots, sizeof *slot);
    if (!slot) exit(3);
    for (long i = 0; i < nslots; i++) slot[i] = make(w, &s, (uint32_t)i);
    for (long n = 0; n < objects_per_thread; n++) {
        unsigned char *p = make(w, &s, (uint32_t)n);
        if (rnd(&s) % 100 < remote_percent) {
            push(w, p);
        } else {
            long i = (long)(rnd(&s) % (uint64_t)nslots);
            check_free(w, slot[i]);
            slot[i] = p;
        }
        if ((n & (PUBLISH - 1)) == 0) drain(w);
    }
    publish(w);
    atomic_store_explicit(&w->out->done, 1, memory_order_release);
    for (;;) {                       /* the rest of what the previous thread sends */
        int done = atomic_load_explicit(&w->in->done, memory_order_acquire);
        if (drain(w) == 0) {
            if (done) break;
            sched_yield();
        }
    }
    for (long i = 0; i < nslots; i++) check_free(w, slot[i]);
    free(slot);
    return NULL;
}

int main(int argc, char **argv) {
    int threads = argc > 1 ? atoi(argv[1]) : 4;
    objects_per_thread = argc > 2 ? atol(argv[2]) : 5000000;
    remote_percent = argc > 3 ? (unsigned)atoi(argv[3]) : 90;
    nslots = argc > 4 ? atol(argv[4]) : 4096;
    if (threads < 2 || threads > 64 || objects_per_thread < 0 || remote_percent > 100 || nslots < 1) {
        fprintf(stderr, "usage: xthread THREADS(2..64) OBJECTS_PER_THREAD [REMOTE_PERCENT [SLOTS]]\n");
        return 2;
    }
    /* the harness's own memory (rings, worker records), allocated once before any
     * thread starts */
    ring_t *rings = aligned_alloc(64, sizeof(ring_t) * (size_t)threads);
    worker_t *w = aligned_alloc(64, sizeof(worker_t) * (size_t)threads);
    if (!rings || !w) return 3;
    memset(rings, 0, sizeof(ring_t) * (size_t)threads);
    memset(w, 0, sizeof(worker_t) * (size_t)threads);
    for (int i = 0; i < threads; i++) {
        w[i].id = i;
        w[i].out = &rings[i];
        w[i].in = &rings[(i + threads - 1) % threads];
    }
    pthread_t t[64];
    for (int i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker_main, &w[i]);
    for (int i = 0; i < threads; i++) pthread_join(t[i], NULL);
    uint64_t made = 0, freed = 0;
    long bad = 0;
    for (int i = 0; i < threads; i++) { made += w[i].made; freed += w[i].freed; bad += w[i].bad; }
    free(rings);
    free(w);
    printf("checksum %llu\n", (unsigned long long)made);
    if (bad || made != freed) {
        fprintf(stderr, "xthread: %ld corrupted blocks, made %llu freed %llu\n", bad,
                (unsigned long long)made, (unsigned long long)freed);
        return 1;
    }
    return 0;
}
