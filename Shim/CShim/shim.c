// The storage behind swiftheap_shim.h: the thread-local slot, the static areas of the
// heap and of the profiler, malloc's fast-path size limit, fork's lock owner, the
// registration of the fork handlers, the profiler's unwinding trampoline, the version
// string, mremap.
#define _GNU_SOURCE  // mremap's MREMAP_MAYMOVE
#include "swiftheap_shim.h"
#include <sched.h>

__attribute__((aligned(64), visibility("hidden"))) const unsigned char swiftheap_no_cache_yet[SWIFTHEAP_NO_CACHE_YET_BYTES];

__thread void *swiftheap_tls_slot __attribute__((tls_model("initial-exec"), visibility("hidden"))) =
    (void *)swiftheap_no_cache_yet;

__attribute__((aligned(64), visibility("hidden"))) unsigned char swiftheap_static_area[SWIFTHEAP_STATIC_AREA_BYTES];

__attribute__((aligned(64), visibility("hidden"))) uintptr_t swiftheap_small_limit = SWIFTHEAP_MAX_SMALL_SIZE;

__attribute__((visibility("hidden"))) uintptr_t swiftheap_fork_owner;

__attribute__((aligned(64), visibility("hidden"))) uint16_t swiftheap_bin_offsets[SWIFTHEAP_MAX_SMALL_SIZE / 16 + 1];

__attribute__((aligned(4096), visibility("hidden"))) void *swiftheap_span_slots[SWIFTHEAP_SPAN_SLOTS];

__attribute__((aligned(64), visibility("hidden"))) unsigned char swiftheap_profile_area[SWIFTHEAP_PROFILE_AREA_BYTES];

// sh_unwind_from(sp, ra, fp, backtrace, trace, argument): calls backtrace(trace,
// argument) with this frame's unwind table saying that its caller's stack pointer is
// sp (the canonical frame address), its return address ra and its saved frame pointer
// fp: the unwinder then continues in the frame (ra, sp, fp), as if this function had
// been called from there. Stack at the call: [rsp] = sp, [rsp+8] = ra, [rsp+16] = fp.
__asm__(
    ".text\n"
    ".globl sh_unwind_from\n"
    ".hidden sh_unwind_from\n"
    ".type sh_unwind_from, @function\n"
    "sh_unwind_from:\n"
    "  .cfi_startproc\n"
    "  subq $40, %rsp\n"                     /* 16-byte aligned at the call */
    "  .cfi_adjust_cfa_offset 40\n"
    "  movq %rdi, 0(%rsp)\n"
    "  movq %rsi, 8(%rsp)\n"
    "  movq %rdx, 16(%rsp)\n"
    "  movq %rcx, %rax\n"
    "  movq %r8, %rdi\n"
    "  movq %r9, %rsi\n"
    "  .cfi_remember_state\n"
    "  .cfi_escape 0x0f, 3, 0x77, 0x00, 0x06\n"   /* DW_CFA_def_cfa_expression: *(rsp + 0) */
    "  .cfi_escape 0x10, 0x10, 2, 0x77, 0x08\n"   /* DW_CFA_expression: rip saved at rsp + 8 */
    "  .cfi_escape 0x10, 0x06, 2, 0x77, 0x10\n"   /* DW_CFA_expression: rbp saved at rsp + 16 */
    "  call *%rax\n"
    "  .cfi_restore_state\n"
    "  addq $40, %rsp\n"
    "  .cfi_adjust_cfa_offset -40\n"
    "  ret\n"
    "  .cfi_endproc\n"
    ".size sh_unwind_from, .-sh_unwind_from\n");
// Package.swift defines SWIFTHEAP_VERSION for this target.
__attribute__((visibility("hidden"))) const char *sh_version(void) { return SWIFTHEAP_VERSION; }

void *sh_mremap(void *old, size_t oldSize, size_t newSize) {
    void *p = mremap(old, oldSize, newSize, MREMAP_MAYMOVE);
    return p == MAP_FAILED ? NULL : p;
}

// ---- fork handlers' registration (swiftheap_shim.h; Fork.swift) --------------------------
typedef int (*register_atfork_fn)(void (*)(void), void (*)(void), void (*)(void), void *);
void swiftheap_fork_prepare(void);
void swiftheap_fork_parent(void);
void swiftheap_fork_child(void);
// This object's handle, as glibc's pthread_atfork passes its caller's (handlers registered
// with it are dropped when the object is unloaded; this one never is: -z nodelete).
extern void *__dso_handle __attribute__((weak, visibility("hidden")));

static pthread_once_t fork_handlers_once = PTHREAD_ONCE_INIT;
static register_atfork_fn libc_register_atfork;

// Runs once, under pthread_once: callers wait until it has run. dlsym may allocate (its
// error string), which needs no fork handler.
static void register_fork_handlers(void) {
    register_atfork_fn next = (register_atfork_fn)dlsym(RTLD_NEXT, "__register_atfork");
    if (next) next(swiftheap_fork_prepare, swiftheap_fork_parent, swiftheap_fork_child, &__dso_handle ? __dso_handle : NULL);
    __atomic_store_n(&libc_register_atfork, next, __ATOMIC_RELEASE);
}

void sh_install_fork_handlers(void) { pthread_once(&fork_handlers_once, register_fork_handlers); }

int sh_register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso_handle) {
    sh_install_fork_handlers();
    register_atfork_fn next = __atomic_load_n(&libc_register_atfork, __ATOMIC_ACQUIRE);
    return next ? next(prepare, parent, child, dso_handle) : ENOMEM;
}

int sh_current_cpu(void) { return sched_getcpu(); }
