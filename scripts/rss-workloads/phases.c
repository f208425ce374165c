/* phases: a single-threaded program that changes phase again and again.
 *
 *   phases [series-file]
 *
 * RSS_PHASE_CYCLES cycles (default 30). Each allocates RSS_PHASE_MIB (default 200 MiB)
 * in three phases of a third each: small blocks of 16 B..1 KiB, then large ones of
 * 32 KiB..1 MiB, then a mix (90% small, 10% large by count), sizes log-uniform in their
 * range; every byte of every block is written. Then the cycle frees all of its blocks in
 * random order and sleeps 1 s. A live set of about RSS_PHASE_LIVE_MIB (default 2 MiB) of
 * small blocks lives across the cycles; one of its blocks is replaced every 512
 * allocations, so that live blocks end up scattered over the pages the cycles use.
 * Blocks are checked (first, middle and last byte) before they are freed; a mismatch aborts.
 *
 * The program runs no thread but main (an allocator may behave differently in a
 * single-threaded process): RSS is sampled from the allocation loop (a clock read every
 * 64 allocations, a sample every 50 ms) and every 50 ms during the sleep. Per cycle it
 * records: the cycle's peak RSS (the highest sample of the cycle, which includes one
 * taken when all its blocks are allocated), RSS right after the last free, 0.6 s and
 * 1 s after it, and VmSize at 1 s. The bookkeeping arrays are mmap'ed outside the
 * allocator (about 12 MiB of VmSize, the same under every allocator) and their pages
 * dropped after each free-all, so that the RSS after the frees is the allocator's.
 *
 * Output: the "R key value" lines of common.c (malloc_from, live_mib, peak_mib =
 * VmHWM) plus "R vmsize_end_mib", then one line per cycle:
 *   C <cycle> <peak_mib> <rss_0_mib> <rss_0.6_mib> <rss_1_mib> <vmsize_1_mib> <t_free_done>
 * The series (t, RSS) is written to the file given as argument.
 */
#pragma GCC diagnostic ignored "-Wunused-function"   /* common.c's sampler thread is not used here */
#include "common.c"
#include <sys/mman.h>

#define MAX_CYCLES 1000

typedef struct { double peak, rss0, rss06, rss1, vmsize1, t_free; } cycle_t;

static cycle_t C[MAX_CYCLES];
static double next_sample, cycle_peak;
static size_t allocs;                        /* allocations so far (drives the live-set churn) */

static void *map(size_t bytes) {             /* bookkeeping: outside the allocator */
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) { perror("mmap"); exit(2); }
    return p;
}

/* Records a sample (and the cycle's peak); returns RSS in bytes. */
static double take_sample(void) {
    double r = (double)sample();
    if (r > cycle_peak) cycle_peak = r;
    next_sample = now() + 0.05;
    return r;
}

static inline void tick(void) {
    if ((++allocs & 63) == 0 && now() >= next_sample) take_sample();
}

/* Sleeps until t (seconds since start), sampling every 50 ms meanwhile. */
static void sleep_sampling(double t) {
    for (;;) {
        if (now() >= next_sample) take_sample();
        double until = next_sample < t ? next_sample : t;
        sleep_until(until);
        if (now() >= t) return;
    }
}

/* log-uniform in [lo, lo << k): 2^e * lo plus up to as much again */
static inline size_t log_uniform(rng_t *r, size_t lo, unsigned k) {
    size_t base = lo << (rnd(r) % k);
    return base + rnd(r) % base;
}
static inline size_t small_size(rng_t *r) { return log_uniform(r, 16, 6); }          /* 16 B..1 KiB */
static inline size_t large_size(rng_t *r) { return log_uniform(r, 32 << 10, 5); }    /* 32 KiB..1 MiB */

/* Every byte of a block holds a value derived from its size. */
static inline unsigned char tag_of(size_t n) { return (unsigned char)(n ^ (n >> 8) ^ 0x5A); }

static inline unsigned char *make(size_t n) {
    unsigned char *p = xmalloc(n);
    memset(p, tag_of(n), n);
    return p;
}

static inline void check_free(unsigned char *p, size_t n) {
    unsigned char tag = tag_of(n);
    if (p[0] != tag || p[n - 1] != tag || p[n / 2] != tag) {
        fprintf(stderr, "phases: block %p of %zu bytes overwritten\n", (void *)p, n);
        abort();
    }
    free(p);
}

int main(int argc, char **argv) {
    common_init();
    int cycles = (int)env_mib("RSS_PHASE_CYCLES", 30);
    double cycle_bytes = env_mib("RSS_PHASE_MIB", 200) * MIB;
    double live_bytes = env_mib("RSS_PHASE_LIVE_MIB", 2) * MIB;
    if (cycles < 1 || cycles > MAX_CYCLES || cycle_bytes < MIB) { fprintf(stderr, "phases: bad sizes\n"); return 2; }
    size_t cap = (size_t)(cycle_bytes / 200) + 65536;   /* small blocks average ~240 B */
    unsigned char **blk = map(cap * sizeof *blk);
    uint32_t *bsz = map(cap * sizeof *bsz);
    rng_t rng = { 0x9E3779B97F4A7C15ULL };

    size_t nlive = 0, lcap = (size_t)(live_bytes / 16) + 16;
    unsigned char **live = map(lcap * sizeof *live);
    uint32_t *lsz = map(lcap * sizeof *lsz);
    double lbytes = 0;
    while (lbytes < live_bytes && nlive < lcap) {
        size_t n = small_size(&rng);
        live[nlive] = make(n);
        lsz[nlive++] = (uint32_t)n;
        lbytes += n;
    }
    next_sample = now();

    for (int c = 0; c < cycles; c++) {
        cycle_peak = 0;
        take_sample();
        size_t nblk = 0;
        for (int phase = 0; phase < 3; phase++) {
            double bytes = 0;
            while (bytes < cycle_bytes / 3) {
                size_t n = phase == 0 ? small_size(&rng)
                         : phase == 1 ? large_size(&rng)
                         : (rnd(&rng) % 10 == 0 ? large_size(&rng) : small_size(&rng));
                if (nblk == cap) { fprintf(stderr, "phases: more than %zu blocks in a cycle\n", cap); return 2; }
                blk[nblk] = make(n);
                bsz[nblk++] = (uint32_t)n;
                bytes += n;
                if ((allocs & 511) == 0) {       /* replace one block of the live set */
                    size_t i = rnd(&rng) % nlive;
                    check_free(live[i], lsz[i]);
                    lbytes -= lsz[i];
                    lsz[i] = (uint32_t)small_size(&rng);
                    live[i] = make(lsz[i]);
                    lbytes += lsz[i];
                }
                tick();
            }
        }
        take_sample();                          /* everything of this cycle is allocated */
        for (size_t j = nblk - 1; j > 0; j--) {  /* Fisher-Yates */
            size_t m = rnd(&rng) % (j + 1);
            unsigned char *t = blk[j]; blk[j] = blk[m]; blk[m] = t;
            uint32_t ts = bsz[j]; bsz[j] = bsz[m]; bsz[m] = ts;
        }
        for (size_t j = 0; j < nblk; j++) {
            check_free(blk[j], bsz[j]);
            if ((j & 63) == 0 && now() >= next_sample) take_sample();
        }
        madvise(blk, cap * sizeof *blk, MADV_DONTNEED);
        madvise(bsz, cap * sizeof *bsz, MADV_DONTNEED);
        cycle_t *k = &C[c];
        k->t_free = now();
        k->rss0 = take_sample();
        sleep_sampling(k->t_free + 0.6);
        k->rss06 = take_sample();
        sleep_sampling(k->t_free + 1.0);
        k->rss1 = take_sample();
        k->vmsize1 = (double)vm_size();
        k->peak = cycle_peak;
    }
    double vm_end = (double)vm_size();
    report("phases", lbytes, argc > 1 ? argv[1] : NULL);
    printf("R vmsize_end_mib %.2f\n", vm_end / MIB);
    for (int c = 0; c < cycles; c++)
        printf("C %d %.2f %.2f %.2f %.2f %.2f %.3f\n", c + 1, C[c].peak / MIB, C[c].rss0 / MIB,
               C[c].rss06 / MIB, C[c].rss1 / MIB, C[c].vmsize1 / MIB, C[c].t_free);
    for (size_t i = 0; i < nlive; i++) check_free(live[i], lsz[i]);
    return 0;
}
