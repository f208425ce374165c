// first_thread.c: a program that runs single-threaded for a while, then starts threads.
//
// While the process has never created a thread (glibc's __libc_single_threaded), SwiftHeap
// takes its locks and empties its large cache's slots with plain loads and stores
// (Platform.swift: Mutex; LargeCache.swift: take). The program's first pthread_create
// ends that, and from then on every lock and slot must be atomic in every thread: a lock
// taken with a plain store beside another thread's atomic one would let two threads into
// the central lists or the page heap at once and hand one span or object to two owners.
//
// Checked: objects made while single-threaded (small ones of many classes, in the main
// thread's bins and its spans; large ones of 32 KiB-1 MiB, some freed into its large
// cache and the page heap) keep their contents while four new threads and the main
// thread free them and churn objects of the same classes through a shared array (remote
// frees, refills and flushes under the central locks, large objects under the page
// heap's lock, from five threads at once), and every object keeps its contents until its
// free. The run is under a watchdog: a lost wake-up on a lock would hang.
#include "testutil.h"

#include <pthread.h>
#include <sys/single_threaded.h>

#define THREADS 4
#define EARLY_SMALL 20000
#define EARLY_LARGE 200
#define SHARED 4096
#define OPS 80000

struct block {
    unsigned char *p;
    size_t n;
    uint64_t seed;
};

static struct block early_small[EARLY_SMALL], early_large[EARLY_LARGE];
static struct block shared[SHARED];
static pthread_mutex_t shared_locks[64];

static size_t small_size(uint64_t r) { return 16 + (size_t)(r % 1009); }
// The threads' small objects: four classes, so that their refills and flushes meet on
// the same central locks.
static size_t churn_size(uint64_t r) { return (size_t)16 << (r % 4); }
static size_t large_size(uint64_t r) { return ((size_t)32 << 10) + (size_t)(r % ((1 << 20) - (32 << 10))); }

// The bytes of an object that carry its pattern: all of a small one, the first and last
// KiB of a large one (enough to see it handed to two owners, cheap enough to make many).
#define ENDS 1024
static void fill(struct block *b) {
    if (b->n <= 2 * ENDS) {
        fill_seed(b->p, b->n, b->seed);
    } else {
        fill_seed(b->p, ENDS, b->seed);
        fill_seed(b->p + b->n - ENDS, ENDS, ~b->seed);
    }
}

// The offset of the first byte of b's object that differs from its pattern, or b->n.
static size_t verify(const struct block *b) {
    if (b->n <= 2 * ENDS) return verify_seed(b->p, b->n, b->seed);
    size_t bad = verify_seed(b->p, ENDS, b->seed);
    if (bad != ENDS) return bad;
    bad = verify_seed(b->p + b->n - ENDS, ENDS, ~b->seed);
    return bad == ENDS ? b->n : b->n - ENDS + bad;
}

static void make(struct block *b, size_t n, uint64_t seed) {
    b->p = t_malloc(n);
    REQUIRE(b->p != NULL, "malloc(%zu)", n);
    b->n = n;
    b->seed = seed;
    fill(b);
}

// Checks and frees b's object; `what` names it in a failure.
static void drop(struct block *b, const char *what) {
    if (!b->p) return;
    size_t bad = verify(b);
    CHECK(bad == b->n, "%s: object %p of %zu bytes changed at byte %zu", what, (void *)b->p, b->n, bad);
    t_free(b->p);
    b->p = NULL;
}

static void *worker(void *arg) {
    long id = (long)arg;
    // This thread's quarter of the early objects: freed from a thread that did not make them.
    for (long i = id; i < EARLY_SMALL; i += THREADS + 1) drop(&early_small[i], "early small object");
    for (long i = id; i < EARLY_LARGE; i += THREADS + 1) drop(&early_large[i], "early large object");
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 11);
    for (long op = 0; op < OPS; op++) {
        uint64_t r = mix64(s++);
        size_t k = (size_t)(r % SHARED);
        // One in four is large: the page heap's lock and the large caches.
        size_t n = (r >> 32) % 4 == 0 ? large_size(r >> 40) : churn_size(r >> 40);
        struct block fresh;
        make(&fresh, n, r);
        pthread_mutex_t *lock = &shared_locks[k % 64];
        pthread_mutex_lock(lock);
        struct block old = shared[k];
        shared[k] = fresh;
        pthread_mutex_unlock(lock);
        drop(&old, "shared object");
    }
    return NULL;
}

static int body(void) {
    CHECK(__libc_single_threaded, "the process is not single-threaded before its first thread");
    for (int i = 0; i < 64; i++) pthread_mutex_init(&shared_locks[i], NULL);
    for (long i = 0; i < EARLY_SMALL; i++) make(&early_small[i], small_size(mix64((uint64_t)i)), 1000 + (uint64_t)i);
    for (long i = 0; i < EARLY_LARGE; i++) make(&early_large[i], large_size(mix64((uint64_t)i)), 900000 + (uint64_t)i);
    // Free every other one single-threaded, and churn a little, so that bins, spans, the
    // large cache and the page heap hold free memory when the threads start.
    for (long i = 0; i < EARLY_SMALL; i += 2) drop(&early_small[i], "early small object (single-threaded)");
    for (long i = 0; i < EARLY_LARGE; i += 2) drop(&early_large[i], "early large object (single-threaded)");
    for (long i = 0; i < SHARED; i++) {
        uint64_t r = mix64(77 + (uint64_t)i);
        make(&shared[i], (r >> 32) % 4 == 0 ? large_size(r >> 40) : churn_size(r >> 40), r);
    }
    CHECK(__libc_single_threaded, "the allocator started a thread in a single-threaded process");

    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) REQUIRE(pthread_create(&t[i], NULL, worker, (void *)i) == 0, "pthread_create");
    worker((void *)(long)THREADS);  // the main thread takes the last share and churns too
    for (long i = 0; i < THREADS; i++) pthread_join(t[i], NULL);

    for (long i = 0; i < EARLY_SMALL; i++) CHECK(early_small[i].p == NULL, "early object %ld left", i);
    for (long i = 0; i < SHARED; i++) drop(&shared[i], "shared object at the end");
    int status = test_exit("first_thread");
    fflush(stdout);  // the watchdog's child ends with _exit
    return status;
}

int main(void) {
    check_preload();
    return run_with_watchdog(body, 60, "first_thread: threads started after a single-threaded phase");
}
