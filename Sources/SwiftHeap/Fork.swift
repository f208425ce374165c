// fork() safety.
//
// A child of fork has one thread: the one that forked. Any allocator lock another thread
// held at the fork would be held for ever in the child, so the prepare handler takes every
// allocator lock, in the lock order, before the fork; the parent releases them after it,
// and the child reinitialises them (their holders do not exist there). The child keeps the
// heap as it was; the caches of threads that do not exist in the child are never used again,
// and the spans they drew from are handed to the unowned lists (Central.swift).
//
// Two traps, both found by tests (Tests/c/fork_signal.c, Tests/c/fork_stdio.c):
//   * glibc's fork runs the atfork prepare handlers, then takes stdio's list lock, then its
//     own malloc locks. Allocator locks taken before the list lock invert that order: the
//     forking thread holds them and waits for the list lock, fflush(NULL) holds the list
//     lock and waits for a FILE's lock, and a getline holding that FILE's lock waits in
//     realloc for an allocator lock. So the prepare handler takes the list lock first
//     (it is recursive: glibc's own fork takes it again), as glibc's malloc effectively
//     does; the parent handler releases it last and the child handler resets it.
//   * A single-threaded process may fork from a signal handler that interrupted this very
//     thread inside an allocator lock; taking that lock again would wait for ever. glibc's
//     fork takes no malloc lock in a single-threaded process, and neither do we: no other
//     thread can hold a lock, the interrupted code carries on as it would have in both
//     processes, and the child must not reinitialise a lock its own interrupted frame holds.
//     "Single-threaded" is glibc's __libc_single_threaded, which turns false for good at
//     the first pthread_create (the scavenger's included).
//
// A third, found by tests (Tests/c/fork_handlers.c, Tests/c/fork_handler_order.c):
// pthread_atfork runs prepare handlers last registered first, and parent and child
// handlers first registered first. glibc takes its malloc's locks after every prepare
// handler and releases them before any parent or child handler, so any handler may
// allocate, and may wait for another thread that allocates: take a lock of its library's
// that a thread holds while it calls malloc, or join a thread whose exit frees its
// cache. A library's constructor runs before ours (its dependencies first), so with
// plain pthread_atfork its handlers would be registered before ours and run inside our
// window: the first kind of handler deadlocked on a lock its own thread held, the second
// waited for ever on a thread waiting for our locks. So the library exports
// __register_atfork (Shim/CExports/exports.c), which every pthread_atfork calls, even
// from a constructor that runs before ours (the loader binds calls before it runs any
// constructor), and registers our handlers with libc's first (swiftheap_shim.h:
// sh_register_atfork): our prepare handler runs last and our parent and child handlers
// first, where glibc's malloc takes and releases its locks.
//
// A handler registered with libc by a path that does not reach ours (a library that
// looks up libc's __register_atfork itself) may still run inside the window. From our
// prepare handler to our parent or child handler the forking thread is the locks' owner
// (sh_fork_owner), and its own lock and unlock of them are nested, no-ops
// (Platform.swift: Mutex): such a handler may allocate; it must not wait for a thread
// that does. Every other thread waits on the locks, as before.
//
// The lock order is LockRanks.swift's list; forEachLock walks it.

import CShim

/// Whether the last prepare handler took the locks (read by the parent and child handlers
/// of the same fork, in the forking thread). In the heap root: a Swift global would be
/// accessed through the runtime's exclusivity checks.
@inline(__always) private var forkTookLocks: UnsafeMutablePointer<Bool> { heap.pointer(to: \.forkTookLocks)! }

/// Calls body with every allocator lock in the lock order (LockRanks.swift) that fork
/// takes, outermost first, or in reverse.
private func forEachLock(reverse: Bool, _ body: (UnsafeMutablePointer<Mutex>) -> Void) {
    let root = heap
    let classCount = root.pointee.classes.count
    let initLock = root.pointer(to: \.initLock)!
    if !reverse {
        body(initLock)
        body(processCaches.lockPointer)
        body(profileLock)
        for cls in 0..<classCount { body((root.pointee.centrals + cls).lockPointer) }
        body(processPageHeap.lockPointer)
        body(metadataLockPointer)
    } else {
        body(metadataLockPointer)
        body(processPageHeap.lockPointer)
        var cls = classCount
        while cls > 0 {
            cls &-= 1
            body((root.pointee.centrals + cls).lockPointer)
        }
        body(profileLock)
        body(processCaches.lockPointer)
        body(initLock)
    }
}

@_cdecl("swiftheap_fork_prepare")
public func forkPrepare() {
    forkTookLocks.pointee = heapIsReady() && sh_libc_single_threaded() == 0
    if !forkTookLocks.pointee { return }
    _IO_list_lock()
    forEachLock(reverse: false) { $0.lock() }
    sh_set_fork_owner(currentThreadID())
}

@_cdecl("swiftheap_fork_parent")
public func forkParent() {
    if !forkTookLocks.pointee { return }
    sh_set_fork_owner(0)
    forEachLock(reverse: true) { $0.unlock() }
    _IO_list_unlock()
}

@_cdecl("swiftheap_fork_child")
public func forkChild() {
    if forkTookLocks.pointee {
        sh_set_fork_owner(0)
        forEachLock(reverse: true) { $0.reinitialize(heldByCaller: true) }
        _IO_list_resetlock()
        processCaches.disownOtherCachesAfterFork()
    }
    if heapIsReady() { processScavenger.resetAfterFork() }
}

/// Registers the handlers (from the library constructor), unless a registration of the
/// program's did first (sh_install_fork_handlers: once).
func installForkHandlers() {
    sh_install_fork_handlers()
}
