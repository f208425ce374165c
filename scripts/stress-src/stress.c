// Multithreaded random stress of the malloc family, with content checks.
//
//   stress [SECONDS] [THREADS]
//
// A shared table of slots holds live blocks. Each block is filled with a pattern derived
// from a per-block random seed kept in its slot; byte j of a block is a function of (seed, j)
// alone, so after realloc the preserved prefix is checked against the same seed and only the
// new tail is filled. The pattern is checked before every free and realloc, and after every
// realloc (preserved prefix). Slots are shared by all threads (per-slot mutexes), so blocks
// are freed and reallocated by threads other than the one that allocated them. Worker
// threads exit after a random number of operations and are replaced (thread-cache flush on
// exit). Thread 0 forks now and then: the child checks its copy of the blocks whose slots are
// not busy, frees and allocates a bit, and exits; the parent checks its status.
//
// Prints a summary; exits 1 on the first corruption or unexpected failure, with a message
// naming the block, its size, the offset and the expected and found bytes.
#define _GNU_SOURCE
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NSLOTS      4096
#define NLARGE      16            // slots [0, NLARGE) may hold blocks up to 8 MiB
#define MAXTHREADS  64

enum { K_MALLOC, K_CALLOC, K_POSIX_MEMALIGN, K_ALIGNED_ALLOC, K_MEMALIGN, K_REALLOC_NULL, K_VALLOC, K_COUNT };
static const char *kind_name[K_COUNT] = { "malloc", "calloc", "posix_memalign", "aligned_alloc", "memalign", "realloc(NULL)", "valloc" };

typedef struct {
    pthread_mutex_t lock;
    unsigned char *p;
    size_t size;
    uint64_t seed;
    size_t align;      // alignment asked for (0 = none)
    int kind;          // how it was allocated (for messages)
    int owner;         // thread id that last wrote it
} slot_t;

static slot_t slots[NSLOTS];
static atomic_int stop_flag;
static atomic_ulong n_alloc, n_free, n_realloc, n_check, n_local, n_forks, n_threads, n_bytes_checked;
static int nthreads = 6;
static pid_t main_pid;

// ---- diagnostics without stdio's buffers (stdio may allocate; the heap may be broken) ----
static void say(const char *fmt, ...) {
    char buf[512];
    va_list ap; va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof buf - 1) n = sizeof buf - 1;
    ssize_t w = write(2, buf, (size_t)n); (void)w;
}

static void die(const char *fmt, ...) {
    char buf[512];
    va_list ap; va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof buf - 2) n = sizeof buf - 2;
    const char *who = getpid() == main_pid ? "stress: FAIL: " : "stress (fork child): FAIL: ";
    ssize_t w = write(2, who, strlen(who)); (void)w;
    buf[n] = '\n';
    w = write(2, buf, (size_t)n + 1); (void)w;
    _exit(1);
}

// ---- random numbers ----
typedef struct { uint64_t s; } rng_t;
static inline uint64_t rnd(rng_t *r) {
    uint64_t x = r->s;
    x ^= x >> 12; x ^= x << 25; x ^= x >> 27;
    r->s = x;
    return x * 0x2545F4914F6CDD1DULL;
}
static inline uint64_t below(rng_t *r, uint64_t n) { return rnd(r) % n; }

// ---- the pattern: byte j of a block with seed s is byte (j % 8) of word(s, j / 8) ----
static inline uint64_t pword(uint64_t seed, uint64_t i) {
    uint64_t z = seed + (i + 1) * 0x9E3779B97F4A7C15ULL;
    z = (z ^ (z >> 31)) * 0xBF58476D1CE4E5B9ULL;
    return z ^ (z >> 29);
}
static inline unsigned char pbyte(uint64_t seed, size_t j) {
    return (unsigned char)(pword(seed, j / 8) >> (8 * (j % 8)));
}

// Fills [from, to) of a block with its pattern.
static void fill(unsigned char *p, uint64_t seed, size_t from, size_t to) {
    size_t j = from;
    while (j < to && (j % 8)) { p[j] = pbyte(seed, j); j++; }
    for (; j + 8 <= to; j += 8) { uint64_t w = pword(seed, j / 8); memcpy(p + j, &w, 8); }
    for (; j < to; j++) p[j] = pbyte(seed, j);
}

// Returns the first offset in [from, to) whose byte differs from the pattern, or (size_t)-1.
static size_t verify(const unsigned char *p, uint64_t seed, size_t from, size_t to) {
    size_t j = from;
    while (j < to && (j % 8)) { if (p[j] != pbyte(seed, j)) return j; j++; }
    for (; j + 8 <= to; j += 8) {
        uint64_t w; memcpy(&w, p + j, 8);
        if (w != pword(seed, j / 8)) {
            for (size_t k = j; k < j + 8; k++) if (p[k] != pbyte(seed, k)) return k;
        }
    }
    for (; j < to; j++) if (p[j] != pbyte(seed, j)) return j;
    return (size_t)-1;
}

static void check_block(const char *when, int idx, slot_t *s, size_t upto) {
    size_t bad = verify(s->p, s->seed, 0, upto);
    atomic_fetch_add_explicit(&n_bytes_checked, upto, memory_order_relaxed);
    if (bad != (size_t)-1) {
        // Count how many bytes are wrong, and whether they are zero (a sign of madvise).
        size_t wrong = 0, zeros = 0;
        for (size_t j = bad; j < upto; j++) if (s->p[j] != pbyte(s->seed, j)) { wrong++; if (!s->p[j]) zeros++; }
        die("corruption %s: slot %d block %p size %zu (from %s, align %zu, last written by thread %d): "
            "offset %zu expected 0x%02x found 0x%02x; %zu bytes wrong (%zu of them zero) in [%zu, %zu)",
            when, idx, (void *)s->p, s->size, kind_name[s->kind], s->align, s->owner,
            bad, pbyte(s->seed, bad), s->p[bad], wrong, zeros, bad, upto);
    }
}

// ---- sizes ----
static size_t pick_size(rng_t *r, int idx) {
    uint64_t c = below(r, 1000);
    if (idx < NLARGE && c < 500) return 64 * 1024 + below(r, 8 * 1024 * 1024 - 64 * 1024 + 1);
    if (c < 5) return 0;
    if (c < 800) return 1 + below(r, 1024);
    if (c < 960) return 1 + below(r, 64 * 1024);
    return 1 + below(r, 256 * 1024);
}

// Alignment a plain allocation of `size` bytes must have: 16 (glibc's guarantee on x86-64),
// or the largest power of two not above `size` for tiny sizes (what the C standard needs).
static size_t fundamental(size_t size) {
    size_t a = 16;
    while (a > 1 && a > size) a >>= 1;
    return a;
}

static void check_align(const char *what, void *p, size_t align, size_t size) {
    if (!align) align = fundamental(size);
    // A zero-byte block holds nothing; jemalloc 5.3's valloc(0) is not page aligned.
    if (size == 0) return;
    if ((uintptr_t)p & (align - 1))
        die("%s(align %zu, size %zu) returned %p, not aligned", what, align, size, p);
}

static void check_usable(const char *what, void *p, size_t size) {
    size_t u = malloc_usable_size(p);
    if (u < size) die("%s: malloc_usable_size(%p) = %zu < requested %zu", what, p, u, size);
}

// Allocates a block for slot s (which is locked and empty), fills it.
static void alloc_into(rng_t *r, int idx, slot_t *s, int tid) {
    size_t size = pick_size(r, idx);
    int kind = (int)below(r, 100);
    kind = kind < 55 ? K_MALLOC : kind < 70 ? K_CALLOC : kind < 78 ? K_POSIX_MEMALIGN
         : kind < 84 ? K_ALIGNED_ALLOC : kind < 90 ? K_MEMALIGN : kind < 98 ? K_REALLOC_NULL : K_VALLOC;
    size_t align = 0;
    void *p = NULL;
    if (kind == K_POSIX_MEMALIGN || kind == K_ALIGNED_ALLOC || kind == K_MEMALIGN)
        align = (size_t)16 << below(r, 13);   // 16 .. 64 KiB
    switch (kind) {
    case K_MALLOC: p = malloc(size); break;
    case K_CALLOC: {
        size_t n = 1 + below(r, 16), each = size / n ? size / n : 1;
        size = n * each;
        if (idx >= NLARGE && size > 256 * 1024) size = 256 * 1024, n = 1, each = size;
        p = calloc(n, each);
        if (p) {
            const unsigned char *q = p;
            for (size_t j = 0; j < size; j++)
                if (q[j]) die("calloc(%zu, %zu) = %p: byte %zu is 0x%02x, not zero", n, each, p, j, q[j]);
            atomic_fetch_add_explicit(&n_bytes_checked, size, memory_order_relaxed);
        }
        break;
    }
    case K_POSIX_MEMALIGN: {
        int rc = posix_memalign(&p, align, size);
        if (rc) die("posix_memalign(align %zu, size %zu) failed: %s", align, size, strerror(rc));
        break;
    }
    case K_ALIGNED_ALLOC: p = aligned_alloc(align, size); break;
    case K_MEMALIGN: p = memalign(align, size); break;
    case K_REALLOC_NULL: p = realloc(NULL, size); break;
    case K_VALLOC: p = valloc(size); align = (size_t)sysconf(_SC_PAGESIZE); break;
    }
    if (!p) die("%s(size %zu, align %zu) returned NULL (errno %d)", kind_name[kind], size, align, errno);
    check_align(kind_name[kind], p, align, size);
    check_usable(kind_name[kind], p, size);
    s->p = p; s->size = size; s->seed = rnd(r) | 1; s->align = align; s->kind = kind; s->owner = tid;
    fill(s->p, s->seed, 0, size);
    atomic_fetch_add_explicit(&n_alloc, 1, memory_order_relaxed);
}

static void free_slot(int idx, slot_t *s) {
    check_block("before free", idx, s, s->size);
    free(s->p);
    s->p = NULL; s->size = 0;
    atomic_fetch_add_explicit(&n_free, 1, memory_order_relaxed);
}

static void realloc_slot(rng_t *r, int idx, slot_t *s, int tid) {
    check_block("before realloc", idx, s, s->size);
    size_t old = s->size, want;
    uint64_t c = below(r, 10);
    if (c < 4) want = old + 1 + below(r, old < 4096 ? 4096 : old);                // grow
    else if (c < 8) want = old ? below(r, old + 1) : 1;                             // shrink
    else want = pick_size(r, idx);                                                  // anything
    if (idx >= NLARGE && want > 1024 * 1024) want = 1024 * 1024;
    if (want == 0) want = 1;   // realloc(p, 0) frees in glibc; keep to defined behaviour
    unsigned char *q = realloc(s->p, want);
    if (!q) die("realloc(%p, %zu) returned NULL (old size %zu)", (void *)s->p, want, old);
    check_align("realloc", q, 0, want);
    check_usable("realloc", q, want);
    unsigned char *was = s->p;
    s->p = q; s->size = want; s->align = 0; s->owner = tid;
    size_t keep = old < want ? old : want;
    size_t bad = verify(q, s->seed, 0, keep);
    if (bad != (size_t)-1)
        die("realloc(%p, %zu) -> %p (old size %zu) lost content: offset %zu expected 0x%02x found 0x%02x",
            (void *)was, want, (void *)q, old, bad, pbyte(s->seed, bad), q[bad]);
    if (want > old) fill(q, s->seed, old, want);
    atomic_fetch_add_explicit(&n_realloc, 1, memory_order_relaxed);
}

// A burst of thread-local allocations freed in random order (the cache fast path).
static void local_burst(rng_t *r) {
    enum { N = 256 };
    unsigned char *p[N]; size_t sz[N]; uint64_t seed[N];
    int n = 1 + (int)below(r, N);
    for (int i = 0; i < n; i++) {
        sz[i] = 1 + below(r, below(r, 8) ? 128 : 2048);
        p[i] = malloc(sz[i]);
        if (!p[i]) die("malloc(%zu) returned NULL in local burst", sz[i]);
        seed[i] = rnd(r);
        fill(p[i], seed[i], 0, sz[i]);
    }
    for (int i = n - 1; i > 0; i--) {
        int j = (int)below(r, (uint64_t)i + 1);
        unsigned char *tp = p[i]; p[i] = p[j]; p[j] = tp;
        size_t ts = sz[i]; sz[i] = sz[j]; sz[j] = ts;
        uint64_t tq = seed[i]; seed[i] = seed[j]; seed[j] = tq;
    }
    for (int i = 0; i < n; i++) {
        size_t bad = verify(p[i], seed[i], 0, sz[i]);
        if (bad != (size_t)-1)
            die("corruption in local burst: block %p size %zu offset %zu expected 0x%02x found 0x%02x",
                (void *)p[i], sz[i], bad, pbyte(seed[i], bad), p[i][bad]);
        free(p[i]);
    }
    atomic_fetch_add_explicit(&n_local, (unsigned long)n, memory_order_relaxed);
}

// ---- fork ----
static void fork_child(uint64_t seed) {
    rng_t r = { seed | 1 };
    int checked = 0, freed = 0;
    for (int i = 0; i < NSLOTS; i++) {
        slot_t *s = &slots[i];
        if (pthread_mutex_trylock(&s->lock) != 0) continue;   // held by a thread that is gone
        if (s->p) {
            check_block("in fork child", i, s, s->size);
            checked++;
            if (below(&r, 4) == 0) { free(s->p); s->p = NULL; freed++; }
            else if (below(&r, 8) == 0) realloc_slot(&r, i, s, -1);
        } else if (below(&r, 4) == 0) {
            alloc_into(&r, i, s, -1);
        }
        pthread_mutex_unlock(&s->lock);
    }
    for (int k = 0; k < 8; k++) local_burst(&r);
    // A thread in the child: the allocator must work there too.
    (void)checked; (void)freed;
    _exit(0);
}

static void *child_thread(void *arg) { rng_t r = { (uintptr_t)arg | 1 }; local_burst(&r); return NULL; }

static void do_fork(rng_t *r) {
    uint64_t seed = rnd(r);
    int with_thread = below(r, 2) == 0;
    pid_t pid = fork();
    if (pid < 0) { say("stress: fork failed: %s (skipped)\n", strerror(errno)); return; }
    if (pid == 0) {
        if (with_thread) {
            pthread_t t;
            if (pthread_create(&t, NULL, child_thread, (void *)(uintptr_t)seed) == 0) pthread_join(t, NULL);
        }
        fork_child(seed);
    }
    // Wait up to 20 s: a child that hangs means a lock left held across fork.
    for (int i = 0; i < 2000; i++) {
        int st;
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            if (WIFEXITED(st) && WEXITSTATUS(st) == 0) { atomic_fetch_add(&n_forks, 1); return; }
            if (WIFSIGNALED(st)) die("fork child %d killed by signal %d (%s)", pid, WTERMSIG(st), strsignal(WTERMSIG(st)));
            die("fork child %d exited with status %d", pid, WEXITSTATUS(st));
        }
        if (w < 0 && errno != EINTR) die("waitpid: %s", strerror(errno));
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    die("fork child %d hung for 20 s (deadlock after fork?)", pid);
}

// ---- workers ----
typedef struct { int tid; uint64_t seed; atomic_int done; pthread_t th; } worker_t;
static worker_t workers[MAXTHREADS];

static void *worker(void *arg) {
    worker_t *w = arg;
    rng_t r = { w->seed | 1 };
    long life = 20000 + (long)below(&r, 200000);
    struct timespec last_fork; clock_gettime(CLOCK_MONOTONIC, &last_fork);
    for (long op = 0; op < life && !atomic_load_explicit(&stop_flag, memory_order_relaxed); op++) {
        if ((op & 1023) == 0) {
            if (w->tid == 0) {
                struct timespec now; clock_gettime(CLOCK_MONOTONIC, &now);
                double dt = (double)(now.tv_sec - last_fork.tv_sec) + (now.tv_nsec - last_fork.tv_nsec) / 1e9;
                if (dt > 0.3) { do_fork(&r); last_fork = now; }
            }
            if (below(&r, 4) == 0) local_burst(&r);
            free(NULL);
        }
        int idx = (int)below(&r, NSLOTS);
        slot_t *s = &slots[idx];
        pthread_mutex_lock(&s->lock);
        if (!s->p) {
            alloc_into(&r, idx, s, w->tid);
        } else {
            uint64_t c = below(&r, 100);
            if (c < 55) free_slot(idx, s);
            else if (c < 85) realloc_slot(&r, idx, s, w->tid);
            else { check_block("on check", idx, s, s->size); atomic_fetch_add_explicit(&n_check, 1, memory_order_relaxed); }
        }
        pthread_mutex_unlock(&s->lock);
    }
    atomic_store(&w->done, 1);
    return NULL;
}

static void start_worker(int i, rng_t *r) {
    workers[i].tid = i;
    workers[i].seed = rnd(r);
    atomic_store(&workers[i].done, 0);
    int rc = pthread_create(&workers[i].th, NULL, worker, &workers[i]);
    if (rc) die("pthread_create: %s", strerror(rc));
    atomic_fetch_add(&n_threads, 1);
}

static void on_alarm(int sig) {
    (void)sig;
    const char m[] = "stress: FAIL: still running 60 s after the deadline (deadlock?)\n";
    ssize_t w = write(2, m, sizeof m - 1); (void)w;
    _exit(2);
}

static double now_s(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return (double)t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
    double seconds = argc > 1 ? atof(argv[1]) : 10;
    if (argc > 2) nthreads = atoi(argv[2]);
    if (nthreads < 1) nthreads = 1;
    if (nthreads > MAXTHREADS) nthreads = MAXTHREADS;
    main_pid = getpid();
    uint64_t seed0 = argc > 3 ? strtoull(argv[3], NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
    rng_t r = { seed0 | 1 };
    for (int i = 0; i < NSLOTS; i++) pthread_mutex_init(&slots[i].lock, NULL);
    say("stress: %.0f s, %d threads, seed 0x%llx\n", seconds, nthreads, (unsigned long long)seed0);
    signal(SIGALRM, on_alarm);
    alarm((unsigned)seconds + 60);

    double t0 = now_s(), end = t0 + seconds;
    for (int i = 0; i < nthreads; i++) start_worker(i, &r);
    while (now_s() < end) {
        usleep(20000);
        for (int i = 0; i < nthreads; i++)
            if (atomic_load(&workers[i].done)) { pthread_join(workers[i].th, NULL); start_worker(i, &r); }
    }
    atomic_store(&stop_flag, 1);
    for (int i = 0; i < nthreads; i++) pthread_join(workers[i].th, NULL);

    // Check and free everything that is left, from the main thread.
    unsigned long left = 0;
    for (int i = 0; i < NSLOTS; i++) if (slots[i].p) { free_slot(i, &slots[i]); left++; }
    malloc_trim(0);
    double dt = now_s() - t0;
    unsigned long ops = n_alloc + n_free + n_realloc + n_check + n_local;
    printf("stress: OK: %lu ops in %.1f s (%lu allocs, %lu frees, %lu reallocs, %lu checks, %lu local), "
           "%lu threads, %lu forks, %.1f GB checked, %lu blocks freed at the end, seed 0x%llx\n",
           ops, dt, (unsigned long)n_alloc, (unsigned long)n_free, (unsigned long)n_realloc,
           (unsigned long)n_check, (unsigned long)n_local, (unsigned long)n_threads,
           (unsigned long)n_forks, (double)n_bytes_checked / 1e9, left, (unsigned long long)seed0);
    return 0;
}
