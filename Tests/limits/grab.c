// grab.c: how much memory can this process allocate?
//
//   grab            allocate blocks (1 KiB..1 MiB, touched) until malloc returns NULL;
//                   print `grab: first N`; free them all; allocate again and print
//                   `grab: again N`. Run under `ulimit -v` to measure what an
//                   address-space cap leaves the program (scripts/test-limits).
//   grab threads N  create N threads with 256 KiB stacks, each allocating and freeing
//                   small and large blocks, join them; prints `grab: threads ok` or why not.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BLOCKS 200000

static void *blocks[MAX_BLOCKS];

static size_t grab_all(int *count) {
    size_t total = 0;
    int n = 0;
    uint64_t x = 12345;
    while (n < MAX_BLOCKS) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        size_t size = (x >> 33) % 8 == 0 ? ((size_t)64 << 10) + (x >> 20) % ((size_t)960 << 10)
                                         : 1024 + (x >> 20) % 15000;
        void *p = malloc(size);
        if (!p) {
            if (errno != ENOMEM) printf("grab: malloc failed with errno %d, not ENOMEM\n", errno);
            break;
        }
        memset(p, 0x5A, size);
        blocks[n++] = p;
        total += size;
    }
    *count = n;
    return total;
}

static void *thread_main(void *arg) {
    (void)arg;
    for (int i = 0; i < 200; i++) {
        void *small = malloc(16 + (size_t)i * 8);
        void *large = malloc(100000 + (size_t)i * 100);
        if (!small || !large) return (void *)1;
        memset(small, 1, 16);
        memset(large, 1, 100000);
        free(small);
        free(large);
    }
    return NULL;
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    if (argc >= 3 && strcmp(argv[1], "threads") == 0) {
        int n = atoi(argv[2]);
        pthread_t t[256];
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setstacksize(&attr, 256 << 10);
        int made = 0;
        for (; made < n && made < 256; made++) {
            int rc = pthread_create(&t[made], &attr, thread_main, NULL);
            if (rc != 0) {
                printf("grab: pthread_create of thread %d failed: %s\n", made + 1, strerror(rc));
                break;
            }
        }
        int failed = 0;
        for (int i = 0; i < made; i++) {
            void *r;
            pthread_join(t[i], &r);
            failed += r != NULL;
        }
        if (made == n && failed == 0) printf("grab: threads ok (%d)\n", n);
        else printf("grab: threads failed: %d of %d created, %d could not allocate\n", made, n, failed);
        return made == n && failed == 0 ? 0 : 1;
    }
    int n1, n2;
    size_t first = grab_all(&n1);
    printf("grab: first %zu (%d blocks)\n", first, n1);
    for (int i = 0; i < n1; i++) free(blocks[i]);
    size_t again = grab_all(&n2);
    printf("grab: again %zu (%d blocks)\n", again, n2);
    for (int i = 0; i < n2; i++) free(blocks[i]);
    return 0;
}
