// trim.c: memory the program freed goes back to the OS when malloc_trim(0) is called
// (DESIGN.md: the scavenger "also run in full by malloc_trim"). Resident set size is
// read from /proc/self/statm. Also: memory handed out again after a trim is zero where
// calloc says so and writable everywhere.
#include "testutil.h"

static size_t rss_bytes(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long size = 0, res = 0;
    if (f) {
        if (fscanf(f, "%lu %lu", &size, &res) != 2) res = 0;
        fclose(f);
    }
    return (size_t)res * (size_t)sysconf(_SC_PAGESIZE);
}

#define MiB ((size_t)1 << 20)

static void burst(const char *what, size_t block, size_t total) {
    size_t n = total / block;
    void **p = malloc(n * sizeof *p);
    REQUIRE(p, "malloc failed");
    memset(p, 0, n * sizeof *p); // the pointer array itself is resident before measuring
    size_t before = rss_bytes();
    for (size_t i = 0; i < n; i++) {
        p[i] = malloc(block);
        REQUIRE(p[i], "malloc(%zu) failed", block);
        memset(p[i], 0x6B, block);
    }
    size_t peak = rss_bytes();
    for (size_t i = 0; i < n; i++) free(p[i]);
    int t = malloc_trim(0);
    CHECK(t == 0 || t == 1, "malloc_trim returned %d", t);
    size_t after = rss_bytes();
    size_t grown = peak > before ? peak - before : 0;
    size_t kept = after > before ? after - before : 0;
    printf("trim: %-22s rss before %6zu KiB, peak %6zu KiB, after free+trim %6zu KiB\n", what, before >> 10,
           peak >> 10, after >> 10);
    CHECK(grown >= total / 2, "%s: RSS grew only %zu KiB for %zu KiB touched (measurement broken?)", what,
          grown >> 10, total >> 10);
    CHECK(kept <= grown / 4, "%s: after free + malloc_trim(0), %zu KiB of %zu KiB still resident", what, kept >> 10,
          grown >> 10);
    free(p);
    // The released memory is usable again; calloc'd memory reads zero.
    for (size_t i = 0; i < 16; i++) {
        unsigned char *c = calloc(1, block);
        REQUIRE(c, "calloc after trim failed");
        for (size_t k = 0; k < block; k += 64)
            if (c[k]) { CHECK(0, "%s: calloc after trim: byte %zu is 0x%02x", what, k, c[k]); break; }
        memset(c, 1, block);
        free(c);
    }
}

// Freed memory is reused: a loop of malloc/touch/free of one size must not grow RSS
// (no trim involved).
static void reuse(const char *what, size_t block, int rounds) {
    void *warm = malloc(block);
    REQUIRE(warm, "malloc(%zu) failed", block);
    memset(warm, 1, block);
    free(warm);
    size_t before = rss_bytes();
    for (int r = 0; r < rounds; r++) {
        unsigned char *p = (r & 1) ? calloc(1, block) : malloc(block);
        REQUIRE(p, "malloc(%zu) failed", block);
        memset(p, 0x3D, block);
        free(p);
    }
    size_t after = rss_bytes();
    size_t grown = after > before ? after - before : 0;
    printf("trim: reuse %-18s %d rounds: RSS grew %zu KiB\n", what, rounds, grown >> 10);
    CHECK(grown <= 4 * block + 8 * MiB, "%s: %d rounds of malloc/free of %zu KiB grew RSS by %zu KiB (freed memory not reused)",
          what, rounds, block >> 10, grown >> 10);
}

int main(void) {
    check_preload();
    reuse("4 MiB", 4 * MiB, 64);
    reuse("300 KiB", 300 << 10, 200);
    burst("large blocks (4 MiB)", 4 * MiB, 256 * MiB);
    burst("medium blocks (48 KiB)", 48 << 10, 128 * MiB);
    burst("small blocks (64 B)", 64, 64 * MiB);
    return test_exit("trim");
}
