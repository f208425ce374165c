// Misuse of the malloc family that SwiftHeap must catch with an abort and a one-line message.
//
//   misuse CASE
//
// Each case prints `PTR 0x...` (the pointer it is about to misuse) on stdout, then misuses it.
// scripts/test-misuse runs each case in its own process and checks that it dies of SIGABRT
// with the right message naming that pointer. `misuse list` prints the cases with the
// message expected: double free -> "free(): double free of", a pointer never returned by
// the allocator -> "free(): invalid pointer", realloc of such a pointer ->
// "realloc(): invalid pointer".
#define _GNU_SOURCE
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

static char global_buf[256] __attribute__((aligned(64)));

static void announce(void *p) {
    char buf[64];
    int n = snprintf(buf, sizeof buf, "PTR %p\n", p);
    ssize_t w = write(1, buf, (size_t)n); (void)w;
}

// The compiler must not see through the pointers (it may warn or fold "free of a non-heap
// object"); launder them through a volatile.
static void *volatile sink;
static void *launder(void *p) { sink = p; return sink; }

static void do_free(void *p) { announce(p); free(launder(p)); }
static void do_realloc(void *p, size_t n) { announce(p); void *q = realloc(launder(p), n); sink = q; }

static void *free_in_thread(void *p) { free(p); return NULL; }

// double-free-remote-deep: frees p, the others, then p again, from its own thread.
#define REMOTE_OTHERS 40
static void *remote_objects[REMOTE_OTHERS + 1];
static void *free_remote_deep(void *arg) {
    (void)arg;
    free(launder(remote_objects[0]));
    for (int i = 1; i <= REMOTE_OTHERS; i++) free(launder(remote_objects[i]));
    do_free(remote_objects[0]);
    return NULL;
}

// Frees p, then stays alive (its large cache with it) until released.
static pthread_barrier_t freed_and_waiting;
static void *free_in_thread_and_wait(void *p) {
    free(p);
    pthread_barrier_wait(&freed_and_waiting);
    pause();
    return NULL;
}

typedef struct { const char *name, *kind, *what; } case_t;
static const case_t cases[] = {
    { "double-free-small",      "double",  "malloc(64), free, free" },
    { "double-free-small-later","double",  "malloc(48), free, other allocations, free again" },
    { "double-free-medium",     "double",  "malloc(20000), free, free" },
    { "double-free-large",      "double",  "malloc(1 MiB), free, free" },
    { "double-free-large-cached", "double", "malloc(100 KiB), free (kept in the thread's large cache), free" },
    { "double-free-large-cached-thread", "double", "malloc(100 KiB) freed by a thread that lives on (kept in its large cache), then again" },
    { "double-free-huge",       "double",  "malloc(64 MiB), free, free" },
    { "double-free-aligned",    "double",  "aligned_alloc(4096, 100), free, free" },
    { "double-free-calloc",     "double",  "calloc(10, 100), free, free" },
    { "double-free-thread",     "double",  "malloc(64) freed by another thread, then again" },
    { "double-free-small-recent", "double", "malloc(64) p and three more, free p and the three, free p again (the fourth most recent free of its bin)" },
    { "double-free-small-flushed", "double", "malloc(64) p and 300 more, free p and all but the first (p goes back to its span, which stays in use, in a flush), free p again" },
    { "double-free-remote-deep", "double", "malloc(64) p and 40 more; another thread frees p, the 40, then p again (deep in its remote bin: reported when the bin goes back to the spans)" },
    { "double-free-large-first-1m", "double", "first allocation of the process: malloc(1 MiB), free, free" },
    { "double-free-large-first-4m", "double", "first allocation of the process: malloc(4 MiB), free, free" },
    { "double-free-large-first-8m", "double", "first allocation of the process: malloc(8 MiB), free, free" },
    { "free-stack",             "free",    "free of a stack address" },
    { "free-global",            "free",    "free of a global" },
    { "free-first-stack",       "free",    "first call of the process: free of a stack address (before the heap exists)" },
    { "free-interior-small",    "free",    "free(malloc(64) + 8)" },
    { "free-interior-misaligned","free",   "free(malloc(64) + 1)" },
    { "free-interior-large",    "free",    "free(malloc(1 MiB) + 512 KiB)" },
    { "free-span-tail",         "free",    "free of the 16-byte-aligned address after the last whole 48-byte object of an 8 KiB page (a span's tail)" },
    { "free-interior-large-page","free",   "free of a page-aligned pointer inside malloc(1 MiB)" },
    { "free-mmap",              "free",    "free of a page from mmap" },
    { "realloc-stack",          "realloc", "realloc of a stack address" },
    { "realloc-global",         "realloc", "realloc of a global" },
    { "realloc-interior-small", "realloc", "realloc(malloc(64) + 8, 100)" },
    { "realloc-interior-large", "realloc", "realloc(malloc(1 MiB) + 512 KiB, 100)" },
    { "realloc-freed-small",    "reallocfreed", "malloc(64), free, realloc(p, 100)" },
    { "realloc-freed-medium",   "reallocfreed", "malloc(20000), free, realloc(p, 40000)" },
    { "realloc-freed-large",    "reallocfreed", "malloc(1 MiB), free, realloc(p, 2 MiB)" },
    { "realloc-freed-large-cached", "reallocfreed", "malloc(100 KiB), free (kept in the thread's large cache), realloc(p, 200 KiB)" },
    { "realloc-freed-huge",     "reallocfreed", "malloc(64 MiB), free, realloc(p, 100)" },
    { "realloc-moved-small",    "reallocfreed", "malloc(64) p, realloc(p, 1000) moves it, realloc(p, 100)" },
    { "double-free-realloc-moved", "double", "malloc(64) p, realloc(p, 1000) moves it, free(p)" },
};

int main(int argc, char **argv) {
    const char *c = argc > 1 ? argv[1] : "list";
    if (!strcmp(c, "list")) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
            printf("%s %s %s\n", cases[i].name, cases[i].kind, cases[i].what);
        return 0;
    }
    char stack_buf[256];
    memset(stack_buf, 1, sizeof stack_buf);
    // Some ordinary traffic first, so the allocator is initialised and its caches populated;
    // not for the "-first-" cases, whose misuse must be the process's first allocations
    // (nothing else then needs fresh pages that could land on the freed block).
    if (!strstr(c, "-first-")) {
        void *warm[64];
        for (int i = 0; i < 64; i++) warm[i] = malloc(16 + (size_t)i * 24);
        for (int i = 0; i < 64; i += 2) free(warm[i]);
    }

    if (!strncmp(c, "double-free-large-first-", 24)) {
        size_t n = strtoul(c + 24, NULL, 10) << 20;
        char *p = malloc(n);
        memset(p, 0x33, n);
        free(p);
        do_free(p);
    }
    else if (!strcmp(c, "double-free-small"))      { void *p = malloc(64); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-small-later")) {
        void *p = malloc(48); free(p);
        void *q[10]; for (int i = 0; i < 10; i++) q[i] = malloc(200 + (size_t)i);
        for (int i = 0; i < 10; i++) free(q[i]);
        do_free(p);
    }
    else if (!strcmp(c, "double-free-medium"))  { void *p = malloc(20000); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-large"))   { void *p = malloc(1 << 20); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-large-cached")) { void *p = malloc(100 << 10); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-large-cached-thread")) {
        void *p = malloc(100 << 10);
        pthread_barrier_init(&freed_and_waiting, NULL, 2);
        pthread_t t; pthread_create(&t, NULL, free_in_thread_and_wait, p);
        pthread_barrier_wait(&freed_and_waiting);
        do_free(p);
    }
    else if (!strcmp(c, "double-free-huge"))    { void *p = malloc(64 << 20); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-aligned")) { void *p = aligned_alloc(4096, 100); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-calloc"))  { void *p = calloc(10, 100); free(p); do_free(p); }
    else if (!strcmp(c, "double-free-thread")) {
        void *p = malloc(64);
        pthread_t t; pthread_create(&t, NULL, free_in_thread, p); pthread_join(t, NULL);
        do_free(p);
    }
    else if (!strcmp(c, "double-free-small-recent")) {
        void *p = launder(malloc(64)), *q[3];
        for (int i = 0; i < 3; i++) q[i] = launder(malloc(64));
        free(launder(p));
        for (int i = 0; i < 3; i++) free(launder(q[i]));
        do_free(p);
    }
    else if (!strcmp(c, "double-free-small-flushed")) {
        enum { N = 300 };
        static void *q[N];
        void *p = launder(malloc(64));
        for (int i = 0; i < N; i++) q[i] = launder(malloc(64));
        free(launder(p));
        // q[0], next to p in its span, stays allocated: the span is not handed back to
        // the page heap, so p's second free finds its span and its bit free there.
        for (int i = 1; i < N; i++) free(launder(q[i]));
        do_free(p);
    }
    else if (!strcmp(c, "double-free-remote-deep")) {
        for (int i = 0; i <= REMOTE_OTHERS; i++) remote_objects[i] = launder(malloc(64));
        pthread_t t; pthread_create(&t, NULL, free_remote_deep, NULL); pthread_join(t, NULL);
    }
    else if (!strcmp(c, "free-stack"))               do_free(stack_buf + 16);
    else if (!strcmp(c, "free-global"))              do_free(global_buf + 16);
    else if (!strcmp(c, "free-first-stack"))         do_free(stack_buf + 16);
    else if (!strcmp(c, "free-interior-small"))      { char *p = malloc(64); do_free(p + 8); }
    else if (!strcmp(c, "free-interior-misaligned")) { char *p = malloc(64); do_free(p + 1); }
    else if (!strcmp(c, "free-interior-large"))      { char *p = malloc(1 << 20); do_free(p + (512 << 10)); }
    else if (!strcmp(c, "free-span-tail")) {
        // 48-byte objects fill an 8 KiB span 170 to a page, leaving a 32-byte tail whose
        // start is a whole number of objects from the span's base: not an object.
        char *p = malloc(48);
        do_free((char *)(((uintptr_t)p & ~(uintptr_t)8191) + 170 * 48));
    }
    else if (!strcmp(c, "free-interior-large-page")) { char *p = malloc(1 << 20); do_free((char *)(((uintptr_t)p + 8192) & ~(uintptr_t)4095)); }
    else if (!strcmp(c, "free-mmap")) {
        char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p == MAP_FAILED) { perror("mmap"); return 3; }
        do_free(p + 4096);
    }
    else if (!strcmp(c, "realloc-stack"))            do_realloc(stack_buf + 16, 100);
    else if (!strcmp(c, "realloc-global"))           do_realloc(global_buf + 16, 100);
    else if (!strcmp(c, "realloc-interior-small"))   { char *p = malloc(64); do_realloc(p + 8, 100); }
    else if (!strcmp(c, "realloc-interior-large"))   { char *p = malloc(1 << 20); do_realloc(p + (512 << 10), 100); }
    else if (!strcmp(c, "realloc-freed-small"))      { char *p = malloc(64); free(p); do_realloc(p, 100); }
    else if (!strcmp(c, "realloc-freed-medium"))     { char *p = malloc(20000); free(p); do_realloc(p, 40000); }
    else if (!strcmp(c, "realloc-freed-large"))      { char *p = malloc(1 << 20); free(p); do_realloc(p, 2 << 20); }
    else if (!strcmp(c, "realloc-freed-large-cached")) { char *p = malloc(100 << 10); free(p); do_realloc(p, 200 << 10); }
    else if (!strcmp(c, "realloc-freed-huge"))       { char *p = malloc(64 << 20); free(p); do_realloc(p, 100); }
    else if (!strcmp(c, "realloc-moved-small") || !strcmp(c, "double-free-realloc-moved")) {
        void *p = launder(malloc(64)), *q = realloc(launder(p), 1000);
        if (!q || q == p) { fprintf(stderr, "misuse: realloc(p, 1000) did not move a 64-byte block\n"); return 3; }
        sink = q;
        if (c[0] == 'r') do_realloc(p, 100); else do_free(p);
    }
    else { fprintf(stderr, "misuse: unknown case %s\n", c); return 3; }

    // Still alive: the misuse went unnoticed.
    const char m[] = "misuse: survived\n";
    ssize_t w = write(2, m, sizeof m - 1); (void)w;
    return 0;
}
