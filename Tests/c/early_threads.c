// early_threads.c: threads that run before the allocator's constructor give their
// cached blocks back when they exit.
//
// A library's constructor runs before a preloaded allocator's (its dependencies first),
// and some start threads there (a thread pool, a parallel initialisation). A thread's
// cache is flushed at its exit by a pthread key destructor; threads that made their
// cache before the key existed never had it set, and their caches, with every block in
// them, stayed allocated for good: 20 such threads, each allocating and freeing 200
// blocks of 32..1624 bytes, left 11 MB in use. Here the threads run from the program's
// .preinit_array, before every library's constructor. Checked with mallinfo2: what is
// in use once main runs is under 1 MiB (glibc: 3 KB).
#include "testutil.h"

#include <pthread.h>

static void *allocate_and_free(void *argument) {
    (void)argument;
    void *blocks[200];
    for (int i = 0; i < 200; i++) {
        blocks[i] = malloc(32 + (size_t)i * 8);
        if (!blocks[i]) return (void *)1;
        memset(blocks[i], 1, 32);
    }
    for (int i = 0; i < 200; i++) free(blocks[i]);
    return NULL;
}

static int early_threads_run, early_failures;

static void run_threads_early(int argc, char **argv, char **envp) {
    (void)argc; (void)argv; (void)envp;
    for (int i = 0; i < 20; i++) {
        pthread_t thread;
        void *result = NULL;
        if (pthread_create(&thread, NULL, allocate_and_free, NULL) != 0) {
            early_failures++;
            continue;
        }
        pthread_join(thread, &result);
        if (result) early_failures++;
        early_threads_run++;
    }
}
__attribute__((section(".preinit_array"), used)) static void (*const early)(int, char **, char **) = run_threads_early;

int main(void) {
    check_preload();
    REQUIRE(early_threads_run == 20 && early_failures == 0, "%d early threads ran, %d failed", early_threads_run,
            early_failures);
    struct mallinfo2 info = mallinfo2();
    CHECK(info.uordblks < (1u << 20), "%zu bytes in use after 20 early threads freed all they allocated: their "
          "caches were not given back at their exit", info.uordblks);
    printf("early_threads: %zu bytes in use after the early threads\n", info.uordblks);
    return test_exit("early_threads");
}
