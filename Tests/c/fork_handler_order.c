// fork_handler_order.c: a fork handler registered before the allocator's may wait for a
// thread that allocates.
//
// glibc's fork runs every pthread_atfork prepare handler before it takes its malloc's
// locks, and releases them before any parent or child handler: a handler may wait for
// another thread that is inside malloc. A library's constructor runs before a preloaded
// allocator's, so its handlers are registered first; with plain pthread_atfork, an
// allocator that takes its locks in a handler of its own takes them before theirs run
// (prepare handlers run last registered first). Here the handlers are registered from
// the program's .preinit_array, which runs before every library's constructor, in the
// two shapes such handlers take:
//   * lock: the prepare handler takes the library's mutex (the parent and child handlers
//     release it), which a second thread holds while it allocates and frees: a library
//     that makes its state fork-safe. Before the fix: the forking thread held the
//     allocator's locks and waited for the mutex; the thread holding the mutex waited in
//     malloc for an allocator lock. Deadlock at the first forks.
//   * join: the prepare handler stops the library's worker thread, which allocates, and
//     joins it (the parent handler starts a new one): a library that shuts its thread
//     pool down before fork. The worker's exit gives its cache back, which takes
//     allocator locks: the join waited for ever.
// Each case runs 100 forks (the child allocates and exits 0) in a child process, which
// must end within 20 s.
#include "testutil.h"

#include <pthread.h>

enum { NONE, LOCK, JOIN };
static volatile int mode;  // which case's handlers act; set in the case's process only

// ---- lock: the library's mutex, held while its thread allocates --------------------
static pthread_mutex_t library_lock = PTHREAD_MUTEX_INITIALIZER;
static void *library_blocks[4096];

static void *allocate_under_lock(void *argument) {
    (void)argument;
    uint64_t state = 1;
    for (;;) {
        pthread_mutex_lock(&library_lock);
        for (int i = 0; i < 20; i++) {
            state = mix64(state);
            size_t k = state % 4096;
            free(library_blocks[k]);
            library_blocks[k] = malloc(16 + (state >> 20) % 5000);  // many classes: refills, flushes
            if (library_blocks[k]) memset(library_blocks[k], 1, 16);
        }
        pthread_mutex_unlock(&library_lock);
    }
    return NULL;
}

static void lock_prepare(void) { if (mode == LOCK) pthread_mutex_lock(&library_lock); }
static void lock_release(void) { if (mode == LOCK) pthread_mutex_unlock(&library_lock); }

// ---- join: the library's worker, stopped and joined before fork ---------------------
static pthread_t worker;
static volatile int worker_stop;

static void *allocate_until_stopped(void *argument) {
    (void)argument;
    uint64_t state = 2;
    while (!worker_stop) {
        state = mix64(state);
        void *p = malloc(100 + (state >> 20) % 3000);
        if (p) memset(p, 2, 100);
        free(p);
    }
    return NULL;
}

static void start_worker(void) {
    worker_stop = 0;
    if (pthread_create(&worker, NULL, allocate_until_stopped, NULL) != 0) _exit(72);
}
static void join_prepare(void) {
    if (mode != JOIN) return;
    worker_stop = 1;
    pthread_join(worker, NULL);
}
static void join_parent(void) { if (mode == JOIN) start_worker(); }

static void register_early(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    pthread_atfork(lock_prepare, lock_release, lock_release);
    pthread_atfork(join_prepare, join_parent, NULL);
}
__attribute__((section(".preinit_array"), used)) static void (*const early)(int, char **, char **) = register_early;

static int fork_100_times(void) {
    for (int i = 0; i < 100; i++) {
        pid_t pid = fork();
        if (pid < 0) return 10;
        if (pid == 0) {
            void *p = malloc(3000);
            if (!p) _exit(2);
            free(p);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return 11;
    }
    return 0;
}

static int lock_case(void) {
    pthread_t thread;
    mode = LOCK;
    if (pthread_create(&thread, NULL, allocate_under_lock, NULL) != 0) return 12;
    return fork_100_times();
}

static int join_case(void) {
    mode = JOIN;
    start_worker();
    return fork_100_times();
}

int main(void) {
    check_preload();
    CHECK(run_with_watchdog(lock_case, 20, "lock: fork with a prepare handler that takes a lock held while malloc "
                            "runs") == 0, "lock");
    CHECK(run_with_watchdog(join_case, 20, "join: fork with a prepare handler that joins a thread that allocates")
          == 0, "join");
    printf("fork_handler_order: 2 x 100 forks with handlers that wait for allocating threads\n");
    return test_exit("fork_handler_order");
}
