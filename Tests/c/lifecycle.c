// lifecycle.c: allocation at the edges of a program's and a thread's life.
// - malloc in an early constructor (before most of libc's own init ran), freed in a
//   destructor; an atexit handler that frees.
// - pthread key destructors that malloc/realloc/free and re-set their keys, so they run
//   over several destructor rounds, possibly after the allocator's own thread-exit hook.
// - many short-lived threads, each leaving blocks for the main thread to free after
//   it has exited (its cache must have been flushed, not lost).
#include "testutil.h"

#include <pthread.h>

static void *ctor_block;
static size_t ctor_size = 1000;

__attribute__((constructor(101))) static void early_ctor(void) {
    ctor_block = malloc(ctor_size);
    if (ctor_block) fill_seed(ctor_block, ctor_size, 101);
    void *tmp = calloc(10, 10);
    free(tmp);
}

__attribute__((destructor)) static void late_dtor(void) {
    // Runs after main returned: the heap must still work.
    void *p = malloc(4000);
    if (!p) _exit(20);
    memset(p, 1, 4000);
    free(p);
    free(ctor_block);
}

static void *atexit_block;
static void at_exit_handler(void) {
    if (verify_seed(atexit_block, 5000, 55) != 5000) {
        fprintf(stderr, "FAIL atexit: block corrupted\n");
        _exit(21);
    }
    free(atexit_block);
}

#define KEYS 4
static pthread_key_t keys[KEYS];
static long destructor_calls;

struct keyval { unsigned char *p; size_t n; int rounds; };

static void key_destructor(void *v) {
    struct keyval *kv = v;
    __atomic_fetch_add(&destructor_calls, 1, __ATOMIC_RELAXED);
    if (verify_seed(kv->p, kv->n, kv->n) != kv->n) {
        fprintf(stderr, "FAIL key destructor: block of %zu corrupted\n", kv->n);
        _exit(22);
    }
    // Allocate while the thread is being torn down.
    void *scratch = malloc(777);
    if (!scratch) _exit(23);
    memset(scratch, 2, 777);
    free(scratch);
    if (kv->rounds-- > 0) {
        // Grow and re-arm the key: the destructor runs again in the next round.
        size_t nn = kv->n * 2 + 1;
        unsigned char *q = realloc(kv->p, nn);
        if (!q) _exit(24);
        kv->p = q;
        kv->n = nn;
        fill_seed(q, nn, nn);
        for (int k = 0; k < KEYS; k++)
            if (pthread_getspecific(keys[k]) == NULL) { pthread_setspecific(keys[k], kv); return; }
        pthread_setspecific(keys[0], kv);
        return;
    }
    free(kv->p);
    free(kv);
}

#define SHORT_THREADS 200
#define LEFT_PER_THREAD 50
static void *left_behind[SHORT_THREADS][LEFT_PER_THREAD];
static size_t left_size[SHORT_THREADS][LEFT_PER_THREAD];

static void *short_thread(void *arg) {
    long t = (long)arg;
    // Some blocks stay in this thread's cache when it exits.
    void *tmp[100];
    for (int i = 0; i < 100; i++) {
        tmp[i] = malloc(16 + (size_t)(i % 10) * 48);
        if (!tmp[i]) return (void *)1;
    }
    for (int i = 0; i < 100; i++) free(tmp[i]);
    for (int i = 0; i < LEFT_PER_THREAD; i++) {
        size_t n = 1 + (size_t)((t * 31 + i * 17) % 2000);
        if (i == 0) n = 200000; // and one large block
        left_behind[t][i] = malloc(n);
        if (!left_behind[t][i]) return (void *)1;
        left_size[t][i] = n;
        fill_seed(left_behind[t][i], n, (uint64_t)(t * 1000 + i));
    }
    // Thread-specific data with allocating destructors (every 4th thread: two keys).
    for (int k = 0; k < (t % 4 == 0 ? 2 : 1); k++) {
        struct keyval *kv = malloc(sizeof *kv);
        if (!kv) return (void *)1;
        kv->n = 100 + (size_t)t;
        kv->p = malloc(kv->n);
        if (!kv->p) return (void *)1;
        fill_seed(kv->p, kv->n, kv->n);
        kv->rounds = (int)(t % 3);
        pthread_setspecific(keys[k], kv);
    }
    return NULL;
}

// 100 threads alive at once, each with its own cache, meeting at a barrier before
// freeing: per-thread metadata for many threads, then all of it flushed.
#define WIDE 100
static pthread_barrier_t wide_barrier;
static void *wide_thread(void *arg) {
    long t = (long)arg;
    enum { N = 200 };
    void *b[N];
    for (int i = 0; i < N; i++) {
        b[i] = malloc(8 + (size_t)((i * 13 + t) % 700));
        if (!b[i]) return (void *)1;
        memset(b[i], (int)t, 8);
    }
    pthread_barrier_wait(&wide_barrier);
    for (int i = 0; i < N; i++) {
        if (((unsigned char *)b[i])[0] != (unsigned char)t) return (void *)2;
        free(b[i]);
    }
    return NULL;
}

static void test_wide(void) {
    pthread_t th[WIDE];
    REQUIRE(pthread_barrier_init(&wide_barrier, NULL, WIDE) == 0, "pthread_barrier_init");
    for (long t = 0; t < WIDE; t++) REQUIRE(pthread_create(&th[t], NULL, wide_thread, (void *)t) == 0, "pthread_create");
    for (int t = 0; t < WIDE; t++) {
        void *rv = NULL;
        pthread_join(th[t], &rv);
        CHECK(rv == NULL, "wide thread %d failed (%ld)", t, (long)rv);
    }
    pthread_barrier_destroy(&wide_barrier);
}

int main(void) {
    check_preload();
    test_wide();
    CHECK(ctor_block != NULL, "malloc in a constructor(101) returned NULL");
    if (ctor_block) CHECK(verify_seed(ctor_block, ctor_size, 101) == ctor_size, "constructor's block corrupted");
    atexit_block = malloc(5000);
    REQUIRE(atexit_block, "malloc failed");
    fill_seed(atexit_block, 5000, 55);
    atexit(at_exit_handler);

    for (int k = 0; k < KEYS; k++) REQUIRE(pthread_key_create(&keys[k], key_destructor) == 0, "pthread_key_create");

    // Threads in batches of 8 (at most 8 alive at once).
    for (int base = 0; base < SHORT_THREADS; base += 8) {
        pthread_t th[8];
        for (int t = 0; t < 8; t++)
            REQUIRE(pthread_create(&th[t], NULL, short_thread, (void *)(long)(base + t)) == 0, "pthread_create");
        for (int t = 0; t < 8; t++) {
            void *rv = NULL;
            pthread_join(th[t], &rv);
            CHECK(rv == NULL, "thread %d: an allocation failed", base + t);
        }
    }
    CHECK(destructor_calls >= SHORT_THREADS, "only %ld key destructor calls", destructor_calls);
    // The exited threads' blocks are intact and freeable from here.
    for (int t = 0; t < SHORT_THREADS; t++)
        for (int i = 0; i < LEFT_PER_THREAD; i++) {
            if (!left_behind[t][i]) continue;
            size_t bad = verify_seed(left_behind[t][i], left_size[t][i], (uint64_t)(t * 1000 + i));
            CHECK(bad == left_size[t][i], "block %d of exited thread %d corrupted at %zu", i, t, bad);
            free(left_behind[t][i]);
        }
    // A detached thread that exits on its own.
    pthread_t d;
    REQUIRE(pthread_create(&d, NULL, short_thread, (void *)0L) == 0, "pthread_create");
    pthread_join(d, NULL);
    for (int i = 0; i < LEFT_PER_THREAD; i++) free(left_behind[0][i]);
    printf("lifecycle: %d threads, %ld key destructor calls\n", SHORT_THREADS + 1, destructor_calls);
    return test_exit("lifecycle");
}
