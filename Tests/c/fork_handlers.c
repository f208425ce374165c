// fork_handlers.c: fork handlers registered before the allocator's may allocate.
//
// glibc's fork runs the pthread_atfork prepare handlers last registered first, then takes
// its malloc's locks, forks, releases them, and runs the parent or child handlers first
// registered first: every handler may call malloc, free and malloc_trim. An allocator
// that takes its locks in a pthread_atfork handler of its own holds them while the
// handlers registered before it run (their prepare after its, their parent and child
// before its). A library's constructor runs before a preloaded allocator's (its own
// dependencies first), so its handlers are registered first: OpenBLAS's prepare handler,
// for one, frees its thread pool's buffers. The allocator registers its handlers before
// any that reach its pthread_atfork (Tests/c/fork_handler_order.c); these are registered
// with libc's own __register_atfork, as a library that looks it up itself would, from
// the program's .preinit_array, which runs before every library's constructor: they run
// inside the allocator's window, holding its locks. Each handler
// allocates 50 blocks of a size no one used before (a refill from the central list),
// frees them, and replaces a block of several MiB (the page heap); the prepare handler
// also calls malloc_trim(0). A second thread allocates and frees all along, so the
// allocator's fork handling is the multithreaded one. 20 forks must complete (the child
// allocates too and exits 0) within 20 s; before, the first fork deadlocked in the
// prepare handler. Then 40 MB of small blocks freed must come back to the kernel within
// 10 s: the allocator's background work must not have been left stuck by a lock a
// handler took.
#include "testutil.h"

#include <pthread.h>

static void *kept[3];
static int forks_done;
static int handler_calls[3];

// Blocks of a size this handler has not used before, and a new big block for its old one.
static void allocate_in_handler(int which) {
    size_t size = 1000 + (size_t)(forks_done * 3 + which) * 16;
    void *blocks[50];
    for (int i = 0; i < 50; i++) {
        blocks[i] = malloc(size);
        if (!blocks[i]) _exit(70);
        memset(blocks[i], which, size);
    }
    for (int i = 0; i < 50; i++) free(blocks[i]);
    free(kept[which]);
    kept[which] = malloc((size_t)(5 + which) << 20);
    if (!kept[which]) _exit(71);
    memset(kept[which], which, 4096);
    handler_calls[which]++;
}

static void prepare(void) {
    allocate_in_handler(0);
    malloc_trim(0);
}
static void parent(void) { allocate_in_handler(1); }
static void child(void) { allocate_in_handler(2); }

typedef int (*register_atfork_fn)(void (*)(void), void (*)(void), void (*)(void), void *);

static void register_early(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    register_atfork_fn libc_register_atfork = libc ? (register_atfork_fn)dlsym(libc, "__register_atfork") : NULL;
    if (!libc_register_atfork || libc_register_atfork(prepare, parent, child, NULL) != 0) _exit(73);
}
__attribute__((section(".preinit_array"), used)) static void (*const early)(int, char **, char **) = register_early;

static volatile int stop;
static void *churn(void *argument) {
    (void)argument;
    while (!stop) {
        void *p = malloc(64 + (size_t)(rand() % 2000));
        free(p);
    }
    return NULL;
}

static void on_alarm(int signal_number) {
    (void)signal_number;
    static const char message[] = "FAIL fork_handlers: did not complete within 40 s (deadlock in a fork handler)\n";
    (void)!write(2, message, sizeof message - 1);
    _exit(1);
}

int main(void) {
    check_preload();
    signal(SIGALRM, on_alarm);
    alarm(40);
    pthread_t thread;
    REQUIRE(pthread_create(&thread, NULL, churn, NULL) == 0, "pthread_create");
    for (int i = 0; i < 20; i++) {
        pid_t pid = fork();
        REQUIRE(pid >= 0, "fork");
        if (pid == 0) {
            void *p = malloc(3000);
            if (!p || !kept[2] || handler_calls[2] != 1) _exit(2);  // the child handler ran once, here
            free(p);
            _exit(0);
        }
        int status = 0;
        waitpid(pid, &status, 0);
        CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "fork %d: the child ended with wait status 0x%x", i,
              status);
        forks_done++;
    }
    // The allocator's background work still runs after those forks (a lock a fork
    // handler's allocation took must not stay taken): 40 MB of small blocks written and
    // freed while the second thread runs come back to the kernel within 10 s.
    long before = resident_kib();
    enum { SMALL = 20000 };
    static char *small[SMALL];
    for (int i = 0; i < SMALL; i++) {
        small[i] = malloc(2000);
        REQUIRE(small[i], "malloc");
        memset(small[i], i, 2000);
    }
    long peak = resident_kib();
    for (int i = 0; i < SMALL; i++) free(small[i]);
    long rss = resident_kib();
    for (int tenth = 0; tenth < 100 && rss > before + 16 * 1024; tenth++) {
        usleep(100 * 1000);
        rss = resident_kib();
    }
    CHECK(rss <= before + 16 * 1024, "RSS %ld KiB 10 s after freeing 40 MB of small blocks (%ld before, %ld with "
          "them)", rss, before, peak);
    stop = 1;
    pthread_join(thread, NULL);
    alarm(0);
    CHECK(handler_calls[0] == 20 && handler_calls[1] == 20, "handlers ran %d and %d times, not 20", handler_calls[0],
          handler_calls[1]);
    printf("fork_handlers: 20 forks, each handler allocating\n");
    return test_exit("fork_handlers");
}
