// threads.c: 8 threads of random malloc/free/realloc with frequent cross-thread frees
// through a shared exchange array. Every block carries a pattern derived from
// (pointer, size), checked before every free and realloc. Two rounds of threads, so
// blocks of exited threads are freed by new ones. Bounded in time.
#include "testutil.h"

#include <pthread.h>

#define THREADS 8
#define ROUNDS 2
#define OPS_PER_THREAD_ROUND 100000 // 8 threads x 2 rounds x 100k = 1.6M operations
#define LOCAL_SLOTS 256
#define SHARED_SLOTS 512
#define TIME_LIMIT_S 20.0

// A shared slot holds (pointer >> 4) << 21 | size: pointers are 16-byte aligned
// user-space addresses (< 2^47), sizes <= 2^20.
static uint64_t shared_slots[SHARED_SLOTS];
static double deadline;
static long total_ops, cross_frees;

static inline uint64_t pack(void *p, size_t n) { return ((uint64_t)(uintptr_t)p >> 4) << 21 | (uint64_t)n; }
static inline void *unpack_ptr(uint64_t v) { return (void *)(uintptr_t)((v >> 21) << 4); }
static inline size_t unpack_size(uint64_t v) { return (size_t)(v & ((1u << 21) - 1)); }

static inline uint64_t word_of(uintptr_t p, size_t n, size_t j) {
    return mix64((uint64_t)p * 0x9E3779B97F4A7C15ULL ^ (uint64_t)n << 40 ^ j);
}

// Which bytes carry the pattern: all of a block up to 4 KiB; for bigger blocks the
// first and last KiB and one 8-byte word every 256 bytes (keeps the test fast).
#define FULL_LIMIT 4096
#define EDGE 1024

static void fill(unsigned char *b, size_t n) {
    uintptr_t p = (uintptr_t)b;
    if (n <= FULL_LIMIT) {
        size_t j = 0;
        for (; j + 8 <= n; j += 8) { uint64_t w = word_of(p, n, j); memcpy(b + j, &w, 8); }
        if (j < n) { uint64_t w = word_of(p, n, j); memcpy(b + j, &w, n - j); }
        return;
    }
    for (size_t j = 0; j < EDGE; j += 8) { uint64_t w = word_of(p, n, j); memcpy(b + j, &w, 8); }
    for (size_t j = EDGE; j + EDGE < n; j += 256) { uint64_t w = word_of(p, n, j); memcpy(b + j, &w, 8); }
    size_t t = (n - EDGE) & ~(size_t)7;
    for (size_t j = t; j < n; j += 8) {
        uint64_t w = word_of(p, n, j);
        memcpy(b + j, &w, j + 8 <= n ? 8 : n - j);
    }
}

// Checks the pattern written by fill(pattern_ptr, n) at b, only bytes below `limit`.
// Returns the first bad offset or SIZE_MAX.
static size_t verify(const unsigned char *b, uintptr_t pattern_ptr, size_t n, size_t limit) {
    if (limit > n) limit = n;
#define CHECK_WORD(j)                                                                  \
    do {                                                                               \
        size_t j_ = (j);                                                               \
        if (j_ < limit) {                                                              \
            uint64_t w = word_of(pattern_ptr, n, j_);                                  \
            size_t len = j_ + 8 <= n ? 8 : n - j_;                                     \
            if (j_ + len > limit) len = limit - j_;                                    \
            if (memcmp(b + j_, &w, len) != 0) return j_;                               \
        }                                                                              \
    } while (0)
    if (n <= FULL_LIMIT) {
        for (size_t j = 0; j < n; j += 8) CHECK_WORD(j);
        return SIZE_MAX;
    }
    for (size_t j = 0; j < EDGE; j += 8) CHECK_WORD(j);
    for (size_t j = EDGE; j + EDGE < n; j += 256) CHECK_WORD(j);
    size_t t = (n - EDGE) & ~(size_t)7;
    for (size_t j = t; j < n; j += 8) CHECK_WORD(j);
    return SIZE_MAX;
#undef CHECK_WORD
}

static inline uint64_t xorshift(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return *s = x;
}

static size_t random_size(uint64_t *rng) {
    uint64_t r = xorshift(rng);
    unsigned c = (unsigned)(r % 10000);
    r >>= 16;
    if (c < 6000) return 1 + r % 128;
    if (c < 8500) return 129 + r % (1024 - 128);
    if (c < 9700) return 1025 + r % (8192 - 1024);
    if (c < 9995) return 8193 + r % (65536 - 8192);
    return (1u << 20) - r % 4096; // occasionally about 1 MiB
}

struct block { unsigned char *p; size_t n; };

static int check_block(struct block b, const char *when, int tid) {
    if (!is_aligned(b.p, 16)) {
        CHECK(0, "thread %d: block %p (size %zu) not 16-byte aligned", tid, (void *)b.p, b.n);
        return 0;
    }
    size_t bad = verify(b.p, (uintptr_t)b.p, b.n, b.n);
    if (bad != SIZE_MAX) {
        CHECK(0, "thread %d: block %p size %zu corrupted at offset %zu before %s", tid, (void *)b.p, b.n, bad, when);
        return 0;
    }
    return 1;
}

static struct block new_block(uint64_t *rng, int tid) {
    struct block b;
    b.n = random_size(rng);
    if ((*rng & 7) == 0) { // calloc: zero even where a free-list link was just stored
        b.p = calloc(1, b.n);
        REQUIRE(b.p, "thread %d: calloc(%zu) returned NULL", tid, b.n);
        size_t lim = b.n < 8192 ? b.n : 8192;
        for (size_t i = 0; i < lim; i++)
            if (b.p[i]) { CHECK(0, "thread %d: calloc(%zu) = %p: byte %zu is 0x%02x", tid, b.n, (void *)b.p, i, b.p[i]); break; }
        if (b.p[b.n - 1]) CHECK(0, "thread %d: calloc(%zu): last byte is 0x%02x", tid, b.n, b.p[b.n - 1]);
    } else {
        b.p = malloc(b.n);
        REQUIRE(b.p, "thread %d: malloc(%zu) returned NULL", tid, b.n);
    }
    CHECK(is_aligned(b.p, 16), "thread %d: malloc(%zu) = %p not 16-byte aligned", tid, b.n, (void *)b.p);
    fill(b.p, b.n);
    return b;
}

struct targ { int tid; uint64_t seed; };

static void *worker(void *arg) {
    struct targ *ta = arg;
    int tid = ta->tid;
    uint64_t rng = ta->seed;
    struct block local[LOCAL_SLOTS];
    memset(local, 0, sizeof local);
    long ops = 0, xfree = 0;
    for (; ops < OPS_PER_THREAD_ROUND; ops++) {
        if ((ops & 1023) == 0 && now_seconds() > deadline) break;
        if (TEST_FAIL_COUNT() > 20) break;
        uint64_t r = xorshift(&rng);
        int slot = (int)(r % LOCAL_SLOTS);
        unsigned op = (unsigned)((r >> 16) % 100);
        struct block *b = &local[slot];
        if (!b->p) { *b = new_block(&rng, tid); continue; }
        if (op < 40) { // free
            check_block(*b, "free", tid);
            free(b->p);
            b->p = NULL;
        } else if (op < 60) { // realloc
            check_block(*b, "realloc", tid);
            size_t nn = random_size(&rng);
            uintptr_t old = (uintptr_t)b->p;
            size_t on = b->n;
            unsigned char *q = realloc(b->p, nn);
            REQUIRE(q, "thread %d: realloc(%zu -> %zu) returned NULL", tid, on, nn);
            size_t bad = verify(q, old, on, nn);
            CHECK(bad == SIZE_MAX, "thread %d: realloc %zu -> %zu (%p -> %p) lost content at offset %zu",
                  tid, on, nn, (void *)old, (void *)q, bad);
            b->p = q;
            b->n = nn;
            fill(q, nn);
        } else { // exchange with the shared array: the block we get was made elsewhere
            check_block(*b, "exchange", tid);
            int s = (int)((r >> 32) % SHARED_SLOTS);
            uint64_t got = __atomic_exchange_n(&shared_slots[s], pack(b->p, b->n), __ATOMIC_ACQ_REL);
            b->p = NULL;
            if (got) {
                struct block g = {unpack_ptr(got), unpack_size(got)};
                check_block(g, "cross-thread use", tid);
                if (op < 80) { free(g.p); xfree++; }
                else *b = g; // adopt it: freed or realloc'd by this thread later
            }
        }
    }
    for (int i = 0; i < LOCAL_SLOTS; i++)
        if (local[i].p) {
            check_block(local[i], "final free", tid);
            free(local[i].p);
        }
    __atomic_fetch_add(&total_ops, ops, __ATOMIC_RELAXED);
    __atomic_fetch_add(&cross_frees, xfree, __ATOMIC_RELAXED);
    return NULL;
}

int main(void) {
    check_preload();
    double start = now_seconds();
    deadline = start + TIME_LIMIT_S;
    for (int round = 0; round < ROUNDS; round++) {
        pthread_t th[THREADS];
        struct targ args[THREADS];
        for (int t = 0; t < THREADS; t++) {
            args[t].tid = round * THREADS + t;
            args[t].seed = mix64(0x1234 + (uint64_t)args[t].tid) | 1;
            int rc = pthread_create(&th[t], NULL, worker, &args[t]);
            REQUIRE(rc == 0, "pthread_create failed: %d", rc);
        }
        for (int t = 0; t < THREADS; t++) pthread_join(th[t], NULL);
    }
    // The main thread frees what is left in the exchange array (blocks of dead threads).
    int left = 0;
    for (int s = 0; s < SHARED_SLOTS; s++)
        if (shared_slots[s]) {
            struct block g = {unpack_ptr(shared_slots[s]), unpack_size(shared_slots[s])};
            check_block(g, "free by main", -1);
            free(g.p);
            left++;
        }
    double el = now_seconds() - start;
    printf("threads: %ld ops, %ld cross-thread frees, %d freed by main, %.2f s\n", total_ops, cross_frees, left, el);
    if (el > TIME_LIMIT_S) printf("threads: stopped at the time limit (%.0f s)\n", TIME_LIMIT_S);
    CHECK(total_ops > 0, "no operations done");
    return test_exit("threads");
}
