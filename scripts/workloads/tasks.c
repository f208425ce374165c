/* tasks: a thread per task, as a server that starts a thread for each request does.
 *
 *   tasks TASKS OPS [AT_ONCE]
 *
 * TASKS tasks run AT_ONCE at a time (default 2, at most 64): each is a new thread
 * that mallocs OPS blocks of 16..512 bytes (70% <= 64, 25% <= 256), writes a
 * header and a tail byte into each and keeps it in one of 32 slots, freeing (after
 * checking) the block the slot held; it frees what its slots hold when it ends, and
 * the main thread joins the batch before it starts the next. What the allocator
 * does once per thread shows here: making a thread's cache, its first refills of
 * each size, and what the thread's exit gives back (glibc's arenas and tcache, a
 * thread cache elsewhere), next to the cost of the thread itself (the same under
 * every allocator).
 *
 * The checksum is the sum of size + tag over every block made, which depends only on
 * the seeds; each task also sums what it frees, and the two totals must agree (exit 1
 * otherwise, or when a header or tail was overwritten).
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

#define SLOTS 32
#define MAX_AT_ONCE 64

static const size_mix mix = {70, 95, 16, 64, 65, 256, 257, 512};
static long ops;

typedef struct {
    uint64_t seed;
    uint64_t made, freed;
    int errors;
} task;

/* A block's first word: its size and tag (size | tag << 16), apart from its last
 * byte, a copy of the tag (a block has at least 16 bytes). */
static void check_and_free(task *t, unsigned char *p) {
    uint64_t h;
    memcpy(&h, p, sizeof h);
    size_t size = (size_t)(h & 0xffff);
    uint64_t tag = h >> 16;
    if (size < 16 || size > 512 || p[size - 1] != (unsigned char)tag) t->errors++;
    else t->freed += size + tag;
    free(p);
}

static void *run_task(void *arg) {
    task *t = arg;
    unsigned char *slot[SLOTS] = {0};
    uint64_t s = t->seed;
    for (long i = 0; i < ops; i++) {
        size_t size = pick_from(&mix, &s);
        unsigned char *p = malloc(size);
        if (!p) { t->errors++; break; }
        uint64_t tag = rnd(&s) & 0xff, h = size | tag << 16;
        memcpy(p, &h, sizeof h);
        p[size - 1] = (unsigned char)tag;
        t->made += size + tag;
        unsigned k = (unsigned)(rnd(&s) % SLOTS);
        if (slot[k]) check_and_free(t, slot[k]);
        slot[k] = p;
    }
    for (int k = 0; k < SLOTS; k++)
        if (slot[k]) check_and_free(t, slot[k]);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: tasks TASKS OPS [AT_ONCE]\n");
        return 2;
    }
    long tasks = atol(argv[1]);
    ops = atol(argv[2]);
    int at_once = argc > 3 ? atoi(argv[3]) : 2;
    if (tasks < 0 || ops < 0 || at_once < 1 || at_once > MAX_AT_ONCE) return 2;
    task batch[MAX_AT_ONCE];
    pthread_t thread[MAX_AT_ONCE];
    uint64_t made = 0, freed = 0;
    int errors = 0;
    for (long first = 0; first < tasks; first += at_once) {
        int n = tasks - first < at_once ? (int)(tasks - first) : at_once;
        for (int i = 0; i < n; i++) {
            batch[i] = (task){.seed = 0x9E3779B97F4A7C15ull * (uint64_t)(first + i + 1) | 1};
            if (pthread_create(&thread[i], NULL, run_task, &batch[i]) != 0) {
                fprintf(stderr, "tasks: pthread_create failed\n");
                return 3;
            }
        }
        for (int i = 0; i < n; i++) {
            pthread_join(thread[i], NULL);
            made += batch[i].made;
            freed += batch[i].freed;
            errors += batch[i].errors;
        }
    }
    printf("checksum %llu\n", (unsigned long long)made);
    if (errors || made != freed) {
        fprintf(stderr, "tasks: %d errors, made %llu freed %llu\n", errors,
                (unsigned long long)made, (unsigned long long)freed);
        return 1;
    }
    return 0;
}
