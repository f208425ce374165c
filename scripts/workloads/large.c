/* large: large-object churn, in one thread or several at once.
 *
 *   large OPS LIVE [THREADS [MINLOG MAXLOG]]
 *
 * Each of THREADS threads (default 1: the program then runs no thread but main)
 * keeps LIVE slots of large blocks (2^MINLOG .. 2^MAXLOG bytes, log-uniform; by
 * default 64 KiB .. 4 MiB, 16 and 22; 15 and 18 give 32 .. 256 KiB). OPS times it
 * frees a random slot and mallocs a new block of a random size there, then
 * touches one byte per 4 KiB page (a tag), as a program that fills a buffer
 * partly would. Each block's tags are checked before it is freed. Peak RSS is a
 * few tens of MiB per thread; an allocator that keeps freed large blocks mapped
 * and resident, or that remaps them every time, shows it here, and one that
 * serialises large allocations on a lock shows it with THREADS > 1 (mt-large).
 * OPS and LIVE are per thread (fixed work per thread). The checksum is the sum of
 * the sizes every thread allocated; thread 0's sequence is the single-threaded one.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

static long ops, live;
static unsigned minlog = 16, logspan = 6;


struct blk { unsigned char *p; size_t sz; uint8_t tag; };
struct result { uint64_t sum; long errors; };

static void *worker(void *arg) {
    long id = (long)arg;
    struct result *res = calloc(1, sizeof *res);
    struct blk *b = calloc((size_t)live, sizeof *b);
    if (!res || !b) { fprintf(stderr, "large: calloc failed\n"); exit(3); }
    uint64_t s = 88172645463325252ull ^ (0x9E3779B97F4A7C15ull * (uint64_t)id), sum = 0;
    long errors = 0;
    for (long n = 0; n < ops + live; n++) {
        long i = n < live ? n : (long)(rnd(&s) % (uint64_t)live);
        if (b[i].p) {
            for (size_t off = 0; off < b[i].sz; off += 4096)
                if (b[i].p[off] != (uint8_t)(b[i].tag + (off >> 12))) { errors++; break; }
            if (b[i].p[b[i].sz - 1] != (uint8_t)(b[i].tag + ((b[i].sz - 1) >> 12))) errors++;
            free(b[i].p);
        }
        /* log-uniform in [2^minlog, 2^(minlog + logspan)] */
        unsigned e = minlog + (unsigned)(rnd(&s) % logspan);
        size_t sz = ((size_t)1 << e) + (size_t)(rnd(&s) % ((size_t)1 << e));
        b[i].p = malloc(sz);
        if (!b[i].p) { fprintf(stderr, "large: malloc(%zu) failed\n", sz); exit(3); }
        b[i].sz = sz;
        b[i].tag = (uint8_t)n;
        for (size_t off = 0; off < sz; off += 4096) b[i].p[off] = (uint8_t)(b[i].tag + (off >> 12));
        b[i].p[sz - 1] = (uint8_t)(b[i].tag + ((sz - 1) >> 12));
        sum += sz;
    }
    for (long i = 0; i < live; i++) free(b[i].p);
    free(b);
    res->sum = sum;
    res->errors = errors;
    return res;
}

int main(int argc, char **argv) {
    ops = argc > 1 ? atol(argv[1]) : 20000;
    live = argc > 2 ? atol(argv[2]) : 8;
    int threads = argc > 3 ? atoi(argv[3]) : 1;
    if (argc > 5) { minlog = (unsigned)atoi(argv[4]); logspan = (unsigned)atoi(argv[5]) - minlog; }
    if (live < 1 || live > 4096 || ops < 0 || threads < 1 || threads > 64) return 2;
    if (minlog < 12 || logspan < 1 || minlog + logspan > 30) return 2;
    struct result *res[64];
    if (threads == 1) {
        res[0] = worker((void *)0L);
    } else {
        pthread_t t[64];
        for (long i = 0; i < threads; i++) pthread_create(&t[i], NULL, worker, (void *)i);
        for (int i = 0; i < threads; i++) pthread_join(t[i], (void **)&res[i]);
    }
    uint64_t sum = 0;
    long errors = 0;
    for (int i = 0; i < threads; i++) { sum += res[i]->sum; errors += res[i]->errors; free(res[i]); }
    printf("checksum %llu\n", (unsigned long long)sum);
    if (errors) { fprintf(stderr, "large: %ld corrupted blocks\n", errors); return 1; }
    return 0;
}
