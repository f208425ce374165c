// A library whose constructor frees a pointer the allocator never returned (a stack
// address) as its first call: the loader runs it before the preloaded allocator's own
// constructor, so the free comes before the heap exists. Built twice: as
// libctorfree.so, and with -DCTORFREE_MAIN as the program that links it (with
// --no-as-needed: it uses nothing of the library). scripts/test-misuse expects the
// allocator's one-line "free(): invalid pointer" diagnostic and SIGABRT.
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#ifdef CTORFREE_MAIN
int main(void) {
    printf("ctorfree: survived\n");
    return 0;
}
#else
static void *volatile sink;  // the compiler must not see that the pointer is the stack's

__attribute__((constructor)) static void free_before_everything(void) {
    char buf[64];
    char line[64];
    sink = buf + 16;
    int n = snprintf(line, sizeof line, "PTR %p\n", sink);
    ssize_t w = write(1, line, (size_t)n); (void)w;
    free(sink);
}
#endif
