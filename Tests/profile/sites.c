// Three sites hold 60/30/10% of the live heap; a fourth allocates four times as much
// and frees all of it. The live sites use different entry points (malloc, calloc,
// aligned_alloc), so that each hook of the sampler is on the way (apis.c covers the
// others, realloc among them). The profile is written at exit (SWIFTHEAP_PROFILE) and, if
// a path is given, once more through swiftheap_profile_dump before exit.
//
//   sites LIVE_MIB [DUMP_PATH]
#include "profutil.h"

static uint64_t rng = 88172645463325252ULL;

NOINLINE void *site_a(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 1); return p; }
NOINLINE void *site_b(size_t n) { void *p = calloc(1, n); CHECK(p); fill(p, n, 2); return p; }
NOINLINE void *site_c(size_t n) {
    void *p = aligned_alloc(64, (n + 63) & ~(size_t)63);
    CHECK(p && ((uintptr_t)p & 63) == 0);
    fill(p, n, 3);
    return p;
}
NOINLINE void *site_freed(size_t n) { void *p = malloc(n); CHECK(p); fill(p, n, 4); return p; }

// Allocates `bytes` from `site`, keeping every object.
static size_t hold(void *(*site)(size_t), size_t bytes) {
    size_t total = 0;
    while (total < bytes) {
        size_t n = site_size(&rng);
        site(n);
        total += n;
    }
    return total;
}

int main(int argc, char **argv) {
    require_swiftheap();
    size_t live = (argc > 1 ? strtoul(argv[1], NULL, 10) : 256) << 20;
    size_t a = hold(site_a, live / 10 * 6);
    size_t b = hold(site_b, live / 10 * 3);
    size_t c = hold(site_c, live / 10);
    // Four times the live heap, allocated and freed in batches.
    size_t freed = 0;
    enum { batch = 1024 };
    static void *objects[batch];
    while (freed < live * 4) {
        for (int i = 0; i < batch; i++) {
            size_t n = 64 + (size_t)(next_random(&rng) % 65536);
            objects[i] = site_freed(n);
            freed += n;
        }
        for (int i = 0; i < batch; i++) free(objects[i]);
    }
    print_truth("site_a", a);
    print_truth("site_b", b);
    print_truth("site_c", c);
    print_truth("site_freed", freed);
    if (argc > 2) CHECK(swiftheap_profile_dump(argv[2]) == 0);
    return 0;
}
