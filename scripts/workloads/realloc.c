/* realloc: buffers grown by small increments, like string builders.
 *
 *   realloc OPS BUFFERS MAXLEN MAXINC
 *
 * Keeps BUFFERS buffers. OPS times it picks a random buffer and appends 1..MAXINC
 * bytes to it with realloc(buf, len + n) (no capacity doubling: every append is
 * a realloc, as naive string building code does). When a buffer passes its
 * target length (random, 1 KiB .. MAXLEN, log-uniform) its whole content is
 * checked and it is freed and started again. The allocator decides how often
 * realloc grows in place and how much it copies.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "workload.h"


struct buf { unsigned char *p; size_t len, target; uint8_t seed; };

static size_t pick_target(uint64_t *s, size_t maxlen) {
    unsigned top = 10;
    while (top < 40 && ((size_t)1 << (top + 1)) <= maxlen) top++;
    unsigned e = 10 + (unsigned)(rnd(s) % (top - 10 + 1));
    size_t t = ((size_t)1 << e) + (size_t)(rnd(s) % ((size_t)1 << e));
    return t > maxlen ? maxlen : t;
}

int main(int argc, char **argv) {
    long ops = argc > 1 ? atol(argv[1]) : 20000000;
    long nbuf = argc > 2 ? atol(argv[2]) : 64;
    size_t maxlen = argc > 3 ? (size_t)atol(argv[3]) : 4u << 20;
    size_t maxinc = argc > 4 ? (size_t)atol(argv[4]) : 512;
    if (nbuf < 1 || maxlen < 2048 || maxinc < 1) return 2;
    struct buf *b = calloc((size_t)nbuf, sizeof *b);
    uint64_t s = 0x853C49E6748FEA9Bull, sum = 0;
    int errors = 0;
    for (long i = 0; i < nbuf; i++) { b[i].target = pick_target(&s, maxlen); b[i].seed = (uint8_t)i; }
    for (long n = 0; n < ops; n++) {
        struct buf *x = &b[rnd(&s) % (uint64_t)nbuf];
        size_t add = 1 + (size_t)(rnd(&s) % maxinc);
        unsigned char *q = realloc(x->p, x->len + add);
        if (!q) { fprintf(stderr, "realloc: realloc(%zu) failed\n", x->len + add); return 3; }
        x->p = q;
        for (size_t k = 0; k < add; k++) q[x->len + k] = (uint8_t)(x->seed + x->len + k);
        x->len += add;
        if (x->len >= x->target) {
            for (size_t k = 0; k < x->len; k++)
                if (q[k] != (uint8_t)(x->seed + k)) { errors++; break; }
            sum += x->len;
            free(x->p);
            x->p = NULL; x->len = 0;
            x->target = pick_target(&s, maxlen);
            x->seed = (uint8_t)n;
        }
    }
    for (long i = 0; i < nbuf; i++) { sum += b[i].len; free(b[i].p); }
    free(b);
    printf("checksum %llu\n", (unsigned long long)sum);
    if (errors) { fprintf(stderr, "realloc: %d corrupted buffers\n", errors); return 1; }
    return 0;
}
