// The program `make profile-demo` profiles: a toy request server. Each request is
// parsed, looked up in a cache (entries are kept: most of the live heap), given a
// session buffer (kept too), and rendered into temporary buffers (freed at once: most
// of what is allocated, none of what is live). One parse path forgets to free its
// error message: a leak, which the in-use profile shows by its call stack.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline))

struct entry { struct entry *next; size_t size; char data[]; };
static struct entry *cache;
static void **sessions;
static size_t session_count;
static unsigned long rng = 2463534242UL;
static unsigned next_random(void) { rng ^= rng << 13; rng ^= rng >> 17; rng ^= rng << 5; return (unsigned)rng; }

NOINLINE static char *format_error(unsigned request) {
    char *message = malloc(2000);
    snprintf(message, 2000, "request %u: malformed header", request);
    return message;
}

NOINLINE static int parse_request(unsigned request) {
    if (request % 7 == 0) {
        char *error = format_error(request);
        if (error[0] == 0) free(error);  // the bug: only an empty message is freed
        return -1;
    }
    return 0;
}

NOINLINE static void cache_insert(unsigned key) {
    size_t size = 200 + next_random() % 3000;
    struct entry *e = malloc(sizeof *e + size);
    e->size = size;
    memset(e->data, (int)key, size);
    e->next = cache;
    cache = e;
}

NOINLINE static void lookup(unsigned key) {
    if (next_random() % 3 == 0) cache_insert(key);
}

NOINLINE static void session_new(void) {
    sessions = realloc(sessions, (session_count + 1) * sizeof *sessions);
    sessions[session_count] = calloc(1, 1024 + next_random() % 1024);
    session_count++;
}

NOINLINE static size_t render_page(unsigned request) {
    size_t total = 0;
    for (int part = 0; part < 4; part++) {
        size_t size = 4096 + next_random() % 12000;
        char *buffer = malloc(size);
        memset(buffer, (int)request, size);
        total += (unsigned char)buffer[size / 2];
        free(buffer);
    }
    return total;
}

NOINLINE static size_t handle_request(unsigned request) {
    if (parse_request(request) != 0) return 0;
    lookup(request);
    if (request % 4 == 0) session_new();
    return render_page(request);
}

int main(int argc, char **argv) {
    unsigned requests = argc > 1 ? (unsigned)atoi(argv[1]) : 100000;
    size_t checksum = 0;
    for (unsigned r = 1; r <= requests; r++) checksum += handle_request(r);
    printf("%u requests served (checksum %zu)\n", requests, checksum);
    return 0;  // everything still allocated is in the profile written at exit
}
