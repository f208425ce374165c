// A program linked with SwiftHeap through pkg-config (cc linked.c $(pkg-config --cflags
// --libs swiftheap)), built and run by scripts/test-install and scripts/test-deb: its
// malloc family, and the one libc itself calls, must be SwiftHeap's, and work.
// Exits 0 and prints "linked: ok" if so; prints what is wrong and exits 1 if not.
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int failed;

static void resolves_to_swiftheap(const char *what, void *address) {
    Dl_info info;
    if (!address || !dladdr(address, &info) || !info.dli_fname || !strstr(info.dli_fname, "libswiftheap.so")) {
        fprintf(stderr, "linked: %s is at %p in %s, not in libswiftheap\n", what, address,
                address && dladdr(address, &info) && info.dli_fname ? info.dli_fname : "(nothing)");
        failed = 1;
    }
}

int main(void) {
    const char *names[] = {"malloc", "free", "calloc", "realloc", "posix_memalign", "malloc_usable_size",
                           "malloc_info", "mallopt", "mallinfo2", "_Znwm"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) resolves_to_swiftheap(names[i], dlsym(RTLD_DEFAULT, names[i]));
    void *(*volatile mine)(size_t) = malloc;  // the program's own reference, through its GOT
    resolves_to_swiftheap("this program's malloc", (void *)mine);

    // libc allocates through it too: strdup's block is SwiftHeap's (its usable size is a
    // size class: 16 bytes for 7), and SwiftHeap's mallopt answers 0 to an unknown
    // parameter where glibc's answers 1.
    char *copy = strdup("linked");
    if (!copy || strcmp(copy, "linked") != 0 || malloc_usable_size(copy) != 16) {
        fprintf(stderr, "linked: strdup's block has usable size %zu, not SwiftHeap's 16\n", copy ? malloc_usable_size(copy) : 0);
        failed = 1;
    }
    free(copy);
    if (mallopt(12345, 1) != 0) { fprintf(stderr, "linked: mallopt(12345, 1) is glibc's\n"); failed = 1; }

    // It runs: blocks of many sizes keep their contents.
    enum { N = 2000 };
    static unsigned char *blocks[N];
    for (int i = 0; i < N; i++) {
        size_t size = 1 + (size_t)(i * 7919) % 70000;
        blocks[i] = malloc(size);
        if (!blocks[i]) { fprintf(stderr, "linked: malloc(%zu) failed\n", size); return 1; }
        memset(blocks[i], i & 0xff, size);
    }
    for (int i = 0; i < N; i++) {
        size_t size = 1 + (size_t)(i * 7919) % 70000;
        for (size_t k = 0; k < size; k += 97)
            if (blocks[i][k] != (i & 0xff)) { fprintf(stderr, "linked: block %d corrupted\n", i); return 1; }
        free(blocks[i]);
    }

    char *text = NULL;
    size_t length = 0;
    FILE *stream = open_memstream(&text, &length);
    if (!stream || malloc_info(0, stream) != 0 || fclose(stream) != 0 || !strstr(text, "<swiftheap version=")) {
        fprintf(stderr, "linked: malloc_info is not SwiftHeap's\n");
        failed = 1;
    }
    free(text);
    if (!failed) printf("linked: ok\n");
    return failed;
}
