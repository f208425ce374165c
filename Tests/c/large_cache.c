// large_cache.c: the large cache (LargeCache.swift) keeps a thread's freed objects of
// 32-256 KiB for its next mallocs, and gives them back: at the thread's exit, at
// malloc_trim, in a fork's child for the threads that are not there. Under SwiftHeap
// (SWIFTHEAP_EXPECT=1) the kept bytes are read from malloc_stats()'s "large cached"
// line; the contents checks hold under any allocator.
#include "testutil.h"

#include <pthread.h>

// The "large cached (threads):" figure of malloc_stats(), in bytes.
static size_t cached_large_bytes(void) {
    static char text[65536];
    capture_malloc_stats(text, sizeof text);
    const char *line = strstr(text, "large cached (threads):");
    REQUIRE(line != NULL, "malloc_stats() has no large-cache line: %.300s", text);
    return strtoul(line + strlen("large cached (threads):"), NULL, 10);
}

static int swiftheap;

// A freed 100 KiB object serves the next malloc of its size from the same thread, and a
// calloc from the cache is zero although the object was written.
static void same_thread_reuse(void) {
    char *p = t_malloc(100 << 10);
    REQUIRE(p != NULL, "malloc(100 KiB)");
    memset(p, 0xAB, 100 << 10);
    t_free(p);
    if (swiftheap) CHECK(cached_large_bytes() >= (100 << 10), "the freed object is not kept");
    char *q = t_calloc(1, 100 << 10);
    REQUIRE(q != NULL, "calloc(100 KiB)");
    if (swiftheap) CHECK(q == p, "calloc did not get the kept object back: %p, freed %p", (void *)q, (void *)p);
    size_t nonzero = 0;
    for (size_t i = 0; i < (100 << 10); i++) nonzero += q[i] != 0;
    CHECK(nonzero == 0, "calloc(100 KiB) over a written object has %zu non-zero bytes", nonzero);
    t_free(q);
}

// A thread's kept objects go back when it exits; malloc_trim takes this thread's.
static pthread_barrier_t freed, checked;

static void *keep_some(void *arg) {
    (void)arg;
    void *p[6];
    for (int i = 0; i < 6; i++) { p[i] = t_malloc((size_t)(40 + 30 * i) << 10); REQUIRE(p[i] != NULL, "malloc"); }
    for (int i = 0; i < 6; i++) t_free(p[i]);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&checked);
    return NULL;
}

static void exit_and_trim_give_back(void) {
    size_t before = swiftheap ? cached_large_bytes() : 0;
    pthread_barrier_init(&freed, NULL, 2);
    pthread_barrier_init(&checked, NULL, 2);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, keep_some, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&freed);
    if (swiftheap) CHECK(cached_large_bytes() >= before + (40 << 10), "the other thread keeps nothing");
    pthread_barrier_wait(&checked);
    pthread_join(t, NULL);
    if (swiftheap) CHECK(cached_large_bytes() <= before, "an exited thread's kept objects were not given back");
    void *mine = t_malloc(64 << 10);
    t_free(mine);
    malloc_trim(0);
    if (swiftheap) CHECK(cached_large_bytes() == 0, "malloc_trim left kept objects");
}

// A fork's child gives back what the parent's other threads kept, and allocates as usual.
static void *keep_and_wait(void *arg) {
    (void)arg;
    void *p = t_malloc(120 << 10);
    REQUIRE(p != NULL, "malloc");
    t_free(p);
    pthread_barrier_wait(&freed);
    pthread_barrier_wait(&checked);
    return NULL;
}

static void fork_child_gives_back(void) {
    pthread_barrier_init(&freed, NULL, 2);
    pthread_barrier_init(&checked, NULL, 2);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, keep_and_wait, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&freed);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        int bad = 0;
        if (swiftheap && cached_large_bytes() != 0) bad = 1;
        for (int i = 0; i < 100; i++) {
            unsigned char *p = t_malloc((size_t)(33 + i) << 10);
            if (!p) { bad = 2; break; }
            memset(p, i, (size_t)(33 + i) << 10);
            if (p[((size_t)(33 + i) << 10) - 1] != (unsigned char)i) bad = 3;
            t_free(p);
        }
        _exit(bad);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0,
          "fork child: status %d (1: kept objects of other threads, 2: malloc failed, 3: bad contents)", status);
    pthread_barrier_wait(&checked);
    pthread_join(t, NULL);
}

// Threads churn objects of 32-256 KiB, each freeing some of the others' (which land in
// the freeing thread's cache), with every byte's pattern checked before each free.
enum { THREADS = 4, ROUNDS = 3000, SLOTS = 8 };
static unsigned char *shared[THREADS][SLOTS];
static size_t shared_size[THREADS][SLOTS];
static pthread_mutex_t shared_lock = PTHREAD_MUTEX_INITIALIZER;

static int check_and_free(unsigned char *p, size_t size) {
    int bad = 0;
    for (size_t i = 0; i + 1 < size; i += 512) bad |= p[i] != (unsigned char)((uintptr_t)p >> 12 ^ i >> 9);
    bad |= p[size - 1] != (unsigned char)size;
    t_free(p);
    return bad;
}

static void *churn(void *arg) {
    long id = (long)arg;
    uint64_t s = 0x9E3779B97F4A7C15ull * (uint64_t)(id + 1);
    int bad = 0;
    for (int r = 0; r < ROUNDS; r++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        size_t size = (32u << 10) + 1 + (size_t)(s >> 20) % (224u << 10);
        unsigned char *p = t_malloc(size);
        REQUIRE(p != NULL, "malloc(%zu)", size);
        for (size_t i = 0; i + 1 < size; i += 512) p[i] = (unsigned char)((uintptr_t)p >> 12 ^ i >> 9);
        p[size - 1] = (unsigned char)size;
        // Swap into a random thread's slot (often another's) and free what was there.
        long owner = (long)(s % THREADS), slot = (long)((s >> 8) % SLOTS);
        pthread_mutex_lock(&shared_lock);
        unsigned char *old = shared[owner][slot];
        size_t old_size = shared_size[owner][slot];
        shared[owner][slot] = p;
        shared_size[owner][slot] = size;
        pthread_mutex_unlock(&shared_lock);
        if (old) bad |= check_and_free(old, old_size);
    }
    return (void *)(intptr_t)bad;
}

static void threads_keep_contents_apart(void) {
    pthread_t t[THREADS];
    for (long i = 0; i < THREADS; i++) REQUIRE(pthread_create(&t[i], NULL, churn, (void *)i) == 0, "pthread_create");
    int bad = 0;
    for (int i = 0; i < THREADS; i++) { void *r; pthread_join(t[i], &r); bad |= (int)(intptr_t)r; }
    for (int i = 0; i < THREADS; i++)
        for (int j = 0; j < SLOTS; j++)
            if (shared[i][j]) bad |= check_and_free(shared[i][j], shared_size[i][j]);
    CHECK(!bad, "a block's contents changed while it was live (two owners of one large object?)");
}

// The checks of what is kept run with the scavenger off (SWIFTHEAP_SCAVENGER=0, in a copy
// of this program started for them): its thread's ticks would give kept objects back at
// any moment. The threads' churn runs with it on, its ticks draining the caches while the
// threads put and take.
static int kept_objects(void) {
    same_thread_reuse();
    exit_and_trim_give_back();
    fork_child_gives_back();
    return test_exit("large_cache (kept objects)");
}

static int churn_with_scavenger(void) {
    threads_keep_contents_apart();
    return test_exit("large_cache (threads)");
}

int main(int argc, char **argv) {
    check_preload();
    swiftheap = getenv("SWIFTHEAP_EXPECT") != NULL;
    if (argc > 1 && !strcmp(argv[1], "kept")) return run_with_watchdog(kept_objects, 40, "large_cache: kept objects");
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) {
        setenv("SWIFTHEAP_SCAVENGER", "0", 1);
        execl("/proc/self/exe", argv[0], "kept", (char *)NULL);
        _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "the kept-objects checks failed (status 0x%x)", status);
    CHECK(run_with_watchdog(churn_with_scavenger, 40, "large_cache: threads") == 0, "the threads' churn failed");
    return test_exit("large_cache");
}
