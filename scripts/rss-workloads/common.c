/* Shared pieces of the RSS workloads (included by burst.c, scatter.c and phases.c).
 *
 * - rss_now(), vm_size(): resident and mapped bytes from /proc/self/statm (pages x page
 *   size), read with open/read into a stack buffer (no stdio, no malloc).
 * - a sampler thread that records (t, rss) every 50 ms into static arrays;
 * - mark(): records a named sample at an exact moment (also added to the series);
 * - random sizes (16 B .. 64 KiB, mostly small) from a per-thread xorshift;
 * - report(): prints "R key value" lines for scripts/rss and writes the series file.
 *
 * All timing is CLOCK_MONOTONIC seconds since program start.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024.0 * 1024.0)

static double t_start;
static long page_size;

static double now_abs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}
static double now(void) { return now_abs() - t_start; }

static void sleep_until(double t) {          /* t in seconds since start */
    for (;;) {
        double d = t - now();
        if (d <= 0) return;
        struct timespec ts = { (time_t)d, (long)((d - (time_t)d) * 1e9) };
        nanosleep(&ts, NULL);
    }
}
static void sleep_s(double d) { sleep_until(now() + d); }

/* Field `field` (0 size, 1 resident, ...) of /proc/self/statm, in bytes. */
static size_t statm_bytes(int field) {
    char buf[256];
    int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = buf;
    for (int i = 0; i < field; i++) {        /* skip the fields before */
        while (*p && *p != ' ') p++;
        while (*p == ' ') p++;
    }
    return (size_t)strtoull(p, NULL, 10) * (size_t)page_size;
}
static inline size_t rss_now(void) { return statm_bytes(1); }   /* resident bytes */
static inline size_t vm_size(void) { return statm_bytes(0); }   /* mapped bytes (VmSize) */

/* VmHWM (peak resident set) in bytes, from /proc/self/status. */
static size_t vm_hwm(void) {
    char buf[8192];
    int fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return 0;
    buf[n] = 0;
    char *p = strstr(buf, "VmHWM:");
    if (!p) return 0;
    return (size_t)strtoull(p + 6, NULL, 10) * 1024;
}

/* ---- time series ---- */
#define MAX_SAMPLES 16384
static double s_t[MAX_SAMPLES];
static size_t s_rss[MAX_SAMPLES];
static atomic_int s_n;
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_int sampler_stop;

static size_t sample(void) {               /* records and returns rss now */
    pthread_mutex_lock(&s_lock);
    size_t r = rss_now();
    int i = atomic_load(&s_n);
    if (i < MAX_SAMPLES) { s_t[i] = now(); s_rss[i] = r; atomic_store(&s_n, i + 1); }
    pthread_mutex_unlock(&s_lock);
    return r;
}

static void *sampler_main(void *arg) {
    (void)arg;
    double next = now();
    while (!atomic_load(&sampler_stop)) {
        sample();
        next += 0.05;
        sleep_until(next);
    }
    return NULL;
}

#define MAX_MARKS 16
static const char *m_name[MAX_MARKS];
static double m_t[MAX_MARKS];
static size_t m_rss[MAX_MARKS];
static int m_n;

static size_t mark(const char *name) {
    pthread_mutex_lock(&s_lock);
    size_t r = rss_now();
    double t = now();
    int i = atomic_load(&s_n);
    if (i < MAX_SAMPLES) { s_t[i] = t; s_rss[i] = r; atomic_store(&s_n, i + 1); }
    if (m_n < MAX_MARKS) { m_name[m_n] = name; m_t[m_n] = t; m_rss[m_n] = r; m_n++; }
    pthread_mutex_unlock(&s_lock);
    return r;
}

/* The marks after the frees: 0, 0.5, 1, 2, 5 s, then malloc_trim(0). */
static const double mark_delays[] = { 0.0, 0.5, 1.0, 2.0, 5.0 };
static const char *mark_names[] = { "rss_0", "rss_0.5", "rss_1", "rss_2", "rss_5" };
#define N_MARKS 5

/* Call right after the frees completed; sleeps through the marks, trims, marks again. */
static void run_marks(void) {
    double t0 = now();
    for (int i = 0; i < N_MARKS; i++) {
        sleep_until(t0 + mark_delays[i]);
        mark(mark_names[i]);
    }
    malloc_trim(0);
    mark("rss_trim");
}

/* ---- random sizes ---- */
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rnd(rng_t *r) {       /* xorshift64* */
    uint64_t x = r->s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t rnd_range(rng_t *r, uint64_t lo, uint64_t hi) { /* [lo, hi] */
    return lo + rnd(r) % (hi - lo + 1);
}
/* 16 B .. 64 KiB, mostly small by count: 60% 16-128, 25% 129-1024, 10% 1-8 KiB,
 * 5% 8-64 KiB (mean about 2.5 KiB; the big ones carry most of the bytes). */
static size_t rand_size(rng_t *r) {
    unsigned p = (unsigned)(rnd(r) % 100);
    if (p < 60) return rnd_range(r, 16, 128);
    if (p < 85) return rnd_range(r, 129, 1024);
    if (p < 95) return rnd_range(r, 1025, 8192);
    return rnd_range(r, 8193, 65536);
}

/* Touch every page of a new block (and its first and last byte). */
static inline void touch(void *p, size_t n, unsigned char v) {
    unsigned char *c = p;
    for (size_t i = 0; i < n; i += 4096) c[i] = v;
    c[n - 1] = v;
}

static void *xmalloc(size_t n) {
    void *p = malloc(n);
    if (!p) { fprintf(stderr, "malloc(%zu) failed\n", n); abort(); }
    return p;
}

static void common_init(void) {
    t_start = now_abs();
    page_size = sysconf(_SC_PAGESIZE);
}

static pthread_t sampler_tid;
static void start_sampler(void) { pthread_create(&sampler_tid, NULL, sampler_main, NULL); }
static void stop_sampler(void) { atomic_store(&sampler_stop, 1); pthread_join(sampler_tid, NULL); }

/* Prints results for scripts/rss and writes the series file (t seconds, rss MiB). */
static void report(const char *workload, double live_bytes, const char *series_path) {
    Dl_info info;
    void *(*volatile mp)(size_t) = malloc;
    const char *from = "?";
    if (dladdr((void *)mp, &info) && info.dli_fname) from = info.dli_fname;
    printf("R workload %s\n", workload);
    printf("R malloc_from %s\n", from);
    printf("R live_mib %.2f\n", live_bytes / MIB);
    for (int i = 0; i < m_n; i++)
        printf("R %s %.2f\nR t_%s %.3f\n", m_name[i], m_rss[i] / MIB, m_name[i], m_t[i]);
    printf("R peak_mib %.2f\n", vm_hwm() / MIB);
    fflush(stdout);
    if (series_path) {
        FILE *f = fopen(series_path, "w");
        if (!f) { perror(series_path); return; }
        fprintf(f, "# %s: t_seconds rss_mib\n", workload);
        for (int i = 0; i < m_n; i++)
            fprintf(f, "# mark %s %.3f %.2f\n", m_name[i], m_t[i], m_rss[i] / MIB);
        int n = atomic_load(&s_n);
        for (int i = 0; i < n; i++) fprintf(f, "%.3f %.2f\n", s_t[i], s_rss[i] / MIB);
        fclose(f);
    }
}

/* Size in MiB from an environment variable (scripts/rss --quick scales them down). */
static double env_mib(const char *name, double dflt) {
    const char *v = getenv(name);
    return v && *v ? atof(v) : dflt;
}
