// starter_lines.c: among many threads, two live threads' objects never share a cache
// line, including the first objects of each size, which come from spans the threads
// share.
//
// Once 8 threads have allocated, a new thread's first objects of a size class come in
// line groups (the 1, 2 or 4 objects that fill whole lines) from shared spans, so that a
// burst of threads does not take a page per size per thread (thread_burst.c). A group
// must hold no other thread's object: THREADS threads each allocate a few objects of six
// sizes (class sizes, so that an object fills exactly the bytes its size says) and hold
// them while the main thread checks every line they touch. The check that pages do hold
// several threads' objects shows the shared spans are in use: with a span per thread per
// class (SwiftHeap before, and glibc's arenas aside) no page would.
#include "testutil.h"

#include <pthread.h>

#define THREADS 32
#define SIZES 6
#define PER_SIZE 3
#define OBJECTS (THREADS * SIZES * PER_SIZE)

static const size_t sizes[SIZES] = {16, 48, 96, 112, 208, 320};

struct object {
    uintptr_t address;
    size_t size;
    int thread;
};

static struct object objects[OBJECTS];
static pthread_barrier_t allocated, checked;

static void *worker(void *arg) {
    int thread = (int)(intptr_t)arg;
    for (int s = 0; s < SIZES; s++) {
        for (int k = 0; k < PER_SIZE; k++) {
            void *p = malloc(sizes[s]);
            REQUIRE(p != NULL, "malloc(%zu)", sizes[s]);
            memset(p, thread, sizes[s]);
            objects[(thread * SIZES + s) * PER_SIZE + k] = (struct object){(uintptr_t)p, sizes[s], thread};
        }
    }
    pthread_barrier_wait(&allocated);
    pthread_barrier_wait(&checked);  // alive, holding its objects, until main has checked
    for (int i = 0; i < SIZES * PER_SIZE; i++) free((void *)objects[thread * SIZES * PER_SIZE + i].address);
    return NULL;
}

struct owner {
    uintptr_t unit;  // a line's or a page's number
    int thread;
};

static int by_unit(const void *x, const void *y) {
    const struct owner *a = x, *b = y;
    if (a->unit != b->unit) return a->unit < b->unit ? -1 : 1;
    return a->thread - b->thread;
}

static int body(void) {
    free(malloc(1));
    pthread_barrier_init(&allocated, NULL, THREADS + 1);
    pthread_barrier_init(&checked, NULL, THREADS + 1);
    pthread_t thread[THREADS];
    for (int t = 0; t < THREADS; t++)
        REQUIRE(pthread_create(&thread[t], NULL, worker, (void *)(intptr_t)t) == 0, "pthread_create %d", t);
    pthread_barrier_wait(&allocated);

    static struct owner lines[OBJECTS * 8], pages[OBJECTS];
    int line_count = 0;
    for (int i = 0; i < OBJECTS; i++) {
        uintptr_t p = objects[i].address;
        for (uintptr_t line = p >> 6; line <= (p + objects[i].size - 1) >> 6; line++)
            lines[line_count++] = (struct owner){line, objects[i].thread};
        pages[i] = (struct owner){p >> 12, objects[i].thread};
    }
    qsort(lines, (size_t)line_count, sizeof lines[0], by_unit);
    int shared_lines = 0;
    for (int i = 1; i < line_count; i++)
        if (lines[i].unit == lines[i - 1].unit && lines[i].thread != lines[i - 1].thread) shared_lines++;
    qsort(pages, OBJECTS, sizeof pages[0], by_unit);
    int shared_pages = 0;
    for (int i = 1; i < OBJECTS; i++)
        if (pages[i].unit == pages[i - 1].unit && pages[i].thread != pages[i - 1].thread) shared_pages++;
    CHECK(shared_lines == 0, "%d cache lines hold objects of two live threads (of %d threads' %d objects)",
          shared_lines, THREADS, OBJECTS);
    if (!getenv("SWIFTHEAP_TEST_ANY"))
        CHECK(shared_pages > 0, "no page holds objects of two threads: the threads' first objects did not "
              "come from shared spans");
    fprintf(stderr, "starter_lines: %d threads, %d objects: %d lines shared, %d page boundaries between threads\n",
           THREADS, OBJECTS, shared_lines, shared_pages);
    pthread_barrier_wait(&checked);
    for (int t = 0; t < THREADS; t++) pthread_join(thread[t], NULL);
    return test_exit("starter_lines");
}

int main(void) {
    check_preload();
    return run_with_watchdog(body, 30, "starter_lines");
}
