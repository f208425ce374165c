// realloc.c: contents survive realloc through every size class boundary, into large
// sizes and back, with other allocations in between so that blocks really move.
// Patterns depend on a seed and the byte offset only, never on addresses.
#include "testutil.h"

// Reference bytes: ref[i] is the pattern of seed REF_SEED at offset i.
#define REF_SEED 0x5eed
#define REF_MAX ((size_t)32 << 20)
static unsigned char *ref;

static int check_prefix(const unsigned char *p, size_t n, const char *what, size_t from, size_t to) {
    if (memcmp(p, ref, n) == 0) return 1;
    size_t i = 0;
    while (i < n && p[i] == ref[i]) i++;
    CHECK(0, "%s: realloc %zu -> %zu lost content at offset %zu (0x%02x, want 0x%02x)", what, from, to, i,
          p[i], ref[i]);
    return 0;
}

// One block grown byte by byte-ish, then shrunk, with noise allocations in between.
static void test_small_steps(void) {
    enum { NOISE = 97 };
    void *noise[NOISE] = {0};
    unsigned char *p = malloc(1);
    REQUIRE(p, "malloc(1) failed");
    p[0] = ref[0];
    size_t cur = 1;
    int k = 0, failed = 0;
    for (size_t s = 2; s <= 40000 && !failed; s += (s < 4096 ? 1 : 3)) {
        unsigned char *q = realloc(p, s);
        REQUIRE(q, "realloc(%zu) failed", s);
        p = q;
        if (!check_prefix(p, cur, "grow", cur, s)) failed = 1;
        memcpy(p + cur, ref + cur, s - cur);
        cur = s;
        // Noise: keep a rotating set of blocks of assorted sizes live.
        int slot = k++ % NOISE;
        free(noise[slot]);
        noise[slot] = malloc((s * 7 + 13) % 3000 + 1);
        if (noise[slot]) memset(noise[slot], 0xEE, 1);
    }
    for (size_t s = cur; s >= 1 && !failed; s -= (s > 4096 ? 5 : 1)) {
        unsigned char *q = realloc(p, s);
        REQUIRE(q, "realloc(%zu) failed", s);
        p = q;
        if (!check_prefix(p, s, "shrink", cur, s)) failed = 1;
        cur = s;
        CHECK(malloc_usable_size(p) >= s, "usable %zu < %zu after shrinking realloc", malloc_usable_size(p), s);
        int slot = k++ % NOISE;
        free(noise[slot]);
        noise[slot] = malloc((s * 11 + 5) % 5000 + 1);
        if (s <= 5) break;
    }
    free(p);
    for (int i = 0; i < NOISE; i++) free(noise[i]);
}

// Several blocks realloc'd alternately, so none can simply grow in place forever,
// up to 32 MiB and back down.
static void test_large(void) {
    enum { B = 3 };
    unsigned char *p[B];
    size_t cur[B];
    for (int b = 0; b < B; b++) {
        cur[b] = 1000 + b;
        p[b] = malloc(cur[b]);
        REQUIRE(p[b], "malloc failed");
        memcpy(p[b], ref, cur[b]);
    }
    size_t steps[64];
    int ns = 0;
    for (size_t s = 64 << 10; s <= REF_MAX; s = s * 3 / 2 + 4093) steps[ns++] = s;
    steps[ns++] = REF_MAX;
    for (int i = 0; i < ns; i++) {
        for (int b = 0; b < B; b++) {
            size_t s = steps[i] - (size_t)b * 4099;
            unsigned char *q = realloc(p[b], s);
            REQUIRE(q, "realloc(%zu) failed", s);
            p[b] = q;
            check_prefix(p[b], cur[b] < s ? cur[b] : s, "large grow", cur[b], s);
            if (s > cur[b]) memcpy(p[b] + cur[b], ref + cur[b], s - cur[b]);
            cur[b] = s;
        }
    }
    for (int i = ns - 1; i >= 0; i--) {
        for (int b = 0; b < B; b++) {
            size_t s = steps[i] / 3 + 1 + (size_t)b;
            unsigned char *q = realloc(p[b], s);
            REQUIRE(q, "realloc(%zu) failed", s);
            p[b] = q;
            check_prefix(p[b], s, "large shrink", cur[b], s);
            cur[b] = s;
        }
    }
    // All the way down to small sizes, then up again across the small/large border.
    static const size_t down[] = {70000, 65536, 40000, 4097, 4096, 1000, 100, 16, 1};
    for (unsigned i = 0; i < sizeof down / sizeof down[0]; i++)
        for (int b = 0; b < B; b++) {
            unsigned char *q = realloc(p[b], down[i]);
            REQUIRE(q, "realloc(%zu) failed", down[i]);
            p[b] = q;
            check_prefix(p[b], down[i] < cur[b] ? down[i] : cur[b], "down to small", cur[b], down[i]);
            if (down[i] > cur[b]) memcpy(p[b] + cur[b], ref + cur[b], down[i] - cur[b]);
            cur[b] = down[i];
        }
    for (int b = 0; b < B; b++) {
        unsigned char *q = realloc(p[b], 5 << 20);
        REQUIRE(q, "realloc(5 MiB) failed");
        p[b] = q;
        check_prefix(p[b], 1, "up again", 1, 5 << 20);
        memset(p[b] + 1, 0x77, (5 << 20) - 1);
        free(p[b]);
    }
}

// Shrinking in place keeps the block usable: write the whole usable area afterwards,
// and the neighbours stay intact.
static void test_shrink_in_place(void) {
    static const size_t cases[][2] = {{100000, 50000}, {50000, 10}, {1 << 20, 4096}, {32 << 20, 1 << 20},
                                      {32 << 20, 31 << 20}, {4096, 4000}, {256, 200}, {64, 1}};
    for (unsigned c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        size_t from = cases[c][0], to = cases[c][1];
        unsigned char *before = malloc(64), *p = malloc(from), *after = malloc(64);
        REQUIRE(before && p && after, "malloc failed");
        fill_seed(before, 64, 1);
        fill_seed(after, 64, 2);
        memcpy(p, ref, from);
        unsigned char *q = realloc(p, to);
        REQUIRE(q, "realloc(%zu -> %zu) failed", from, to);
        check_prefix(q, to, "shrink in place", from, to);
        size_t us = malloc_usable_size(q);
        CHECK(us >= to, "usable %zu < %zu after shrink", us, to);
        memset(q, 0x99, us);
        CHECK(verify_seed(before, 64, 1) == 64, "shrink %zu -> %zu: block before clobbered", from, to);
        CHECK(verify_seed(after, 64, 2) == 64, "shrink %zu -> %zu: block after clobbered", from, to);
        // Same size again: content kept.
        memcpy(q, ref, to);
        unsigned char *r = realloc(q, to);
        REQUIRE(r, "realloc to the same size failed");
        check_prefix(r, to, "same size", to, to);
        // A new allocation must not land inside the shrunk block's live part.
        unsigned char *x = malloc(from - to + 1);
        REQUIRE(x, "malloc failed");
        memset(x, 0x44, from - to + 1);
        check_prefix(r, to, "after malloc following shrink", to, to);
        free(x);
        free(r);
        free(before);
        free(after);
    }
}

// Eight buffers grown in turn by small appends (string building), so that a buffer can
// seldom grow into the pages after it: each move copies the whole buffer, and a move
// must buy room for a quarter more, not for the next size class or page only. Then
// the bytes copied are about 1/0.25 = 4 times the bytes appended, at most: checked as
// at most 6 times (growing to each class and page count copied 12 times here).
static void test_growth_moves_rarely(void) {
    enum { BUFFERS = 8 };
    unsigned char *b[BUFFERS];
    size_t len[BUFFERS];
    size_t copied = 0, appended = 0;
    uint64_t s = 42;
    for (int i = 0; i < BUFFERS; i++) { b[i] = NULL; len[i] = 0; }
    for (long n = 0; n < 200000; n++) {
        s ^= s << 13; s ^= s >> 7; s ^= s << 17;
        int i = (int)(s % BUFFERS);
        size_t add = 1 + (size_t)((s >> 20) % 512);
        unsigned char *q = realloc(b[i], len[i] + add);
        REQUIRE(q, "realloc(%zu) failed", len[i] + add);
        if (b[i] && q != b[i]) copied += len[i];
        memcpy(q + len[i], ref + len[i], add);
        b[i] = q;
        len[i] += add;
        appended += add;
        if (len[i] >= ((size_t)4 << 20)) {
            check_prefix(b[i], len[i], "grown by appends", 0, len[i]);
            free(b[i]);
            b[i] = NULL;
            len[i] = 0;
        }
    }
    for (int i = 0; i < BUFFERS; i++) {
        if (b[i]) check_prefix(b[i], len[i], "grown by appends", 0, len[i]);
        free(b[i]);
    }
    CHECK(copied <= 6 * appended, "appending %zu B to %d buffers copied %zu B (%.1f times; at most 6 expected)",
          appended, BUFFERS, copied, (double)copied / (double)appended);
}

// realloc of blocks from the aligned functions keeps their content.
static void test_realloc_aligned(void) {
    static const size_t aligns[] = {32, 256, 4096, 65536, 1 << 21};
    for (unsigned i = 0; i < sizeof aligns / sizeof aligns[0]; i++) {
        size_t n = 3000 + i;
        unsigned char *p = memalign(aligns[i], n);
        REQUIRE(p, "memalign(%zu) failed", aligns[i]);
        memcpy(p, ref, n);
        unsigned char *q = realloc(p, n * 40);
        REQUIRE(q, "realloc failed");
        check_prefix(q, n, "aligned grow", n, n * 40);
        q = realloc(q, 10);
        REQUIRE(q, "realloc failed");
        check_prefix(q, 10, "aligned shrink", n * 40, 10);
        free(q);
    }
}

int main(void) {
    check_preload();
    ref = malloc(REF_MAX);
    REQUIRE(ref, "malloc(32 MiB) for the reference pattern failed");
    fill_seed(ref, REF_MAX, REF_SEED);
    test_small_steps();
    test_large();
    test_shrink_in_place();
    test_growth_moves_rarely();
    test_realloc_aligned();
    free(ref);
    return test_exit("realloc");
}
