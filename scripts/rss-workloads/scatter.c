/* scatter: free 90% of a heap in random order, so the survivors are spread all over it.
 *
 *   scatter [series-file]
 *
 * Two threads each build half of a heap (RSS_HEAP_MIB, default 256 MiB in total, mixed
 * sizes 16 B..512 KiB, mostly small, every page touched; see scatter_size). All blocks of both threads are
 * then shuffled together and the first 90% of the shuffled list are freed, alternately by
 * the two threads (so about half of each thread's frees are of blocks the other thread
 * allocated). Afterwards each thread churns a tiny ring of 16 private blocks, one
 * replacement per millisecond, so that allocators that only do housekeeping on malloc or
 * free calls get the chance to.
 *
 * RSS is sampled every 50 ms and exactly at the marks: 0, 0.5, 1, 2, 5 s after the frees
 * completed, then right after malloc_trim(0). Output as in burst.c.
 */
#include "common.c"
#include <sys/mman.h>

#define NT 2
#define RING 16

typedef struct {
    int id;
    rng_t rng;
    void **blk; uint32_t *bsz; size_t nblk;
    void *ring[RING]; size_t rsz[RING];
    size_t ring_bytes;                          /* ring size when the frees ended */
} worker_t;

static worker_t W[NT];
static atomic_int stop;
static pthread_barrier_t bar;
static double heap_target;           /* bytes per thread */
static uint64_t *order; size_t nfree; /* shuffled (thread << 32 | index), first nfree freed */

/* Sizes: mostly small by count, as in burst, but with a tail up to 512 KiB that carries
 * about 30% of the bytes (glibc serves blocks above 128 KiB with mmap of their own):
 * 70% 16-128 B, 20% 129 B-1 KiB, 8% 1-8 KiB, 1.8% 8-64 KiB, 0.2% 64-512 KiB. */
static size_t scatter_size(rng_t *r) {
    unsigned p = (unsigned)(rnd(r) % 1000);
    if (p < 700) return rnd_range(r, 16, 128);
    if (p < 900) return rnd_range(r, 129, 1024);
    if (p < 980) return rnd_range(r, 1025, 8192);
    if (p < 998) return rnd_range(r, 8193, 65536);
    return rnd_range(r, 65537, 512 * 1024);
}

static void *map(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    size_t cap = (size_t)(heap_target / 16) + 1024;
    w->blk = map(cap * sizeof(void *));
    w->bsz = map(cap * sizeof(uint32_t));
    double bytes = 0;
    while (bytes < heap_target) {
        size_t n = scatter_size(&w->rng);
        w->blk[w->nblk] = xmalloc(n);
        touch(w->blk[w->nblk], n, 1);
        w->bsz[w->nblk++] = (uint32_t)n;
        bytes += n;
    }
    pthread_barrier_wait(&bar);                 /* A: heap built */
    pthread_barrier_wait(&bar);                 /* B: main has shuffled */
    for (size_t j = w->id; j < nfree; j += NT) {
        uint64_t e = order[j];
        worker_t *o = &W[e >> 32];
        size_t i = (uint32_t)e;
        free(o->blk[i]);
        o->blk[i] = NULL;
    }
    for (int k = 0; k < RING; k++) {
        w->rsz[k] = rand_size(&w->rng);
        w->ring[k] = xmalloc(w->rsz[k]);
        touch(w->ring[k], w->rsz[k], 3);
        w->ring_bytes += w->rsz[k];
    }
    pthread_barrier_wait(&bar);                 /* C: 90% freed */
    double next = now();
    while (!atomic_load(&stop)) {              /* tiny churn: one block per ms */
        int k = (int)(rnd(&w->rng) % RING);
        free(w->ring[k]);
        w->rsz[k] = rand_size(&w->rng);
        w->ring[k] = xmalloc(w->rsz[k]);
        touch(w->ring[k], w->rsz[k], 4);
        next += 0.001;
        if (now() - next > 0.05) next = now();
        sleep_until(next);
    }
    return NULL;
}

int main(int argc, char **argv) {
    common_init();
    heap_target = env_mib("RSS_HEAP_MIB", 256) * MIB / NT;
    start_sampler();
    pthread_barrier_init(&bar, NULL, NT + 1);
    pthread_t tid[NT];
    for (int i = 0; i < NT; i++) {
        W[i].id = i;
        W[i].rng.s = 0x9E3779B97F4A7C15ULL * (i + 7);
        pthread_create(&tid[i], NULL, worker_main, &W[i]);
    }
    pthread_barrier_wait(&bar);                 /* A */
    mark("built");
    size_t total = 0;
    for (int i = 0; i < NT; i++) total += W[i].nblk;
    order = map(total * sizeof(uint64_t));
    size_t k = 0;
    for (int i = 0; i < NT; i++)
        for (size_t j = 0; j < W[i].nblk; j++) order[k++] = (uint64_t)i << 32 | j;
    rng_t r = { 12345 };
    for (size_t j = total - 1; j > 0; j--) {    /* Fisher-Yates */
        size_t m = rnd(&r) % (j + 1);
        uint64_t t = order[j]; order[j] = order[m]; order[m] = t;
    }
    nfree = total - total / 10;
    pthread_barrier_wait(&bar);                 /* B */
    pthread_barrier_wait(&bar);                 /* C */
    madvise(order, total * sizeof(uint64_t), MADV_DONTNEED);
    double live = 0;
    for (int i = 0; i < NT; i++) {
        for (size_t j = 0; j < W[i].nblk; j++)
            if (W[i].blk[j]) live += W[i].bsz[j];
        live += W[i].ring_bytes;
    }
    run_marks();
    sleep_s(0.5);
    stop_sampler();                             /* the series ends before teardown */
    atomic_store(&stop, 1);
    for (int i = 0; i < NT; i++) pthread_join(tid[i], NULL);
    report("scatter", live, argc > 1 ? argv[1] : NULL);
    return 0;
}
