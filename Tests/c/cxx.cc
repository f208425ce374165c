// cxx.cc: the C++ operators through the allocator: new/delete, arrays, sized delete,
// aligned new, nothrow new, bad_alloc on impossible sizes, and container churn.
// Built with g++ -std=c++17 -fsized-deallocation by scripts/test-c.
#include "testutil.h"

#include <cstddef>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

// Makes a pointer escape so that the compiler cannot elide a new/delete pair or
// assume anything about the memory it points to.
template <class T> static inline T *escape(T *p) {
    __asm__ volatile("" : "+r"(p) : : "memory");
    return p;
}

static volatile size_t huge_size = SIZE_MAX / 2; // runtime value: no compile-time folding

struct Tracked {
    static int live;
    unsigned char data[40];
    Tracked() { live++; memset(data, 0x5A, sizeof data); }
    ~Tracked() { live--; }
};
int Tracked::live = 0;

struct alignas(256) Aligned256 {
    unsigned char data[300];
};

struct alignas(4096) Page {
    unsigned char data[100];
};

static void test_plain() {
    int *i = escape(new int(42));
    CHECK(*i == 42, "new int(42) reads %d", *i);
    delete i;

    Tracked *a = escape(new Tracked[100]);
    CHECK(Tracked::live == 100, "new Tracked[100]: %d live", Tracked::live);
    delete[] a;
    CHECK(Tracked::live == 0, "delete[]: %d still live", Tracked::live);

    // The operators themselves, with sized delete.
    for (size_t n : {1ul, 8ul, 16ul, 100ul, 1000ul, 5000ul, 70000ul, 1ul << 20, 9ul << 20}) {
        void *p = escape(::operator new(n));
        CHECK(p != nullptr && is_aligned(p, 16), "operator new(%zu) = %p", n, p);
        memset(p, 0x11, n);
        ::operator delete(p, n);
        void *q = escape(::operator new[](n));
        memset(q, 0x22, n);
        ::operator delete[](q, n);
    }
    // new(0) gives a unique pointer.
    void *z1 = escape(::operator new(0)), *z2 = escape(::operator new(0));
    CHECK(z1 && z2 && z1 != z2, "operator new(0) twice: %p %p", z1, z2);
    ::operator delete(z1);
    ::operator delete(z2, (size_t)0);
    // Sized delete through a class with a non-virtual destructor.
    std::vector<Tracked *> v;
    for (int k = 0; k < 1000; k++) v.push_back(escape(new Tracked));
    for (Tracked *t : v) delete t; // -fsized-deallocation: calls operator delete(void*, size_t)
    CHECK(Tracked::live == 0, "Tracked leak: %d", Tracked::live);
    // malloc'd and new'd memory mixed in one program.
    void *m = escape(malloc(100));
    char *c = escape(new char[100]);
    memset(m, 1, 100);
    memset(c, 2, 100);
    free(m);
    delete[] c;
}

static void test_aligned() {
    Aligned256 *a = escape(new Aligned256);
    CHECK(is_aligned(a, 256), "new Aligned256 = %p not 256-aligned", (void *)a);
    memset(a->data, 1, sizeof a->data);
    delete a;
    Aligned256 *arr = escape(new Aligned256[17]);
    CHECK(is_aligned(arr, 256), "new Aligned256[17] = %p not 256-aligned", (void *)arr);
    memset(arr, 2, sizeof(Aligned256) * 17);
    delete[] arr;
    Page *pg = escape(new Page);
    CHECK(is_aligned(pg, 4096), "new Page = %p not 4096-aligned", (void *)pg);
    delete pg;

    for (size_t al : {16ul, 32ul, 64ul, 256ul, 4096ul, 65536ul, 1ul << 21}) {
        for (size_t n : {1ul, 100ul, 4096ul, 100000ul}) {
            void *p = escape(::operator new(n, std::align_val_t(al)));
            CHECK(is_aligned(p, al), "operator new(%zu, align %zu) = %p", n, al, p);
            memset(p, 0x33, n);
            if (n & 1) ::operator delete(p, std::align_val_t(al));
            else ::operator delete(p, n, std::align_val_t(al));
            void *q = escape(::operator new[](n, std::align_val_t(al)));
            CHECK(is_aligned(q, al), "operator new[](%zu, align %zu) = %p", n, al, q);
            memset(q, 0x44, n);
            ::operator delete[](q, std::align_val_t(al));
            void *r = escape(::operator new(n, std::align_val_t(al), std::nothrow));
            CHECK(r && is_aligned(r, al), "nothrow aligned new(%zu, %zu) = %p", n, al, r);
            ::operator delete(r, std::align_val_t(al), std::nothrow);
        }
    }
    // std::vector of over-aligned elements goes through aligned new.
    std::vector<Aligned256> va(33);
    CHECK(is_aligned(va.data(), 256), "vector<Aligned256> data %p misaligned", (void *)va.data());
}

static void test_nothrow_and_bad_alloc() {
    int *p = escape(new (std::nothrow) int[10]);
    CHECK(p != nullptr, "new (nothrow) int[10] returned nullptr");
    delete[] p;
    void *n = escape(::operator new(huge_size, std::nothrow));
    CHECK(n == nullptr, "operator new(SIZE_MAX/2, nothrow) = %p (want nullptr)", n);
    n = escape(::operator new[](huge_size, std::nothrow));
    CHECK(n == nullptr, "operator new[](SIZE_MAX/2, nothrow) = %p (want nullptr)", n);
    n = escape(::operator new(huge_size, std::align_val_t(64), std::nothrow));
    CHECK(n == nullptr, "aligned nothrow new of SIZE_MAX/2 = %p (want nullptr)", n);

    bool threw = false;
    try {
        void *x = escape(::operator new(huge_size));
        CHECK(false, "operator new(SIZE_MAX/2) returned %p instead of throwing", x);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "operator new(SIZE_MAX/2) did not throw std::bad_alloc");
    threw = false;
    try {
        void *x = escape(::operator new[](huge_size + 1000));
        CHECK(false, "operator new[](huge) returned %p", x);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "operator new[](huge) did not throw std::bad_alloc");
    threw = false;
    try {
        void *x = escape(::operator new(huge_size, std::align_val_t(4096)));
        CHECK(false, "aligned operator new(huge) returned %p", x);
    } catch (const std::bad_alloc &) {
        threw = true;
    }
    CHECK(threw, "aligned operator new(SIZE_MAX/2) did not throw std::bad_alloc");
    threw = false;
    try {
        size_t count = huge_size / 4; // * sizeof(double) overflows
        double *d = escape(new double[count * 3]);
        CHECK(false, "new double[huge] returned %p", (void *)d);
    } catch (const std::bad_alloc &) { // bad_array_new_length is a bad_alloc
        threw = true;
    }
    CHECK(threw, "new double[huge] did not throw");
    // The heap still works after the failures.
    std::string s(1000, 'x');
    CHECK(s.size() == 1000 && s[999] == 'x', "string after bad_alloc");
}

static unsigned long churn(unsigned seed) {
    unsigned long h = 1469598103934665603ul;
    auto mixin = [&](unsigned long v) { h = (h ^ v) * 1099511628211ul; };
    std::map<std::string, std::vector<int>> m;
    std::unordered_map<int, std::string> um;
    unsigned x = seed;
    for (int i = 0; i < 20000; i++) {
        x = x * 1103515245u + 12345u;
        std::string key = "key-" + std::to_string(x % 5000) + std::string(x % 40, 'k');
        auto &vec = m[key];
        vec.push_back((int)i);
        if (vec.size() > 20) vec.erase(vec.begin(), vec.begin() + 10);
        um[(int)(x % 3000)] = key + key;
        if (i % 7 == 0) m.erase(m.begin());
        if (i % 11 == 0) um.erase((int)(x % 3000));
    }
    for (auto &kv : m) {
        mixin(kv.first.size());
        for (int v : kv.second) mixin((unsigned long)v);
    }
    std::vector<std::string> strs;
    for (int i = 0; i < 5000; i++) strs.push_back(std::string(1 + i % 300, (char)('a' + i % 26)));
    std::string joined;
    for (auto &s : strs) joined += s;
    mixin(joined.size());
    strs.clear();
    strs.shrink_to_fit();
    std::vector<std::vector<char>> big;
    for (int i = 0; i < 20; i++) big.emplace_back((size_t)(100000 + i * 50000), (char)i);
    for (auto &b : big) mixin((unsigned long)b.size() + (unsigned long)b[b.size() - 1]);
    return h;
}

static void test_containers() {
    unsigned long a = churn(1), b = churn(1);
    CHECK(a == b, "container churn is not deterministic: %lx vs %lx", a, b);
    // Threads churning containers at once; each must get its single-thread result.
    unsigned long expect[4], got[4];
    for (unsigned t = 0; t < 4; t++) expect[t] = churn(t + 10);
    std::vector<std::thread> ts;
    for (unsigned t = 0; t < 4; t++) ts.emplace_back([t, &got] { got[t] = churn(t + 10); });
    for (auto &t : ts) t.join();
    for (unsigned t = 0; t < 4; t++) CHECK(got[t] == expect[t], "thread %u churn %lx != %lx", t, got[t], expect[t]);
}

int main() {
    check_preload();
    static const char *const cxx_names[] = {"_Znwm", "_ZdlPv", "_Znam", "_ZdaPv", "_ZdlPvm",
                                            "_ZnwmSt11align_val_t", "_ZdlPvSt11align_val_t"};
    check_preload_names(cxx_names, (int)(sizeof cxx_names / sizeof cxx_names[0]));
    test_plain();
    test_aligned();
    test_nothrow_and_bad_alloc();
    test_containers();
    return test_exit("cxx");
}
