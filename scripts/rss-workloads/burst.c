/* burst: a steady live set plus one large, short-lived burst.
 *
 *   burst [series-file]
 *
 * Two threads each build half of a steady live set (RSS_LIVE_MIB, default 128 MiB, of
 * mixed sizes 16 B..64 KiB, mostly small) and churn it lightly: every millisecond each
 * replaces nslots/4096 random slots with blocks of new random sizes. After 1 s of warm-up
 * both threads allocate a burst (RSS_BURST_MIB, default 768 MiB in total, same size mix,
 * every page touched) while still churning, then free the whole burst: each thread frees
 * the first half of its own burst and the second half of the other's (so half the burst
 * is freed by a thread that did not allocate it). They then go back to churning.
 *
 * RSS is sampled every 50 ms by a sampler thread and exactly at the marks: 0, 0.5, 1, 2,
 * 5 s after the frees completed, then right after malloc_trim(0). Output: "R key value"
 * lines on stdout (see common.c); the series is written to the file given as argument.
 */
#include "common.c"
#include <sys/mman.h>

#define NT 2

typedef struct {
    int id;
    rng_t rng;
    void **slot; uint32_t *ssz; size_t nslots;   /* steady set */
    atomic_size_t live;                          /* requested bytes in the steady set */
    void **burst; uint32_t *bsz; size_t nburst;  /* burst */
    size_t per_ms;                               /* churn: slots replaced per ms */
    double next_churn;
} worker_t;

static worker_t W[NT];
static atomic_int phase;              /* 0 warm-up churn, 1 burst, 2 churn after, 3 stop */
static pthread_barrier_t bar;
static double live_target, burst_target;  /* bytes per thread */

static void *map(size_t bytes) {      /* bookkeeping arrays: outside the allocator */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

static void churn_one(worker_t *w) {
    size_t i = rnd(&w->rng) % w->nslots;
    free(w->slot[i]);
    size_t n = rand_size(&w->rng);
    w->slot[i] = xmalloc(n);
    touch(w->slot[i], n, (unsigned char)i);
    atomic_fetch_add_explicit(&w->live, n, memory_order_relaxed);
    atomic_fetch_sub_explicit(&w->live, w->ssz[i], memory_order_relaxed);
    w->ssz[i] = (uint32_t)n;
}

/* Does the churn that is due by now; skips ahead if more than 50 ms behind. */
static void churn_catchup(worker_t *w) {
    double t = now();
    if (t - w->next_churn > 0.05) w->next_churn = t - 0.05;
    while (w->next_churn <= t) {
        for (size_t k = 0; k < w->per_ms; k++) churn_one(w);
        w->next_churn += 0.001;
    }
}

static void churn_while(worker_t *w, int ph) {
    while (atomic_load(&phase) == ph) {
        churn_catchup(w);
        sleep_until(w->next_churn);
    }
}

static void *worker_main(void *arg) {
    worker_t *w = arg;
    size_t cap = (size_t)(live_target / 16) + 1024;
    w->slot = map(cap * sizeof(void *));
    w->ssz = map(cap * sizeof(uint32_t));
    size_t live = 0;
    while (live < live_target) {
        size_t n = rand_size(&w->rng);
        w->slot[w->nslots] = xmalloc(n);
        touch(w->slot[w->nslots], n, 1);
        w->ssz[w->nslots++] = (uint32_t)n;
        live += n;
    }
    atomic_store(&w->live, live);
    w->per_ms = w->nslots / 4096 ? w->nslots / 4096 : 1;
    pthread_barrier_wait(&bar);                 /* A: steady set built */

    w->next_churn = now();
    churn_while(w, 0);

    /* the burst (no churn meanwhile: the steady set keeps its place) */
    size_t bcap = (size_t)(burst_target / 16) + 1024;
    w->burst = map(bcap * sizeof(void *));
    w->bsz = map(bcap * sizeof(uint32_t));
    double bytes = 0;
    while (bytes < burst_target) {
        size_t n = rand_size(&w->rng);
        w->burst[w->nburst] = xmalloc(n);
        touch(w->burst[w->nburst], n, 2);
        w->bsz[w->nburst++] = (uint32_t)n;
        bytes += n;
    }
    pthread_barrier_wait(&bar);                 /* B: both bursts allocated */

    worker_t *o = &W[1 - w->id];
    for (size_t i = 0; i < w->nburst / 2; i++) free(w->burst[i]);
    for (size_t i = o->nburst / 2; i < o->nburst; i++) free(o->burst[i]);
    pthread_barrier_wait(&bar);                 /* C: whole burst freed */

    w->next_churn = now();
    churn_while(w, 2);
    return NULL;
}

int main(int argc, char **argv) {
    common_init();
    live_target = env_mib("RSS_LIVE_MIB", 128) * MIB / NT;
    burst_target = env_mib("RSS_BURST_MIB", 768) * MIB / NT;
    start_sampler();
    pthread_barrier_init(&bar, NULL, NT + 1);
    pthread_t tid[NT];
    for (int i = 0; i < NT; i++) {
        W[i].id = i;
        W[i].rng.s = 0x9E3779B97F4A7C15ULL * (i + 1);
        pthread_create(&tid[i], NULL, worker_main, &W[i]);
    }
    pthread_barrier_wait(&bar);                 /* A */
    mark("built");
    sleep_s(1.0);
    mark("burst_start");
    atomic_store(&phase, 1);
    pthread_barrier_wait(&bar);                 /* B */
    mark("burst_allocated");
    atomic_store(&phase, 2);
    pthread_barrier_wait(&bar);                 /* C */
    double live = 0;
    for (int i = 0; i < NT; i++) live += atomic_load(&W[i].live);
    for (int i = 0; i < NT; i++) {              /* drop the burst's bookkeeping pages */
        size_t b = (size_t)(burst_target / 16) + 1024;
        madvise(W[i].burst, b * sizeof(void *), MADV_DONTNEED);
        madvise(W[i].bsz, b * sizeof(uint32_t), MADV_DONTNEED);
    }
    run_marks();
    sleep_s(0.5);
    stop_sampler();                             /* the series ends before teardown */
    atomic_store(&phase, 3);
    for (int i = 0; i < NT; i++) pthread_join(tid[i], NULL);
    report("burst", live, argc > 1 ? argv[1] : NULL);
    return 0;
}
