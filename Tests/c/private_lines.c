// private_lines.c: two live threads' objects never share a cache line.
//
// Thread A allocates N small objects and frees every other one (its flushes hand free
// objects back to its spans, which become partial); while A is alive and holds the rest,
// thread B allocates N objects of the same size. Objects of two threads on one cache line
// make every write by one thread steal the line from the other's core (active false
// sharing): B must get fresh memory, not the holes between A's live objects. Before the
// fix, B's refills took A's partial spans and about half of B's objects shared a line
// with one of A's. Then the same with A's holes freed by a third thread (remote frees),
// which must not hand A's spans to B while A still draws from them.
#include "testutil.h"

#include <pthread.h>

#define N 20000
#define SIZE 48

static void *a_objects[N];
static void *b_objects[N];
static pthread_barrier_t a_ready, b_done;
static int remote_holes;  // round 2: the holes are freed by another thread

static int cmp_uintptr(const void *x, const void *y) {
    uintptr_t a = *(const uintptr_t *)x, b = *(const uintptr_t *)y;
    return a < b ? -1 : a > b;
}

static void *holes_freer(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i += 2) free(a_objects[i]);
    return NULL;
}

static void *thread_a(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        a_objects[i] = malloc(SIZE);
        REQUIRE(a_objects[i] != NULL, "malloc");
        memset(a_objects[i], 0xA, SIZE);
    }
    if (remote_holes) {
        pthread_t t;
        REQUIRE(pthread_create(&t, NULL, holes_freer, NULL) == 0, "pthread_create");
        pthread_join(t, NULL);
    } else {
        for (int i = 0; i < N; i += 2) free(a_objects[i]);
    }
    // A keeps allocating and freeing (its cache stays busy with its spans).
    for (int i = 0; i < 1000; i++) free(malloc(SIZE));
    pthread_barrier_wait(&a_ready);
    pthread_barrier_wait(&b_done);  // alive, holding its odd objects, until B has checked
    for (int i = 1; i < N; i += 2) free(a_objects[i]);
    return NULL;
}

static void *thread_b(void *arg) {
    (void)arg;
    pthread_barrier_wait(&a_ready);
    for (int i = 0; i < N; i++) {
        b_objects[i] = malloc(SIZE);
        REQUIRE(b_objects[i] != NULL, "malloc");
        memset(b_objects[i], 0xB, SIZE);
    }
    // Lines holding A's live objects (the odd ones).
    static uintptr_t a_lines[N];
    int count = 0;
    for (int i = 1; i < N; i += 2) {
        uintptr_t p = (uintptr_t)a_objects[i];
        a_lines[count++] = p >> 6;
        if ((p + SIZE - 1) >> 6 != p >> 6) a_lines[count++] = (p + SIZE - 1) >> 6;
    }
    qsort(a_lines, (size_t)count, sizeof a_lines[0], cmp_uintptr);
    int shared = 0;
    for (int i = 0; i < N; i++) {
        uintptr_t p = (uintptr_t)b_objects[i];
        for (uintptr_t line = p >> 6; line <= (p + SIZE - 1) >> 6; line++)
            if (bsearch(&line, a_lines, (size_t)count, sizeof a_lines[0], cmp_uintptr)) { shared++; break; }
    }
    CHECK(shared == 0, "%s: %d of B's %d objects share a cache line with A's live objects",
          remote_holes ? "holes freed remotely" : "holes freed by A", shared, N);
    pthread_barrier_wait(&b_done);
    for (int i = 0; i < N; i++) free(b_objects[i]);
    return NULL;
}

static int body(void) {
    for (remote_holes = 0; remote_holes < 2; remote_holes++) {
        pthread_barrier_init(&a_ready, NULL, 2);
        pthread_barrier_init(&b_done, NULL, 2);
        pthread_t a, b;
        REQUIRE(pthread_create(&a, NULL, thread_a, NULL) == 0, "pthread_create");
        REQUIRE(pthread_create(&b, NULL, thread_b, NULL) == 0, "pthread_create");
        pthread_join(a, NULL);
        pthread_join(b, NULL);
        pthread_barrier_destroy(&a_ready);
        pthread_barrier_destroy(&b_done);
    }
    return test_exit("private_lines");
}

int main(void) {
    check_preload();
    return run_with_watchdog(body, 30, "private_lines");
}
