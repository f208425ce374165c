// Linked into `early` (DT_NEEDED). Its constructor runs before those of preloaded
// libraries that come later in the initialisation order, so its malloc calls may be the
// very first ones the allocator sees, before the allocator's own constructor has run.
// Build: gcc -shared -fPIC -o libctorlib.so ctorlib.c
#include <stdlib.h>
#include <string.h>

static unsigned char *early[6];
static size_t size_of(int i) { return (size_t)40 << (3 * i); }   // 40 B .. 1.25 MiB

__attribute__((constructor)) static void ctorlib_init(void) {
    for (int i = 0; i < 6; i++) {
        early[i] = malloc(size_of(i));
        if (early[i]) memset(early[i], 0x30 + i, size_of(i));
    }
    early[1] = realloc(early[1], size_of(1) * 3);
    if (early[1]) memset(early[1], 0x31, size_of(1) * 3);
}

// 1 if the blocks are intact; frees them.
int ctorlib_check_and_free(void) {
    int ok = 1;
    for (int i = 0; i < 6; i++) {
        size_t n = i == 1 ? size_of(1) * 3 : size_of(i);
        if (!early[i]) { ok = 0; continue; }
        for (size_t j = 0; j < n; j++) if (early[i][j] != 0x30 + i) { ok = 0; break; }
        free(early[i]);
        early[i] = NULL;
    }
    return ok;
}
