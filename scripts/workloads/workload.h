/* What the bench workloads share: their random numbers and their size mixes.
 * Every workload draws from a seeded xorshift64 sequence, so that its checksum
 * depends on the seed alone and every allocator must print the same one. */
#ifndef SWIFTHEAP_WORKLOAD_H
#define SWIFTHEAP_WORKLOAD_H
#include <stddef.h>
#include <stdint.h>

static inline uint64_t rnd(uint64_t *s) {
    uint64_t x = *s;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *s = x;
}

/* A size from three bands, as programs allocate (mostly small): with probability
 * p1 % from lo1..hi1, else up to p2 % from lo2..hi2, else from lo3..hi3. */
typedef struct { unsigned p1, p2; size_t lo1, hi1, lo2, hi2, lo3, hi3; } size_mix;

static inline size_t pick_from(const size_mix *m, uint64_t *s) {
    uint64_t r = rnd(s);
    unsigned p = (unsigned)(r % 100);
    r >>= 8;
    if (p < m->p1) return m->lo1 + r % (m->hi1 - m->lo1 + 1);
    if (p < m->p2) return m->lo2 + r % (m->hi2 - m->lo2 + 1);
    return m->lo3 + r % (m->hi3 - m->lo3 + 1);
}
#endif
