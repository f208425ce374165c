// A library for `early dlopen`: allocates in its constructor, frees memory the main program
// allocated, hands out memory the main program frees, and frees the rest in its destructor.
// Build: gcc -shared -fPIC -o libdlib.so dlib.c
#include <stdlib.h>
#include <string.h>

static unsigned char *blocks[16];
static size_t size_of(int i) { return (size_t)24 << (i % 12); }   // 24 B .. 48 KiB

__attribute__((constructor)) static void lib_init(void) {
    for (int i = 0; i < 16; i++) {
        blocks[i] = malloc(size_of(i));
        if (blocks[i]) memset(blocks[i], 0x60 + i, size_of(i));
    }
}

__attribute__((destructor)) static void lib_fini(void) {
    for (int i = 0; i < 16; i++) free(blocks[i]);
}

int lib_check(void) {
    for (int i = 0; i < 16; i++) {
        if (!blocks[i]) return 0;
        for (size_t j = 0; j < size_of(i); j++) if (blocks[i][j] != 0x60 + i) return 0;
    }
    return 1;
}

void lib_free(void *p) { free(p); }

void *lib_alloc(size_t n) {
    void *p = malloc(n);
    if (p) memset(p, 0x42, n);
    return p;
}
