// fork() safety. The prepare handler takes every allocator lock, in the lock order,
// so that no lock is held by a thread that will not exist in the child; the parent
// releases them, the child resets them (their holder is gone). The heap profiler's
// lock comes first: it is taken holding no other allocator lock, and the metadata
// lock is taken under it. The child keeps the
// heap as it was; the caches of threads that do not exist in the child are simply
// never used again.

import CShim

private func forEachLock(reverse: Bool, _ body: (UnsafeMutablePointer<Mutex>) -> Void) {
    let root = heap
    let classCount = root.pointee.classes.count
    let locks: (UnsafeMutablePointer<Mutex>, UnsafeMutablePointer<Mutex>, UnsafeMutablePointer<Mutex>) = (
        withUnsafeMutablePointer(to: &root.pointee.initLock) { $0 },
        registryLock,
        heapLock)
    let metadataLock = UnsafeMutableRawPointer(metadataState).assumingMemoryBound(to: Mutex.self)
    if !reverse {
        body(profileLock)
        body(locks.0)
        body(locks.1)
        for cls in 0..<classCount { body((root.pointee.centrals + cls).lockPointer) }
        body(locks.2)
        body(metadataLock)
    } else {
        body(metadataLock)
        body(locks.2)
        var cls = classCount
        while cls > 0 {
            cls &-= 1
            body((root.pointee.centrals + cls).lockPointer)
        }
        body(locks.1)
        body(locks.0)
        body(profileLock)
    }
}

private func forkPrepare() {
    if !heapIsReady() { return }
    forEachLock(reverse: false) { $0.lock() }
}

private func forkParent() {
    if !heapIsReady() { return }
    forEachLock(reverse: true) { $0.unlock() }
}

private func forkChild() {
    if !heapIsReady() { return }
    forEachLock(reverse: true) { $0.reinitialize() }
    resetScavengerAfterFork()
}

/// Registers the handlers (from the library constructor).
func installForkHandlers() {
    _ = pthread_atfork(forkPrepare, forkParent, forkChild)
}
