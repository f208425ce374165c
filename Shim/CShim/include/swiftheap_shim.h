// The C side of SwiftHeap's platform layer: system headers for Swift (Embedded Swift
// has no Glibc module), the allocator's thread-local slot, atomics on plain memory,
// and the futex system call. Everything here is a static inline wrapper so that it
// compiles into the Swift callers; the allocator's logic stays in Swift.
#ifndef SWIFTHEAP_SHIM_H
#define SWIFTHEAP_SHIM_H

// No _GNU_SOURCE here: this header is a Clang module that the tests import beside
// Glibc and Foundation, and system types (fd_set) must read the same in all of them.
// What needs GNU names (mremap) lives out of line in shim.c.

#include <stdint.h>
#include <stddef.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <linux/futex.h>
#include <unistd.h>
#include <pthread.h>
#include <time.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <fcntl.h>
#include <dlfcn.h>
#include <stdio.h>

// ---- thread-local slot ---------------------------------------------------------
// One pointer, initial-exec (glibc's manual asks this of a malloc replacement, and a
// tiny slot avoids exhausting static TLS). It holds this thread's cache, and until the
// thread has one, swiftheap_no_cache_yet: read-only zeros, where every bin of a cache
// record reads as empty and full at once (a CacheBin with top and both marks 0), so
// that malloc's and free's fast paths go to their slow paths from the bin test they
// make anyway, with no test of the slot of their own. The slot is never null.
#define SWIFTHEAP_NO_CACHE_YET_BYTES 4096
extern const unsigned char swiftheap_no_cache_yet[SWIFTHEAP_NO_CACHE_YET_BYTES] __attribute__((visibility("hidden")));
extern __thread void *swiftheap_tls_slot __attribute__((tls_model("initial-exec"), visibility("hidden")));

// The slot as it is, for the fast paths: this thread's cache or swiftheap_no_cache_yet,
// whose bins only the fast paths' bin tests may read.
static inline void *_Nonnull sh_tls_slot(void) { return swiftheap_tls_slot; }
// This thread's cache record, or NULL if it has none yet.
static inline void *sh_tls_get(void) {
    void *slot = swiftheap_tls_slot;
    return slot == (const void *)swiftheap_no_cache_yet ? NULL : slot;
}
static inline void sh_tls_set(void *_Nonnull p) { swiftheap_tls_slot = p; }
static inline size_t sh_no_cache_yet_bytes(void) { return SWIFTHEAP_NO_CACHE_YET_BYTES; }

// ---- errno ----------------------------------------------------------------------
static inline int sh_errno_get(void) { return errno; }
static inline void sh_errno_set(int e) { errno = e; }

// ---- atomics on plain memory ------------------------------------------------------
static inline uint32_t sh_load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline uint32_t sh_load32_relaxed(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sh_store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void sh_store32_relaxed(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }
static inline uint32_t sh_xchg32(uint32_t *p, uint32_t v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
static inline int sh_cas32(uint32_t *p, uint32_t expected, uint32_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline uint64_t sh_load64_relaxed(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sh_store64(uint64_t *p, uint64_t v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline uint64_t sh_add64(uint64_t *p, uint64_t v) { return __atomic_add_fetch(p, v, __ATOMIC_ACQ_REL); }
static inline int sh_cas64(uint64_t *p, uint64_t expected, uint64_t desired) {
    return __atomic_compare_exchange_n(p, &expected, desired, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE);
}

static inline void *sh_load_ptr(void *const *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }
static inline void sh_store_ptr(void **p, void *v) { __atomic_store_n(p, v, __ATOMIC_RELEASE); }
static inline void *sh_xchg_ptr(void **p, void *v) { return __atomic_exchange_n(p, v, __ATOMIC_ACQ_REL); }
static inline void *sh_load_ptr_relaxed(void *const *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void sh_cpu_relax(void) { __builtin_ia32_pause(); }

// ---- futex --------------------------------------------------------------------------
static inline void sh_futex_wait(uint32_t *addr, uint32_t expected) {
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
}
// Waits at most timeoutNanos; returns without telling why it woke.
static inline void sh_futex_wait_timeout(uint32_t *addr, uint32_t expected, int64_t timeoutNanos) {
    struct timespec ts = { (time_t)(timeoutNanos / 1000000000), (long)(timeoutNanos % 1000000000) };
    syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, expected, &ts, NULL, 0);
}
static inline void sh_futex_wake(uint32_t *addr, int count) {
    syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
}

// ---- memory and time ----------------------------------------------------------------
// mmap's MAP_FAILED is a macro Swift cannot import.
static inline void *sh_mmap(void *addr, size_t len, int prot, int flags) {
    void *p = mmap(addr, len, prot, flags | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}
// mremap is variadic, which Swift cannot call, and a GNU name (shim.c).
void *sh_mremap(void *old, size_t oldSize, size_t newSize) __attribute__((visibility("hidden")));
// The CPU the calling thread runs on (sched_getcpu: the vDSO or rseq, no system call), or -1.
int sh_current_cpu(void) __attribute__((visibility("hidden")));
static inline int64_t sh_monotonic_nanos(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static inline int64_t sh_thread_cpu_nanos(void) {
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}
static inline long sh_gettid(void) { return syscall(SYS_gettid); }
static inline int sh_open_readonly(const char *path) { return open(path, O_RDONLY | O_CLOEXEC); }
static inline long sh_getdents64(int fd, void *buffer, size_t bytes) { return syscall(SYS_getdents64, fd, buffer, bytes); }
// open(2) is variadic, which Swift cannot call: a file for writing, created or truncated.
static inline int sh_open_create(const char *path) { return open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); }
// For the stats file (SWIFTHEAP_STATS_FILE): reports are appended, one write each.
static inline int sh_open_append(const char *path) { return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644); }
// A close-on-exec copy of fd, numbered at least `lowest` (fcntl is variadic: Swift cannot call it).
static inline int sh_dup_cloexec(int fd, int lowest) { return fcntl(fd, F_DUPFD_CLOEXEC, lowest); }
// malloc_info's FILE *, passed through as an opaque pointer. Called with no allocator lock held
// (stdio may call malloc).
static inline size_t sh_fwrite(const void *bytes, size_t count, void *stream) { return fwrite(bytes, 1, count, (FILE *)stream); }

// ---- version ------------------------------------------------------------------------
// SwiftHeap's version ("MAJOR.MINOR.PATCH", from Package.swift), defined in shim.c.
__attribute__((visibility("hidden"))) const char *sh_version(void);



// ---- fork and threads -----------------------------------------------------------------
// stdio's list lock (glibc exports these; recursive, owned by a thread). glibc's fork takes
// it after the atfork prepare handlers, so a prepare handler that takes allocator locks
// first inverts the order against fflush(NULL) and getline (Fork.swift).
extern void _IO_list_lock(void);
extern void _IO_list_unlock(void);
extern void _IO_list_resetlock(void);
// glibc 2.32+: true while the process has never created a thread. Weak, so that an older
// libc simply reports "unknown".
extern char __libc_single_threaded __attribute__((weak));
// 1: the process is single-threaded (glibc says so); 0: it has or had other threads, or
// the libc cannot tell.
static inline int sh_libc_single_threaded(void) {
    return &__libc_single_threaded != 0 && __atomic_load_n(&__libc_single_threaded, __ATOMIC_RELAXED) != 0;
}

// While the process is single-threaded (sh_libc_single_threaded), no other thread exists
// to race the caller on a word: a lock is taken and released, and a slot emptied, with a
// plain load and store instead of an atomic read-modify-write (which waits for the
// caller's pending stores; glibc's malloc skips its locks the same way). Only the caller
// can end that state, by creating a thread, which happens after its earlier stores. The
// signal fences keep the compiler from moving the critical section's accesses across the
// lock word's store, so that a signal handler that allocates while the caller holds the
// lock finds it held, as it would an atomic one.
static inline int sh_lock_unshared(uint32_t *p) {
    if (__atomic_load_n(p, __ATOMIC_RELAXED) != 0) return 0;
    __atomic_store_n(p, 1, __ATOMIC_RELAXED);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return 1;
}
// Releases a lock taken with no waiter (state 1); 0 if it has one (state 2: a waiter that
// another thread's existence, or a signal handler, left), which the atomic release wakes.
static inline int sh_unlock_unshared(uint32_t *p) {
    if (__atomic_load_n(p, __ATOMIC_RELAXED) != 1) return 0;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    __atomic_store_n(p, 0, __ATOMIC_RELAXED);
    return 1;
}
// Empties a pointer slot and returns what it held: sh_xchg_ptr for a single-threaded process.
static inline void *sh_take_ptr_unshared(void **p) {
    void *v = __atomic_load_n(p, __ATOMIC_RELAXED);
    __atomic_store_n(p, NULL, __ATOMIC_RELAXED);
    return v;
}

// Fork handlers are registered with libc's __register_atfork (the definition after this
// library's: exports.c exports one that comes here), allocator's first: then its prepare
// handler runs after every other one, and its parent and child handlers before every
// other one, as glibc's own malloc locking does (Fork.swift). sh_install_fork_handlers
// registers the allocator's handlers (Fork.swift: swiftheap_fork_prepare, _parent,
// _child) once, whoever calls first; sh_register_atfork does so, then registers the
// program's handlers after them (0, or an errno value: ENOMEM if libc has none).
void sh_install_fork_handlers(void) __attribute__((visibility("hidden")));
int sh_register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso_handle)
    __attribute__((visibility("hidden")));

// ---- static state -------------------------------------------------------------------
// Zero-initialised storage that exists before any code runs, so that the very first
// malloc (which may come from the loader, before any constructor) can bootstrap the
// allocator without calling anything that allocates. Swift binds its root state here.
#define SWIFTHEAP_STATIC_AREA_BYTES 4096
extern unsigned char swiftheap_static_area[SWIFTHEAP_STATIC_AREA_BYTES] __attribute__((visibility("hidden")));
static inline void *sh_static_area(void) { return swiftheap_static_area; }
static inline size_t sh_static_area_bytes(void) { return SWIFTHEAP_STATIC_AREA_BYTES; }

// ---- the heap profiler (Sources/SwiftHeap/Profile*.swift) ------------------------------
// The largest request malloc's fast path serves: maxSmallSize (SizeClasses.swift) until
// heap profiling is turned on, then 0, so that every malloc takes the slow path, which
// counts bytes toward the next sample. Statically initialised, so the first malloc of
// the process reads the right value; written once, from the library constructor.
#define SWIFTHEAP_MAX_SMALL_SIZE 32768
extern uintptr_t swiftheap_small_limit __attribute__((visibility("hidden")));
static inline uintptr_t sh_small_limit(void) { return swiftheap_small_limit; }

// The process's size-class lookup (SizeClassTable.binOffsets: the bin offset of sizes
// 0...SWIFTHEAP_MAX_SMALL_SIZE by 16-byte steps), filled when the heap is made. Zeros
// until then: malloc's fast path, called before, finds bin 0 of swiftheap_no_cache_yet,
// which is empty, and takes the slow path, which makes the heap.
extern uint16_t swiftheap_bin_offsets[SWIFTHEAP_MAX_SMALL_SIZE / 16 + 1] __attribute__((visibility("hidden")));
static inline uint16_t *_Nonnull sh_bin_offsets(void) { return swiftheap_bin_offsets; }
static inline size_t sh_bin_offset_entries(void) { return SWIFTHEAP_MAX_SMALL_SIZE / 16 + 1; }

// The process's page→span map's slot table (SpanMap.slots: one pointer per GiB of the
// 2^48-byte address space, 2 MiB of zeros touched only where the heap maps memory).
// Static, so that free's fast path, called before the heap exists, finds every slot
// empty (no span: the slow path, which makes the heap) without a test of its own.
#define SWIFTHEAP_SPAN_SLOTS (1u << 18)
extern void *swiftheap_span_slots[SWIFTHEAP_SPAN_SLOTS] __attribute__((visibility("hidden")));
static inline void *_Nullable *_Nonnull sh_span_slots(void) { return swiftheap_span_slots; }
static inline size_t sh_span_slot_count(void) { return SWIFTHEAP_SPAN_SLOTS; }
static inline void sh_set_small_limit(uintptr_t limit) { __atomic_store_n(&swiftheap_small_limit, limit, __ATOMIC_RELEASE); }

// The thread inside fork's window (from the allocator's prepare handler, which took every
// allocator lock, to its parent or child handler), or 0: its locking is nested there
// (Platform.swift: Mutex; Fork.swift). Only that thread acts on its own value.
extern uintptr_t swiftheap_fork_owner __attribute__((visibility("hidden")));
static inline uintptr_t sh_fork_owner(void) { return __atomic_load_n(&swiftheap_fork_owner, __ATOMIC_RELAXED); }
static inline void sh_set_fork_owner(uintptr_t thread) { __atomic_store_n(&swiftheap_fork_owner, thread, __ATOMIC_RELAXED); }

// The profiler's root state: zeroed static storage, like the static area above.
#define SWIFTHEAP_PROFILE_AREA_BYTES 1024
extern unsigned char swiftheap_profile_area[SWIFTHEAP_PROFILE_AREA_BYTES] __attribute__((visibility("hidden")));
static inline void *sh_profile_area(void) { return swiftheap_profile_area; }
static inline size_t sh_profile_area_bytes(void) { return SWIFTHEAP_PROFILE_AREA_BYTES; }

// libgcc_s's unwinder, found with dlsym when profiling is on (the library must not
// depend on libgcc_s). _Unwind_Reason_Code is an int-sized enum; the context is opaque.
typedef int (*sh_unwind_trace_fn)(void *context, void *argument);
typedef int (*sh_unwind_backtrace_fn)(sh_unwind_trace_fn trace, void *argument);
typedef uintptr_t (*sh_unwind_get_ip_fn)(void *context);
typedef const void *(*sh_unwind_find_fde_fn)(void *pc, void *bases);
// Embedded Swift emits no DWARF unwind tables (.eh_frame), only frame pointers, so the
// unwinder cannot step through Swift frames. The profiler walks its own frames by
// their frame pointers (this function's frame, inlined into the Swift caller, starts
// the walk), then has the unwinder continue from the first frame that has tables:
// sh_unwind_from (shim.c, a few instructions of assembly) calls backtrace(trace,
// argument) from a frame whose unwind table names (ra, sp, fp) as its caller's
// return address, stack pointer and frame pointer.
static inline __attribute__((always_inline)) void *sh_frame_address(void) { return __builtin_frame_address(0); }
int sh_unwind_from(uintptr_t sp, uintptr_t ra, uintptr_t fp, sh_unwind_backtrace_fn backtrace,
                   sh_unwind_trace_fn trace, void *argument) __attribute__((visibility("hidden")));
// The first and last bytes of this object's image (the linker defines both, hidden,
// in each object): the unwinder skips frames inside it, the allocator's own.
extern const char __ehdr_start[] __attribute__((visibility("hidden")));
extern const char _end[] __attribute__((visibility("hidden")));
static inline uintptr_t sh_own_image_start(void) { return (uintptr_t)__ehdr_start; }
static inline uintptr_t sh_own_image_end(void) { return (uintptr_t)_end; }
#endif
