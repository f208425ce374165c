// Calls nothing SwiftHeap defines (strdup and puts are libc's): linked with -Wl,--as-needed
// before pkg-config's flags, the library must still be recorded and used (scripts/test-install).
#define _GNU_SOURCE
#include <stdio.h>
#include <string.h>

int main(void) {
    char *copy = strdup("as-needed: ok");
    puts(copy);
    return 0;
}
