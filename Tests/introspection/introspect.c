// Drives malloc_info, mallinfo2 and the summary at exit for scripts/test-stats, which
// parses what this writes (XML and JSON, with Python) and compares the figures.
//
//   introspect info XML FIGURES   builds a heap, writes malloc_info(0) to XML and
//                                 mallinfo2 taken just before and just after to FIGURES
//   introspect exit FIGURES       builds a heap, writes mallinfo2 to FIGURES with write(2)
//                                 as the last thing before exit: the summary at exit
//                                 (SWIFTHEAP_STATS=json) must show the same figures
//
// FIGURES lines are "name value"; "before." and "after." prefixes in info mode. Nothing
// between the two mallinfo2 calls may allocate: the stream's buffer is set with setvbuf.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *(*volatile t_malloc)(size_t) = malloc;
static void (*volatile t_free)(void *) = free;

enum { SMALL = 5000 };
static void *small[SMALL];
static void *large[3];

static void *thread_allocates(void *arg) {
    (void)arg;
    void *mine[500];
    for (int i = 0; i < 500; i++) mine[i] = t_malloc(24 + (size_t)i * 16);
    for (int i = 0; i < 500; i += 2) t_free(mine[i]);
    // Half stay live, allocated by a thread that is gone.
    for (int i = 1; i < 500; i += 2) small[i] = mine[i];
    return NULL;
}

static void build_heap(void) {
    pthread_t thread;
    if (pthread_create(&thread, NULL, thread_allocates, NULL) != 0 || pthread_join(thread, NULL) != 0) exit(2);
    for (int i = 500; i < SMALL; i++) small[i] = t_malloc(1 + (size_t)(i * 37) % 3000);
    for (int i = 500; i < SMALL; i += 3) { t_free(small[i]); small[i] = NULL; }
    large[0] = t_malloc(100 << 10);
    large[1] = t_malloc(3 << 20);
    large[2] = t_malloc(40 << 10);
    t_free(large[2]);
    large[2] = NULL;
}

static int put(char *out, size_t room, const char *prefix, struct mallinfo2 m) {
    return snprintf(out, room, "%sarena %zu\n%shblks %zu\n%shblkhd %zu\n%suordblks %zu\n%sfordblks %zu\n%skeepcost %zu\n",
                    prefix, m.arena, prefix, m.hblks, prefix, m.hblkhd, prefix, m.uordblks, prefix, m.fordblks, prefix, m.keepcost);
}

static void write_file(const char *path, const char *text) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, text, strlen(text)) != (ssize_t)strlen(text) || close(fd) != 0) exit(2);
}

int main(int argc, char **argv) {
    static char text[4096];
    if (argc == 4 && strcmp(argv[1], "info") == 0) {
        build_heap();
        FILE *xml = fopen(argv[2], "w");
        if (!xml) return 2;
        static char buffer[1 << 20];
        setvbuf(xml, buffer, _IOFBF, sizeof buffer);
        struct mallinfo2 before = mallinfo2();
        int rc = malloc_info(0, xml);
        struct mallinfo2 after = mallinfo2();
        errno = 0;
        int bad = malloc_info(1, xml);
        int bad_errno = errno;
        if (fclose(xml) != 0) return 2;
        int n = put(text, sizeof text, "before.", before);
        n += put(text + n, sizeof text - (size_t)n, "after.", after);
        snprintf(text + n, sizeof text - (size_t)n, "rc %d\nbad_options_rc %d\nbad_options_errno %d\n", rc, bad, bad_errno);
        write_file(argv[3], text);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "exit") == 0) {
        build_heap();
        struct mallinfo2 last = mallinfo2();
        put(text, sizeof text, "", last);
        write_file(argv[2], text);
        return 0;
    }
    fprintf(stderr, "usage: introspect info XML FIGURES | exit FIGURES\n");
    return 2;
}
