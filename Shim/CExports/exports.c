// The libc and C++ names SwiftHeap exports. Each is a tail call into the Swift
// implementation (`swiftheap_*`); with -O2 and no frame of its own
// (-momit-leaf-frame-pointer, Package.swift) each compiles to a single jump. The malloc
// family (Sources/SwiftHeap/MallocAPI.swift) are Swift functions under these names
// (@_silgen_name), declared here with Swift's calling convention (swiftcall), so that
// the jump lands in the Swift code itself and not in a C thunk that jumps again; the
// rest (@_cdecl) are cold. This file is linked into libswiftheap.so only, never into
// the test process (whose own runtime would then allocate through us).
#define _GNU_SOURCE
#include <stddef.h>
#include <stdint.h>
#include <dlfcn.h>
#include <stdio.h>

#define SWIFTCC __attribute__((swiftcall))
void *swiftheap_malloc(size_t size) SWIFTCC;
void swiftheap_free(void *p) SWIFTCC;
void *swiftheap_calloc(size_t count, size_t size) SWIFTCC;
void *swiftheap_realloc(void *p, size_t size) SWIFTCC;
void *swiftheap_reallocarray(void *p, size_t count, size_t size) SWIFTCC;
int swiftheap_posix_memalign(void **out, size_t alignment, size_t size) SWIFTCC;
void *swiftheap_aligned_alloc(size_t alignment, size_t size) SWIFTCC;
void *swiftheap_memalign(size_t alignment, size_t size) SWIFTCC;
void *swiftheap_valloc(size_t size) SWIFTCC;
void *swiftheap_pvalloc(size_t size) SWIFTCC;
size_t swiftheap_malloc_usable_size(void *p) SWIFTCC;
int swiftheap_malloc_trim(size_t pad) SWIFTCC;
void *swiftheap_new_aligned(size_t size, size_t alignment) SWIFTCC;
void swiftheap_library_init(void) SWIFTCC;
void swiftheap_malloc_stats(void);
void swiftheap_mallinfo(size_t fields[10]);
int swiftheap_profile_write(const char *path);
int swiftheap_malloc_info(int options, FILE *stream);
int swiftheap_mallopt(int parameter, int value);
int sh_register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso_handle);

#define EXPORT __attribute__((visibility("default")))

EXPORT void *malloc(size_t size) { return swiftheap_malloc(size); }
EXPORT void free(void *p) { swiftheap_free(p); }
EXPORT void *calloc(size_t count, size_t size) { return swiftheap_calloc(count, size); }
EXPORT void *realloc(void *p, size_t size) { return swiftheap_realloc(p, size); }
EXPORT void *reallocarray(void *p, size_t count, size_t size) { return swiftheap_reallocarray(p, count, size); }
EXPORT int posix_memalign(void **out, size_t alignment, size_t size) { return swiftheap_posix_memalign(out, alignment, size); }
EXPORT void *aligned_alloc(size_t alignment, size_t size) { return swiftheap_aligned_alloc(alignment, size); }
EXPORT void *memalign(size_t alignment, size_t size) { return swiftheap_memalign(alignment, size); }
EXPORT void *valloc(size_t size) { return swiftheap_valloc(size); }
EXPORT void *pvalloc(size_t size) { return swiftheap_pvalloc(size); }
EXPORT size_t malloc_usable_size(void *p) { return swiftheap_malloc_usable_size(p); }
EXPORT int malloc_trim(size_t pad) { return swiftheap_malloc_trim(pad); }

EXPORT void malloc_stats(void) { swiftheap_malloc_stats(); }
EXPORT int malloc_info(int options, FILE *stream) { return swiftheap_malloc_info(options, stream); }
EXPORT int mallopt(int parameter, int value) { return swiftheap_mallopt(parameter, value); }

// glibc's struct mallinfo2 and struct mallinfo, declared here (not from <malloc.h>,
// which would also declare the functions we define with our own prototypes).
struct mallinfo2 { size_t arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost; };
struct mallinfo { int arena, ordblks, smblks, hblks, hblkhd, usmblks, fsmblks, uordblks, fordblks, keepcost; };

EXPORT struct mallinfo2 mallinfo2(void) {
    size_t f[10];
    swiftheap_mallinfo(f);
    struct mallinfo2 m = { f[0], f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9] };
    return m;
}
// The old interface's int fields wrap like glibc's do.
EXPORT struct mallinfo mallinfo(void) {
    size_t f[10];
    swiftheap_mallinfo(f);
    struct mallinfo m = { (int)f[0], (int)f[1], (int)f[2], (int)f[3], (int)f[4], (int)f[5], (int)f[6], (int)f[7], (int)f[8], (int)f[9] };
    return m;
}

// The heap profiler's dump (Sources/SwiftHeap/ProfileDump.swift): writes the heap
// profile to path, or to the next SWIFTHEAP_PROFILE.N if path is NULL; 0, or -1 with
// errno (EOPNOTSUPP when profiling is off).
EXPORT int swiftheap_profile_dump(const char *path) { return swiftheap_profile_write(path); }

// What glibc's manual ("Replacing malloc") asks of a general-purpose replacement.
EXPORT void cfree(void *p) { swiftheap_free(p); }
EXPORT void free_sized(void *p, size_t size) { (void)size; swiftheap_free(p); }
EXPORT void free_aligned_sized(void *p, size_t alignment, size_t size) { (void)alignment; (void)size; swiftheap_free(p); }

// glibc's internal aliases, which some programs and libraries call directly.
EXPORT void *__libc_malloc(size_t size) { return swiftheap_malloc(size); }
EXPORT void __libc_free(void *p) { swiftheap_free(p); }
EXPORT void *__libc_calloc(size_t count, size_t size) { return swiftheap_calloc(count, size); }
EXPORT void *__libc_realloc(void *p, size_t size) { return swiftheap_realloc(p, size); }
EXPORT void *__libc_memalign(size_t alignment, size_t size) { return swiftheap_memalign(alignment, size); }
EXPORT void *__libc_valloc(size_t size) { return swiftheap_valloc(size); }
EXPORT void *__libc_pvalloc(size_t size) { return swiftheap_pvalloc(size); }
EXPORT int __posix_memalign(void **out, size_t alignment, size_t size) { return swiftheap_posix_memalign(out, alignment, size); }

// ---- fork handlers -------------------------------------------------------------------
// Every pthread_atfork registration comes here first (pthread_atfork is a static stub in
// each caller, from libc_nonshared.a, that calls __register_atfork with the caller's
// __dso_handle, so that its handlers go away if it is unloaded), so that the allocator's
// handlers are registered before any other (swiftheap_shim.h: sh_register_atfork;
// Fork.swift). A library's constructor runs before ours and may register its handlers
// there: relocation, which binds its call to us, comes first. (The pthread_atfork that
// libc exports under GLIBC_2.2.5 is for programs linked before glibc 2.3.2; exporting
// one here would also bind programs and libraries linked with -lswiftheap to it, with no
// handle to unregister their handlers by.)
EXPORT int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso_handle) {
    return sh_register_atfork(prepare, parent, child, dso_handle);
}

// ---- C++ operators, by their mangled names ----------------------------------------
// Allocation failure in a throwing operator new must run the new-handler and throw
// std::bad_alloc, which only the C++ runtime can do: on that (rare) path we call the
// next definition of the operator (libstdc++'s), which retries through our malloc and
// then does exactly what the standard asks.
typedef void *(*new_fn)(size_t);
typedef void *(*new_aligned_fn)(size_t, size_t);

static __attribute__((noinline)) void *cxx_new_failed(const char *name, size_t size) {
    new_fn next = (new_fn)dlsym(RTLD_NEXT, name);
    if (next) return next(size);
    return NULL;
}
static __attribute__((noinline)) void *cxx_new_aligned_failed(const char *name, size_t size, size_t alignment) {
    new_aligned_fn next = (new_aligned_fn)dlsym(RTLD_NEXT, name);
    if (next) return next(size, alignment);
    return NULL;
}

EXPORT void *_Znwm(size_t size) {
    void *p = swiftheap_malloc(size);
    return p ? p : cxx_new_failed("_Znwm", size);
}
EXPORT void *_Znam(size_t size) {
    void *p = swiftheap_malloc(size);
    return p ? p : cxx_new_failed("_Znam", size);
}
EXPORT void *_ZnwmRKSt9nothrow_t(size_t size, const void *tag) { (void)tag; return swiftheap_malloc(size); }
EXPORT void *_ZnamRKSt9nothrow_t(size_t size, const void *tag) { (void)tag; return swiftheap_malloc(size); }
EXPORT void *_ZnwmSt11align_val_t(size_t size, size_t alignment) {
    void *p = swiftheap_new_aligned(size, alignment);
    return p ? p : cxx_new_aligned_failed("_ZnwmSt11align_val_t", size, alignment);
}
EXPORT void *_ZnamSt11align_val_t(size_t size, size_t alignment) {
    void *p = swiftheap_new_aligned(size, alignment);
    return p ? p : cxx_new_aligned_failed("_ZnamSt11align_val_t", size, alignment);
}
EXPORT void *_ZnwmSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, const void *tag) { (void)tag; return swiftheap_new_aligned(size, alignment); }
EXPORT void *_ZnamSt11align_val_tRKSt9nothrow_t(size_t size, size_t alignment, const void *tag) { (void)tag; return swiftheap_new_aligned(size, alignment); }

EXPORT void _ZdlPv(void *p) { swiftheap_free(p); }
EXPORT void _ZdaPv(void *p) { swiftheap_free(p); }
EXPORT void _ZdlPvm(void *p, size_t size) { (void)size; swiftheap_free(p); }
EXPORT void _ZdaPvm(void *p, size_t size) { (void)size; swiftheap_free(p); }
EXPORT void _ZdlPvRKSt9nothrow_t(void *p, const void *tag) { (void)tag; swiftheap_free(p); }
EXPORT void _ZdaPvRKSt9nothrow_t(void *p, const void *tag) { (void)tag; swiftheap_free(p); }
EXPORT void _ZdlPvSt11align_val_t(void *p, size_t alignment) { (void)alignment; swiftheap_free(p); }
EXPORT void _ZdaPvSt11align_val_t(void *p, size_t alignment) { (void)alignment; swiftheap_free(p); }
EXPORT void _ZdlPvmSt11align_val_t(void *p, size_t size, size_t alignment) { (void)size; (void)alignment; swiftheap_free(p); }
EXPORT void _ZdaPvmSt11align_val_t(void *p, size_t size, size_t alignment) { (void)size; (void)alignment; swiftheap_free(p); }
EXPORT void _ZdlPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, const void *tag) { (void)alignment; (void)tag; swiftheap_free(p); }
EXPORT void _ZdaPvSt11align_val_tRKSt9nothrow_t(void *p, size_t alignment, const void *tag) { (void)alignment; (void)tag; swiftheap_free(p); }

// Runs when the loader has relocated the library: creates the thread-exit key and the
// fork handlers. The allocator itself initialises lazily on the first call, which may
// come earlier than this.
__attribute__((constructor)) static void swiftheap_constructor(void) { swiftheap_library_init(); }
