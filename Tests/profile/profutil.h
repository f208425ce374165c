// Helpers of the heap-profile test programs (run by scripts/test-profile under
// LD_PRELOAD=libswiftheap.so with SWIFTHEAP_PROFILE set). Each program allocates from
// sites of known shares and prints the truth as "truth NAME BYTES" lines, which the
// script compares with what google-pprof and Go's pprof read from the profile.
#ifndef PROFUTIL_H
#define PROFUTIL_H
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NOINLINE __attribute__((noinline, noclone))

// SwiftHeap's export, weak: the program also links and runs without the library.
extern int swiftheap_profile_dump(const char *path) __attribute__((weak));

#define CHECK(cond) do { if (!(cond)) { fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); exit(1); } } while (0)

// xorshift64: deterministic sizes.
static inline uint64_t next_random(uint64_t *state) {
    uint64_t x = *state;
    x ^= x << 13; x ^= x >> 7; x ^= x << 17;
    return *state = x;
}

// A size for a "live" site: mostly 16..4111 bytes, one in 64 a large object of
// 40..104 KiB (above SwiftHeap's small-object limit).
static inline size_t site_size(uint64_t *state) {
    uint64_t r = next_random(state);
    if ((r & 63) == 0) return (40u << 10) + (size_t)((r >> 8) % (64u << 10));
    return 16 + (size_t)((r >> 8) % 4096);
}

// Touches every page so that the memory is really used.
static inline void fill(void *p, size_t n, int byte) { memset(p, byte, n); }

static inline void print_truth(const char *site, size_t bytes) { printf("truth %s %zu\n", site, bytes); }

// Whether the preload is active (so a mistake in the harness cannot pass silently).
static inline void require_swiftheap(void) {
    if (!swiftheap_profile_dump) { fprintf(stderr, "swiftheap_profile_dump not found: is the preload active?\n"); exit(3); }
}
#endif
