/* prodcons: producer/consumer with cross-thread frees.
 *
 *   prodcons PAIRS BLOCKS_PER_PRODUCER BATCH QUEUE_BATCHES
 *
 * PAIRS producers and PAIRS consumers share one mutex-protected bounded queue
 * of batches. A producer mallocs BATCH blocks (16..1024 bytes, mostly small),
 * writes a header and tail into each, and enqueues the batch; a consumer
 * dequeues it, checks every block and frees it: every block is freed by a
 * thread other than the one that allocated it. The queue holds up to
 * QUEUE_BATCHES batches, so a few MiB are live. The checksum is the sum of
 * what the producers made (independent of the interleaving); the consumers'
 * sum must equal it.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"

static long blocks_per_producer, batch, qcap;
static void ***queue;
static long qhead, qtail, qcount;
static int producers_left;
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER, not_empty = PTHREAD_COND_INITIALIZER;
static uint64_t produced_sum, consumed_sum;
static int errors;


static const size_mix mix = {75, 95, 16, 128, 129, 512, 513, 1024};
static inline size_t pick_size(uint64_t *s) { return pick_from(&mix, s); }

static void *producer(void *arg) {
    long id = (long)arg;
    uint64_t s = 0x2545F4914F6CDD1Dull * (uint64_t)(id + 7) | 1, sum = 0;
    for (long done = 0; done < blocks_per_producer; done += batch) {
        void **b = malloc((size_t)batch * sizeof *b);
        if (!b) exit(3);
        for (long k = 0; k < batch; k++) {
            size_t sz = pick_size(&s);
            unsigned char *p = malloc(sz);
            if (!p) { fprintf(stderr, "prodcons: malloc(%zu) failed\n", sz); exit(3); }
            uint32_t h[2] = { (uint32_t)sz, (uint32_t)(done + k) };
            memcpy(p, h, 8);
            p[sz - 1] = (unsigned char)(sz ^ h[1]);
            sum += sz + h[1];
            b[k] = p;
        }
        pthread_mutex_lock(&mu);
        while (qcount == qcap) pthread_cond_wait(&not_full, &mu);
        queue[qtail] = b; qtail = (qtail + 1) % qcap; qcount++;
        pthread_cond_signal(&not_empty);
        pthread_mutex_unlock(&mu);
    }
    pthread_mutex_lock(&mu);
    produced_sum += sum;
    if (--producers_left == 0) pthread_cond_broadcast(&not_empty);
    pthread_mutex_unlock(&mu);
    return NULL;
}

static void *consumer(void *arg) {
    (void)arg;
    uint64_t sum = 0;
    int bad = 0;
    for (;;) {
        pthread_mutex_lock(&mu);
        while (qcount == 0 && producers_left > 0) pthread_cond_wait(&not_empty, &mu);
        if (qcount == 0) { pthread_mutex_unlock(&mu); break; }
        void **b = queue[qhead]; qhead = (qhead + 1) % qcap; qcount--;
        pthread_cond_signal(&not_full);
        pthread_mutex_unlock(&mu);
        for (long k = 0; k < batch; k++) {
            unsigned char *p = b[k];
            uint32_t h[2];
            memcpy(h, p, 8);
            if (h[0] < 16 || h[0] > 1024 || p[h[0] - 1] != (unsigned char)(h[0] ^ h[1])) bad++;
            else sum += h[0] + h[1];
            free(p);
        }
        free(b);
    }
    pthread_mutex_lock(&mu);
    consumed_sum += sum; errors += bad;
    pthread_mutex_unlock(&mu);
    return NULL;
}

int main(int argc, char **argv) {
    int pairs = argc > 1 ? atoi(argv[1]) : 2;
    blocks_per_producer = argc > 2 ? atol(argv[2]) : 10000000;
    batch = argc > 3 ? atol(argv[3]) : 256;
    qcap = argc > 4 ? atol(argv[4]) : 128;
    if (pairs < 1 || pairs > 64 || batch < 1 || qcap < 1) return 2;
    blocks_per_producer = (blocks_per_producer + batch - 1) / batch * batch;
    queue = malloc((size_t)qcap * sizeof *queue);
    producers_left = pairs;
    pthread_t t[128];
    for (long i = 0; i < pairs; i++) pthread_create(&t[i], NULL, producer, (void *)i);
    for (long i = 0; i < pairs; i++) pthread_create(&t[pairs + i], NULL, consumer, (void *)i);
    for (int i = 0; i < 2 * pairs; i++) pthread_join(t[i], NULL);
    free(queue);
    printf("checksum %llu\n", (unsigned long long)produced_sum);
    if (errors || consumed_sum != produced_sum) {
        fprintf(stderr, "prodcons: %d corrupted blocks, produced %llu consumed %llu\n", errors,
                (unsigned long long)produced_sum, (unsigned long long)consumed_sum);
        return 1;
    }
    return 0;
}
