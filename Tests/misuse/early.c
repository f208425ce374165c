// Early and odd callers of the allocator.
//
//   early ctor      constructors allocate before main (one in libctorlib.so, linked in, which
//                   runs before the preloaded allocator's constructor); main checks, frees
//   early atexit    atexit handlers and a destructor allocate, reallocate and free
//   early threads   threads started before the first malloc all allocate at once
//   early dlopen L  a dlopen'ed library (L) allocates in its constructor, frees memory
//                   from the main program, hands memory back; dlclose frees the rest
//   early errno     free keeps errno; free(NULL) and malloc_usable_size(NULL) are harmless
//   early pthread-exit      main calls pthread_exit: the process must still end (exit 0)
//   early fork-thread-exit  a thread forks; the child's only thread returns: child exits 0
//
// Prints `early: ok ...` and exits 0, or `early: FAIL ...` and exits 1.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

// Messages with write(2): some of these run before stdio is safe to use, or after it closed.
static void say(const char *s) { ssize_t w = write(1, s, strlen(s)); (void)w; }
static void fail(const char *s) { say("early: FAIL "); say(s); say("\n"); _exit(1); }

static int check(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++) if (p[i] != v) return 0;
    return 1;
}

// ---- ctor ----
static unsigned char *ctor_block[8];
__attribute__((constructor(101))) static void early_ctor(void) {
    for (int i = 0; i < 8; i++) {
        size_t n = (size_t)16 << (i * 2);          // 16 B .. 256 KiB
        ctor_block[i] = malloc(n);
        if (!ctor_block[i]) fail("malloc in a constructor returned NULL");
        memset(ctor_block[i], 0xa0 + i, n);
    }
    ctor_block[0] = realloc(ctor_block[0], 32);
    if (!ctor_block[0]) fail("realloc in a constructor returned NULL");
    memset(ctor_block[0], 0xa0, 32);
}

int ctorlib_check_and_free(void);   // libctorlib.so, linked in

static int t_ctor(void) {
    if (!ctorlib_check_and_free()) fail("blocks allocated in a linked library's constructor changed");
    for (int i = 0; i < 8; i++) {
        size_t n = i ? (size_t)16 << (i * 2) : 32;
        if (!check(ctor_block[i], n, (unsigned char)(0xa0 + i))) fail("a block allocated in a constructor changed");
        free(ctor_block[i]);
    }
    say("early: ok constructor allocations intact and freed in main\n");
    return 0;
}

// ---- atexit ----
static void *kept;
static void at_exit_2(void) {
    // Runs first (atexit order is reversed): allocate, grow, free, and free what main kept.
    unsigned char *p = malloc(1000);
    if (!p) fail("malloc in an atexit handler");
    memset(p, 5, 1000);
    p = realloc(p, 100000);
    if (!p || !check(p, 1000, 5)) fail("realloc in an atexit handler");
    free(p);
    if (!check(kept, 4096, 9)) fail("block from main changed before atexit");
    free(kept);
    void *q = calloc(100, 100);
    if (!q || !check(q, 10000, 0)) fail("calloc in an atexit handler");
    free(q);
    say("early: ok atexit handler allocated, reallocated and freed\n");
}
static void at_exit_1(void) {
    void *leak = malloc(12345);        // left allocated at exit: harmless
    if (!leak) fail("malloc in the last atexit handler");
    memset(leak, 1, 12345);
    say("early: ok last atexit handler allocated\n");
}
__attribute__((destructor)) static void early_dtor(void) {
    void *p = malloc(777);
    if (!p) fail("malloc in a destructor");
    free(p);
}
static int t_atexit(void) {
    kept = malloc(4096);
    memset(kept, 9, 4096);
    atexit(at_exit_1);
    atexit(at_exit_2);
    return 0;
}

// ---- threads before the first malloc (of the program's own code; ld.so and the
//      constructor above may have allocated already, which is why `ctor` is separate) ----
#define NT 8
static pthread_barrier_t barrier;
static void *thread_main(void *arg) {
    uintptr_t id = (uintptr_t)arg;
    pthread_barrier_wait(&barrier);
    unsigned char *p[200];
    for (int i = 0; i < 200; i++) {
        size_t n = 1 + (size_t)((i * 131 + id * 17) % 3000);
        p[i] = malloc(n);
        if (!p[i]) return (void *)1;
        memset(p[i], (int)id, n);
    }
    for (int i = 0; i < 200; i++) {
        size_t n = 1 + (size_t)((i * 131 + id * 17) % 3000);
        if (!check(p[i], n, (unsigned char)id)) return (void *)2;
        free(p[i]);
    }
    return NULL;
}
static int t_threads(void) {
    pthread_t t[NT];
    pthread_barrier_init(&barrier, NULL, NT);
    for (uintptr_t i = 0; i < NT; i++)
        if (pthread_create(&t[i], NULL, thread_main, (void *)(i + 1))) fail("pthread_create");
    for (int i = 0; i < NT; i++) {
        void *r;
        pthread_join(t[i], &r);
        if (r == (void *)1) fail("malloc returned NULL in a thread racing for the first allocation");
        if (r == (void *)2) fail("corruption in a thread racing for the first allocation");
    }
    say("early: ok threads started before any malloc allocated concurrently\n");
    return 0;
}

// ---- dlopen ----
static int t_dlopen(const char *path) {
    unsigned char *mine = malloc(3000);
    memset(mine, 4, 3000);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!h) { say(dlerror()); fail("dlopen"); }
    int (*lib_check)(void) = (int (*)(void))dlsym(h, "lib_check");
    void (*lib_free)(void *) = (void (*)(void *))dlsym(h, "lib_free");
    void *(*lib_alloc)(size_t) = (void *(*)(size_t))dlsym(h, "lib_alloc");
    if (!lib_check || !lib_free || !lib_alloc) fail("dlsym");
    if (!lib_check()) fail("the library's constructor allocations changed");
    lib_free(mine);                                    // main's block freed by the library
    unsigned char *theirs = lib_alloc(5000);           // the library's block freed by main
    if (!theirs || !check(theirs, 5000, 0x42)) fail("block from the library");
    theirs = realloc(theirs, 50000);
    if (!theirs || !check(theirs, 5000, 0x42)) fail("realloc of the library's block");
    free(theirs);
    if (dlclose(h)) fail("dlclose");
    // Load it again: the constructor runs again and allocates again.
    h = dlopen(path, RTLD_NOW);
    if (!h) fail("dlopen again");
    lib_check = (int (*)(void))dlsym(h, "lib_check");
    if (!lib_check || !lib_check()) fail("constructor allocations on the second load");
    dlclose(h);
    say("early: ok dlopen'ed library allocated in its constructor and traded blocks with main\n");
    return 0;
}

// ---- errno ----
static int t_errno(void) {
    void *p = malloc(100);
    errno = 1234;
    free(p);
    if (errno != 1234) fail("free changed errno");
    void *big = malloc(64 << 20);
    errno = 4321;
    free(big);                       // a large block, likely unmapped or released
    if (errno != 4321) fail("free of a large block changed errno");
    errno = 77;
    free(NULL);
    if (errno != 77) fail("free(NULL) changed errno");
    if (malloc_usable_size(NULL) != 0) fail("malloc_usable_size(NULL) != 0");
    void *z = malloc(0);
    if (!z) fail("malloc(0) returned NULL (glibc returns a unique pointer)");
    void *z2 = malloc(0);
    if (z2 == z) fail("two malloc(0) returned the same pointer");
    free(z); free(z2);
    say("early: ok free keeps errno; free(NULL), malloc(0), malloc_usable_size(NULL) fine\n");
    return 0;
}

// ---- pthread_exit from main: the process must end once the program's threads are gone,
//      whatever background thread the allocator started (a scavenger that never exits keeps
//      the process alive, and if it blocks signals, even SIGTERM cannot end it) ----
static int t_pthread_exit(void) {
    for (int r = 0; r < 20; r++) {
        void *p[64];
        for (int i = 0; i < 64; i++) { p[i] = malloc((size_t)1 << 20); if (!p[i]) fail("malloc"); memset(p[i], 1, (size_t)1 << 20); }
        for (int i = 0; i < 64; i++) free(p[i]);
    }
    malloc_trim(0);
    usleep(300000);            // time for a background thread to start
    say("early: ok main thread calling pthread_exit\n");
    pthread_exit(NULL);
}

// The same from a fork child whose only thread is not the original main thread (what
// Python's test_threading does: fork in a thread, the child's thread then returns).
static void *fork_in_thread(void *arg) {
    (void)arg;
    pid_t pid = fork();
    if (pid < 0) fail("fork");
    if (pid == 0) {
        for (int r = 0; r < 20; r++) {
            void *p[64];
            for (int i = 0; i < 64; i++) { p[i] = malloc((size_t)1 << 20); if (!p[i]) _exit(3); memset(p[i], 2, (size_t)1 << 20); }
            for (int i = 0; i < 64; i++) free(p[i]);
        }
        malloc_trim(0);
        usleep(300000);
        return NULL;           // the child's last thread ends: the child must exit 0
    }
    int st = 0;
    for (int i = 0; i < 100; i++) {            // 10 s
        pid_t w = waitpid(pid, &st, WNOHANG);
        if (w == pid) {
            if (!WIFEXITED(st) || WEXITSTATUS(st)) fail("fork child (forked from a thread) did not exit cleanly");
            return (void *)1;
        }
        usleep(100000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail("fork child whose last thread returned is still alive after 10 s (an allocator thread keeps it?)");
    return NULL;
}
static int t_fork_thread_exit(void) {
    pthread_t t; void *r = NULL;
    if (pthread_create(&t, NULL, fork_in_thread, NULL)) fail("pthread_create");
    pthread_join(t, &r);
    if (r == (void *)1) say("early: ok fork child's last thread returned, child exited\n");
    return 0;
}

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "";
    if (!strcmp(c, "ctor")) return t_ctor();
    if (!strcmp(c, "atexit")) return t_atexit();
    if (!strcmp(c, "threads")) return t_threads();
    if (!strcmp(c, "dlopen") && argc > 2) return t_dlopen(argv[2]);
    if (!strcmp(c, "errno")) return t_errno();
    if (!strcmp(c, "pthread-exit")) return t_pthread_exit();
    if (!strcmp(c, "fork-thread-exit")) return t_fork_thread_exit();
    say("usage: early ctor|atexit|threads|dlopen LIB|errno|pthread-exit|fork-thread-exit\n");
    return 2;
}
