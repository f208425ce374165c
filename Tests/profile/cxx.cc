// operator new through SwiftHeap's C++ operators: the profile names the program's
// functions, not operator new (the allocator's own frames, which the unwinder walks
// through their unwind tables, are skipped). 75% from new[], 25% from aligned new.
//
//   cxx LIVE_MIB
#include <new>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>

extern "C" int swiftheap_profile_dump(const char *path) __attribute__((weak));

static uint64_t rng = 12345;
static size_t next_size() { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; return 16 + rng % 4096; }

__attribute__((noinline)) char *cxx_site_new(size_t n) { char *p = new char[n]; memset(p, 1, n); return p; }
__attribute__((noinline)) char *cxx_site_aligned(size_t n) {
    char *p = static_cast<char *>(::operator new(n, std::align_val_t(64)));
    memset(p, 2, n);
    return p;
}

int main(int argc, char **argv) {
    if (!swiftheap_profile_dump) { fprintf(stderr, "preload not active\n"); return 3; }
    size_t live = (argc > 1 ? strtoul(argv[1], nullptr, 10) : 128) << 20;
    size_t a = 0, b = 0;
    while (a < live / 4 * 3) { size_t n = next_size(); cxx_site_new(n); a += n; }
    while (b < live / 4) { size_t n = next_size(); cxx_site_aligned(n); b += n; }
    printf("truth cxx_site_new %zu\ntruth cxx_site_aligned %zu\n", a, b);
    return 0;
}
