// A deliberately broken allocator shim, to check that the stress test catches faults.
// Preloaded over glibc; BROKEN selects the fault:
//   calloc   now and then calloc returns memory with a non-zero byte
//   realloc  now and then realloc loses a byte of the preserved content
//   dup      now and then malloc returns a block that is still live (two owners)
//   forkhang the fork child hangs (as if a lock were left held across fork)
// Build: gcc -O2 -shared -fPIC -o broken.so broken.c -ldl
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);

static int mode = -1;   // 0 none, 1 calloc, 2 realloc, 3 dup, 4 forkhang
static atomic_ulong counter;
static void *_Atomic last;

static int get_mode(void) {
    if (mode < 0) {
        const char *m = getenv("BROKEN");
        mode = !m ? 0 : !strcmp(m, "calloc") ? 1 : !strcmp(m, "realloc") ? 2 : !strcmp(m, "dup") ? 3
             : !strcmp(m, "forkhang") ? 4 : 0;
    }
    return mode;
}

static void hang(void) { for (;;) pause(); }

__attribute__((constructor)) static void init(void) {
    if (get_mode() == 4) pthread_atfork(NULL, NULL, hang);
}

void *malloc(size_t n) {
    void *p = __libc_malloc(n);
    if (get_mode() == 3 && p && n >= 16 && n <= 1024) {
        void *prev = atomic_load(&last);
        if (prev && atomic_fetch_add(&counter, 1) % 5000 == 4999 && malloc_usable_size(prev) >= n) return prev;
        atomic_store(&last, p);
    }
    return p;
}

void *calloc(size_t n, size_t m) {
    unsigned char *p = __libc_calloc(n, m);
    if (get_mode() == 1 && p && n * m >= 16 && atomic_fetch_add(&counter, 1) % 2000 == 1999) p[7] = 0x5a;
    return p;
}

void *realloc(void *old, size_t n) {
    unsigned char *p = __libc_realloc(old, n);
    if (get_mode() == 2 && p && old && n >= 16 && atomic_fetch_add(&counter, 1) % 2000 == 1999) p[3] ^= 0xff;
    return p;
}
