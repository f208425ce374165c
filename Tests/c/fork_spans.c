// fork_spans.c: in a fork child, the free objects of spans that the parent's other
// threads drew from are reused, not left behind for ever.
//
// Thread A allocates N objects and frees every other one, so that its spans are partial
// and its own; it stays alive while the main thread forks. The child has no thread A:
// spans that stayed A's would never be refilled from again, and every allocation of
// the child would take fresh memory. The child allocates N/2 objects of the same size
// and checks that most of them are holes A left (A's bin keeps a few of them, which
// the child cannot reach). glibc fails this: the child's main thread never allocates
// from the arena of the parent's thread.
#include "testutil.h"

#include <pthread.h>
#include <sys/wait.h>

#define N 20000
#define SIZE 80

static void *a_objects[N];
static pthread_barrier_t a_ready, forked;

static int cmp_ptr(const void *x, const void *y) {
    uintptr_t a = (uintptr_t)*(void *const *)x, b = (uintptr_t)*(void *const *)y;
    return a < b ? -1 : a > b;
}

static void *thread_a(void *arg) {
    (void)arg;
    for (int i = 0; i < N; i++) {
        a_objects[i] = malloc(SIZE);
        REQUIRE(a_objects[i] != NULL, "malloc");
    }
    for (int i = 0; i < N; i += 2) free(a_objects[i]);
    pthread_barrier_wait(&a_ready);
    pthread_barrier_wait(&forked);
    for (int i = 1; i < N; i += 2) free(a_objects[i]);
    return NULL;
}

static int child(void) {
    static void *holes[N / 2];
    for (int i = 0; i < N / 2; i++) holes[i] = a_objects[2 * i];
    qsort(holes, N / 2, sizeof holes[0], cmp_ptr);
    int reused = 0;
    for (int i = 0; i < N / 2; i++) {
        void *p = malloc(SIZE);
        REQUIRE(p != NULL, "malloc");
        if (bsearch(&p, holes, N / 2, sizeof holes[0], cmp_ptr)) reused++;
    }
    CHECK(reused >= N / 4, "the child reused %d of the %d holes the parent's other thread left (want at least %d)",
          reused, N / 2, N / 4);
    return test_exit("fork_spans (child)");
}

static int body(void) {
    pthread_barrier_init(&a_ready, NULL, 2);
    pthread_barrier_init(&forked, NULL, 2);
    pthread_t a;
    REQUIRE(pthread_create(&a, NULL, thread_a, NULL) == 0, "pthread_create");
    pthread_barrier_wait(&a_ready);
    fflush(NULL);
    pid_t pid = fork();
    REQUIRE(pid >= 0, "fork");
    if (pid == 0) _exit(child());
    int status = 0;
    REQUIRE(waitpid(pid, &status, 0) == pid, "waitpid");
    pthread_barrier_wait(&forked);
    pthread_join(a, NULL);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child failed (status %d)", status);
    return test_exit("fork_spans");
}

int main(void) {
    check_preload();
    return run_with_watchdog(body, 30, "fork_spans");
}
